"""ApiBudget: header readings, local counts, small orders and penalty, pause, advice, account view."""

from __future__ import annotations

import pytest

from bfsx.bitflyer import limits
from bfsx.bitflyer.budget import ApiBudget, BudgetSnapshot

T0 = 1_700_000_000.0
ORDER = "/v1/me/sendchildorder"
READ = "/v1/me/getchildorders"


def hdr(remaining: int, reset: float, order: int | None = None) -> dict[str, str]:
    h = limits.headers_for(limits.LimitReading(remaining, int(reset - T0), int(reset)))
    if order is not None:
        h |= limits.headers_for(limits.LimitReading(order, int(reset - T0), int(reset)), order=True)
    return h


def test_fresh_budget_has_full_limits() -> None:
    b = ApiBudget()
    assert b.private_left(T0) == limits.PRIVATE_LIMIT
    assert b.order_left(T0) == limits.ORDER_LIMIT
    assert b.small_orders(T0) == 0
    assert b.can_order(0.01, T0)
    assert b.advice(T0) == "trade"


def test_local_count_then_header_reading() -> None:
    b = ApiBudget()
    for _ in range(3):
        b.on_request(READ, now=T0)
    assert b.private_left(T0) == 497
    b.on_request("/v1/getboard", now=T0)  # public: the key's bucket does not move
    assert b.private_left(T0) == 497
    # The exchange says 480 are left (other bots used the key too): the reading wins.
    b.on_headers(hdr(480, T0 + 300), T0 + 1)
    assert b.private_left(T0 + 1) == 480
    b.on_request(READ, now=T0 + 2)
    assert b.private_left(T0 + 2) == 479


def test_in_flight_requests_stay_counted_after_an_older_reply() -> None:
    b = ApiBudget()
    s1 = b.on_request(READ, now=T0)
    s2 = b.on_request(READ, now=T0)
    s3 = b.on_request(READ, now=T0)
    # Reply of the first request: it cannot include the two sent after it.
    b.on_headers(hdr(499, T0 + 300), T0, request_seq=s1)
    assert b.private_left(T0) == 497
    b.on_headers(hdr(497, T0 + 300), T0, request_seq=s3)
    assert b.private_left(T0) == 497
    # The second reply arrives last: it is older than the reading we hold and is ignored.
    b.on_headers(hdr(498, T0 + 300), T0, request_seq=s2)
    assert b.private_left(T0) == 497


def test_order_bucket_from_headers_and_paths() -> None:
    b = ApiBudget()
    seq = b.on_request(ORDER, order_size=0.5, now=T0)
    assert b.order_left(T0) == limits.ORDER_LIMIT - 1
    b.on_headers(hdr(490, T0 + 300, order=250), T0, request_seq=seq)
    assert b.order_left(T0) == 250
    b.on_request("/v1/me/cancelchildorder", now=T0)  # cancels are not in the order bucket
    assert b.order_left(T0) == 250
    assert b.private_left(T0) == 489
    b.on_request("/v1/me/cancelallchildorders", now=T0)  # ...but cancel-all is
    assert b.order_left(T0) == 249


def test_window_expiry_restores_the_limit() -> None:
    b = ApiBudget()
    b.on_request(READ, now=T0)
    b.on_headers(hdr(10, T0 + 300), T0)
    assert b.private_left(T0 + 299) == 10
    assert b.private_left(T0 + 300) == limits.PRIVATE_LIMIT
    b.on_request(READ, now=T0 + 301)  # opens a local window
    assert b.private_left(T0 + 301) == limits.PRIVATE_LIMIT - 1
    assert b.snapshot(T0 + 301).private_measured is False


def test_reserve_refuses_orders_but_not_cancels() -> None:
    b = ApiBudget(reserve=20, order_reserve=10)
    b.on_headers(hdr(21, T0 + 300, order=100), T0)
    assert b.can_order(1.0, T0)
    b.on_request(READ, now=T0)
    assert b.private_left(T0) == 20
    assert not b.can_order(1.0, T0)
    assert b.order_refusal(1.0, T0) == "private calls: 20 left, 20 kept for cancels"  # the bucket that is short
    assert b.can_cancel()
    assert b.advice(T0) == "pause"
    b.on_headers(hdr(400, T0 + 300, order=10), T0)
    assert not b.can_order(1.0, T0)  # order bucket at its reserve
    assert b.order_refusal(1.0, T0) == "order calls: 10 left, 10 kept"
    assert b.advice(T0) == "pause"


def test_small_orders_sliding_minute_and_penalty_hour() -> None:
    b = ApiBudget(small_order_limit=5, small_order_penalty_limit=2, small_order_reserve=0,
                  penalty_seconds=3600)
    for i in range(5):
        assert b.can_order(0.01, T0 + i)
        b.on_request(ORDER, order_size=0.01, now=T0 + i)
    assert b.small_orders(T0 + 5) == 5
    assert not b.can_order(0.01, T0 + 5)  # a sixth small order would exceed 5/min
    assert b.order_refusal(0.01, T0 + 5) == "small orders: 5 in the last minute, limit 5"
    assert b.can_order(0.2, T0 + 5)  # large orders are not in that bucket
    b.on_request(ORDER, order_size=limits.SMALL_ORDER_SIZE + 0.1, now=T0 + 5)
    assert b.small_orders(T0 + 5) == 5
    # The oldest falls out of the sliding minute.
    assert b.small_orders(T0 + 60.5) == 4
    assert b.can_order(0.01, T0 + 60.5)
    # Breach anyway (a caller that ignored can_order): penalty limit for an hour.
    b.on_request(ORDER, order_size=0.1, now=T0 + 61)  # 0.1 itself counts as small
    b.on_request(ORDER, order_size=0.01, now=T0 + 61)
    assert b.penalty_until == 0.0  # 3 left in the minute + 2 = 5: at the limit, not over
    b.on_request(ORDER, order_size=0.01, now=T0 + 61)
    assert b.penalty_until == T0 + 61 + 3600
    assert b.snapshot(T0 + 61).small_order_limit == 2
    assert b.small_orders(T0 + 200) == 0
    assert b.advice(T0 + 200) == "slow"
    b.on_request(ORDER, order_size=0.01, now=T0 + 200)
    b.on_request(ORDER, order_size=0.01, now=T0 + 200)
    assert not b.can_order(0.01, T0 + 200)  # 2 in the last minute: the penalty limit is reached
    assert b.can_order(0.01, T0 + 61 + 3600)


def test_penalty_limit_allows_its_own_count() -> None:
    b = ApiBudget(small_order_limit=5, small_order_penalty_limit=2, small_order_reserve=0)
    b.penalty_until = T0 + 100
    assert b.can_order(0.01, T0)
    b.on_request(ORDER, order_size=0.01, now=T0)
    assert b.can_order(0.01, T0)
    b.on_request(ORDER, order_size=0.01, now=T0)
    assert not b.can_order(0.01, T0)
    assert b.can_order(1.0, T0)


def test_small_order_deque_is_bounded() -> None:
    b = ApiBudget(small_order_limit=10)
    for i in range(1000):
        b.on_request(ORDER, order_size=0.01, now=T0 + i * 0.001)
    assert len(b._small) <= 11


def test_over_limit_pauses_for_configured_seconds() -> None:
    b = ApiBudget(pause_seconds=30)
    b.on_over_limit(T0)
    assert b.paused(T0 + 29)
    assert not b.can_order(1.0, T0 + 29)
    assert b.advice(T0 + 29) == "pause"
    assert b.can_cancel()
    assert b.can_order(1.0, T0 + 30)
    assert b.advice(T0 + 30) == "trade"
    assert b.over_limit_count == 1


def test_advice_slow_threshold() -> None:
    b = ApiBudget(slow_below=0.25)
    b.on_headers(hdr(124, T0 + 300, order=200), T0)
    assert b.advice(T0) == "slow"
    b.on_headers(hdr(126, T0 + 300, order=200), T0)
    assert b.advice(T0) == "trade"
    b.on_headers(hdr(400, T0 + 300, order=70), T0)
    assert b.advice(T0) == "slow"


def test_snapshot_round_trips_as_a_dict() -> None:
    b = ApiBudget()
    b.on_request(ORDER, order_size=0.01, now=T0)
    snap = b.snapshot(T0)
    assert snap.private_remaining == 499 and snap.order_remaining == 299
    assert snap.small_orders_last_minute == 1 and snap.private_since == 1
    assert BudgetSnapshot.from_dict(snap.to_dict()) == snap
    with pytest.raises(KeyError):
        BudgetSnapshot.from_dict({"at": 1})


def _bot(remaining: int, reset: float, own_since: int, at: float) -> ApiBudget:
    b = ApiBudget()
    b.on_headers(hdr(remaining, reset, order=remaining // 2), at)
    for _ in range(own_since):
        b.on_request(ORDER, order_size=0.01, now=at)
    return b


def test_combine_charges_each_bot_with_the_others_spending() -> None:
    reset = T0 + 300
    # Three bots on one key. Bot A read 200 left at T0+10 and has sent 30 since; B read 180 at
    # T0+20 (A's earlier requests already in it) and sent 50; C read 170 at T0+30 and sent 5.
    a = _bot(200, reset, 30, T0 + 10).snapshot(T0 + 40)
    b = _bot(180, reset, 50, T0 + 20).snapshot(T0 + 40)
    c = _bot(170, reset, 5, T0 + 30).snapshot(T0 + 40)
    acc = ApiBudget.combine([a, b, c], T0 + 40)
    # Each estimate = own remaining (reading - own since) minus the others' since:
    # A: 170 - 55 = 115, B: 130 - 35 = 95, C: 165 - 80 = 85 -> min 85.
    assert acc.private_remaining == 85
    assert acc.private_since == 85
    assert acc.private_measured
    # Every bot alone believes it has >= 130 left; together at most 85 are.
    assert min(s.private_remaining for s in (a, b, c)) > acc.private_remaining
    # The true remaining if C's reading was exact: 170 - 5 - (A's and B's requests after T0+30) >=
    # 170 - 85; the estimate never exceeds it.
    assert acc.private_remaining <= 170 - 5
    assert acc.small_orders_last_minute == 85


def test_combine_drops_expired_windows_and_prefers_header_readings() -> None:
    old = _bot(10, T0 + 100, 0, T0).snapshot(T0 + 150)  # window over by T0+150
    fresh = _bot(400, T0 + 400, 2, T0 + 120).snapshot(T0 + 150)
    local_only = ApiBudget()
    local_only.on_request(READ, now=T0 + 140)
    lo = local_only.snapshot(T0 + 150)
    acc = ApiBudget.combine([old, fresh, lo], T0 + 150)
    assert acc.private_remaining == 398 - 1
    assert acc.private_reset == T0 + 400
    # Only local counts: the limit minus everything sent.
    acc2 = ApiBudget.combine([lo], T0 + 150)
    assert acc2.private_remaining == limits.PRIVATE_LIMIT - 1 and not acc2.private_measured
    assert ApiBudget.combine([], T0).private_remaining == limits.PRIVATE_LIMIT


def test_combine_pause_and_penalty_and_advice() -> None:
    a = ApiBudget()
    a.on_over_limit(T0)
    b = ApiBudget()
    b.penalty_until = T0 + 1000
    acc = ApiBudget.combine([a.snapshot(T0), b.snapshot(T0)], T0 + 1)
    assert acc.paused_until == a.paused_until
    assert acc.penalty_until == T0 + 1000
    assert acc.small_order_limit == limits.SMALL_ORDER_PENALTY_LIMIT
    assert acc.advice == "pause"


def test_apply_account_view_limits_the_bot() -> None:
    reset = T0 + 300
    mine = _bot(300, reset, 0, T0)
    other = _bot(60, reset, 30, T0 + 5).snapshot(T0 + 6)
    acc = ApiBudget.combine([mine.snapshot(T0 + 6), other], T0 + 6)
    assert acc.private_remaining == 30
    mine.apply_account(acc, T0 + 6)
    assert mine.private_left(T0 + 6) == 30
    mine.on_request(READ, now=T0 + 7)
    assert mine.private_left(T0 + 7) == 29  # own requests charged on top of the account view
    assert mine.snapshot(T0 + 7).private_remaining == 299  # the report stays the bot's own view
    mine.reserve = 29
    assert not mine.can_order(1.0, T0 + 7)
    # A view that is not refreshed expires; so does one whose window ended.
    assert mine.private_left(T0 + 7 + mine.account_ttl + 1) == 299
