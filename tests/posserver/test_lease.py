"""The lease arithmetic (bfsx.posserver.lease) and a bot's LeasedBudget: pure, deterministic."""

from __future__ import annotations

import itertools

import pytest

from bfsx.bitflyer.errors import ApiError
from bfsx.posserver.lease import LeasePool, PoolView, fallback_share, water_fill
from bfsx.posserver.lease_budget import LeasedBudget, LeaseExhausted

# ------------------------------------------------------------------------------ water_fill


def test_water_fill_even_split_and_caps() -> None:
    assert water_fill(10, {"a": None, "b": None}) == {"a": 5, "b": 5}
    # A modest bot's leftover goes to the others.
    assert water_fill(10, {"a": 2, "b": None, "c": None}) == {"a": 2, "b": 4, "c": 4}
    assert water_fill(10, {"a": 2, "b": 3}) == {"a": 2, "b": 3}
    # Fewer calls than bots: one each in a stable order, never more than there is.
    assert water_fill(2, {"c": None, "a": None, "b": None}) == {"a": 1, "b": 1, "c": 0}
    assert water_fill(0, {"a": None}) == {"a": 0}
    assert water_fill(-5, {"a": None}) == {"a": 0}


def test_water_fill_never_over_total() -> None:
    for total in range(0, 40):
        for wants in itertools.product([None, 0, 1, 3, 7, 50], repeat=3):
            w = dict(zip("abc", wants, strict=True))
            out = water_fill(total, w)
            assert sum(out.values()) <= total
            for b, n in out.items():
                assert n >= 0
                cap = w[b]
                if cap is not None:
                    assert n <= cap


# ------------------------------------------------------------------------------ LeasePool


def view(remaining: int, horizon_s: float = 5.0, reserve: int = 10) -> PoolView:
    return PoolView(remaining, horizon_s, reserve)


def test_reserve_is_never_leased() -> None:
    pool = LeasePool("small_orders", ttl_s=5.0)
    lease = pool.grant("a", None, 0, view(13, reserve=10), ["a"], 0.0)
    assert lease.calls == 3
    assert pool.grant("a", None, 0, view(10, reserve=10), ["a"], 0.1).calls == 0
    assert pool.grant("a", None, 0, view(4, reserve=10), ["a"], 0.2).calls == 0


def test_even_split_between_live_bots() -> None:
    pool = LeasePool("private", ttl_s=5.0)
    v = view(110, horizon_s=5.0)  # horizon within one term: the whole pool of 100 is paced out now
    assert pool.grant("a", None, 0, v, ["a", "b"], 0.0).calls == 50
    assert pool.grant("b", None, 0, v, ["a", "b"], 0.0).calls == 50
    # A third bot joins: nothing is left until the others' leases end or shrink.
    assert pool.grant("c", None, 0, v, ["a", "b", "c"], 0.0).calls == 0
    # When a's lease is renewed it is sized for three (its old lease is replaced, not added to).
    assert pool.grant("a", None, 0, v, ["a", "b", "c"], 1.0).calls == 34  # 33 + the odd one


def test_outstanding_never_exceeds_pool_whatever_the_order() -> None:
    """The safety bound: at every grant Σ live leases ≤ remaining - reserve."""
    bots = ["a", "b", "c", "d"]
    for order in itertools.permutations(bots):
        pool = LeasePool("orders", ttl_s=5.0)
        remaining = 90
        t = 0.0
        for rnd in range(6):
            for b in order:
                t += 0.3
                v = view(remaining, horizon_s=4.0, reserve=4)
                pool.grant(b, [None, 3, 50][rnd % 3], 0, v, bots, t)
                assert pool.outstanding(t) <= v.pool
            remaining -= 7  # the bots spent some meanwhile (a newer, lower reading)


def test_expired_lease_is_zero_and_frees_the_pool() -> None:
    pool = LeasePool("private", ttl_s=5.0)
    v = view(110, horizon_s=5.0)
    assert pool.grant("a", None, 0, v, ["a", "b"], 0.0).calls == 50
    assert pool.lease("a", 4.9) is not None
    assert pool.lease("a", 5.0) is None
    assert pool.outstanding(5.0) == 0
    # b alone now (a went quiet): it gets what a held.
    assert pool.grant("b", None, 0, v, ["b"], 5.0).calls == 100


def test_pace_spreads_the_pool_over_its_horizon() -> None:
    pool = LeasePool("private", ttl_s=5.0, burst=3.0)
    # 300 s left in the window: at most burst × 5 / 300 of the pool per term, whoever asks.
    assert pool.pace(view(610, horizon_s=300.0)) == 30
    assert pool.grant("a", None, 0, view(610, horizon_s=300.0), ["a"], 0.0).calls == 30
    # Near the window's end the whole pool may go.
    assert pool.pace(view(610, horizon_s=4.0)) == 600


def test_consumption_counts_against_the_share_for_one_term() -> None:
    """Asking again at half does not double a bot's rate: its share per term stays its share."""
    pool = LeasePool("small_orders", ttl_s=5.0)
    v = view(1010, horizon_s=5.0)
    assert pool.grant("a", None, 0, v, ["a", "b"], 0.0).calls == 500
    assert pool.grant("a", None, 250, v, ["a", "b"], 2.5).calls == 250
    # A term later the consumption has aged out.
    assert pool.grant("a", None, 0, v, ["a", "b"], 8.0).calls == 500


def test_wants_rebalance_toward_busy_bots() -> None:
    pool = LeasePool("private", ttl_s=5.0)
    v = view(110, horizon_s=5.0)
    pool.grant("quiet", 4, 0, v, ["quiet", "busy"], 0.0)
    assert pool.grant("busy", None, 0, v, ["quiet", "busy"], 0.0).calls == 96


def test_prune_forgets_gone_bots_after_their_lease() -> None:
    pool = LeasePool("private", ttl_s=5.0)
    pool.grant("a", None, 0, view(110), ["a"], 0.0)
    pool.prune(1.0, [])
    assert pool.outstanding(1.0) > 0  # still live: it may still spend it
    pool.prune(6.0, [])
    assert pool.outstanding(6.0) == 0 and pool.lease("a", 6.0) is None


def test_fallback_share() -> None:
    assert fallback_share(100, 1) == 50
    assert fallback_share(100, 3) == 25
    assert fallback_share(100, 0) == 100  # no other bot known to share: still only what was free
    assert fallback_share(-3, 2) == 0
    # n bots each taking their share never spend more than what was free.
    for free in range(0, 60):
        for n in range(1, 12):
            assert n * fallback_share(free, n) <= free


# ------------------------------------------------------------------------------ LeasedBudget


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


ALL = ("private", "orders", "small_orders", "ip")


def leased(clock: Clock, calls: dict[str, int], *, valid_for_s: float = 5.0, bots: int = 2,
           free: dict[str, int] | None = None) -> LeasedBudget:
    b = LeasedBudget(clock=clock)
    b.apply_lease(calls, valid_for_s=valid_for_s, query_m=clock(), marks=b.marks(),
                  free=free or dict.fromkeys(ALL, 0), bots=bots)
    return b


def test_a_bot_never_sends_more_than_its_lease() -> None:
    clock = Clock()
    b = leased(clock, {"private": 3, "orders": 2, "small_orders": 2, "ip": 1})
    assert b.can_order(0.01)
    b.on_request("/v1/me/sendchildorder", order_size=0.01)
    # private: 2 left, enough for one more order (itself + its cancel), then no new order.
    assert b.can_order(0.01)
    b.on_request("/v1/me/sendchildorder", order_size=0.01)
    assert not b.can_order(0.01)
    # The refusal names the lease, not the bot's own (ample) header reading.
    assert b.order_refusal(0.01) == "lease from the position server: no private / orders / small_orders calls left (more asked for)"
    b.on_request("/v1/me/getchildorders")  # the last private call
    with pytest.raises(LeaseExhausted) as e:
        b.on_request("/v1/me/getchildorders")
    assert isinstance(e.value, ApiError) and e.value.kind == "private"
    assert b.refused["private"] == 1
    b.on_request("/v1/getboardstate")
    with pytest.raises(LeaseExhausted):
        b.on_request("/v1/getboardstate")


def test_small_order_lease_binds_only_small_orders() -> None:
    clock = Clock()
    b = leased(clock, {"private": 50, "orders": 50, "small_orders": 1, "ip": 5})
    b.on_request("/v1/me/sendchildorder", order_size=0.05)
    assert not b.can_order(0.1)
    assert b.can_order(0.2)  # not a small order
    with pytest.raises(LeaseExhausted):
        b.on_request("/v1/me/sendchildorder", order_size=0.01)
    b.on_request("/v1/me/sendchildorder", order_size=0.5)


def test_expired_lease_falls_back_to_a_share_of_what_was_free() -> None:
    clock = Clock()
    b = leased(clock, {"private": 40, "orders": 40, "small_orders": 40, "ip": 40},
               bots=3, free={"private": 40, "orders": 20, "small_orders": 8, "ip": 12})
    assert b.allowance("small_orders") == 40
    clock.t += 5.0  # expired: the lease is zero, the fallback is free / (bots + 1)
    assert b.in_fallback()
    assert b.allowance("small_orders") == 2
    assert b.allowance("private") == 10
    assert b.allowance("orders") == 5
    b.on_request("/v1/me/sendchildorder", order_size=0.01)
    b.on_request("/v1/me/sendchildorder", order_size=0.01)
    assert b.allowance("small_orders") == 0
    assert not b.can_order(0.01)


def test_never_granted_never_uses_the_whole_account() -> None:
    clock = Clock()
    b = LeasedBudget(clock=clock)
    # No server ever answered: the bot's own view divided among UNKNOWN_BOTS + 1.
    assert b.allowance("private") == 50
    assert b.allowance("small_orders") == 10


def test_header_reading_lower_than_the_lease_wins() -> None:
    clock = Clock()
    b = leased(clock, {"private": 100, "orders": 100, "small_orders": 50, "ip": 5})
    seq = b.on_request("/v1/me/getchildorders")
    b.on_headers({"X-RateLimit-Remaining": "7", "X-RateLimit-Period": "100", "X-RateLimit-Reset": "9999999999"},
                 request_seq=seq)
    assert b.allowance("private") == 7


def test_half_used_lease_asks_for_more_once() -> None:
    clock = Clock()
    b = leased(clock, {"private": 4, "orders": 10, "small_orders": 10, "ip": 10})
    told: list[int] = []
    b.on_low = lambda: told.append(1)
    b.on_request("/v1/me/getpositions")
    assert told == []
    b.on_request("/v1/me/getpositions")
    assert told == [1]
    b.on_request("/v1/me/getpositions")
    assert told == [1]


def test_grant_of_an_older_query_is_ignored() -> None:
    clock = Clock()
    b = leased(clock, {"private": 4, "orders": 4, "small_orders": 4, "ip": 4})
    b.apply_lease({"private": 99}, valid_for_s=5.0, query_m=clock() - 1.0, marks=b.marks(),
                  free={}, bots=1)
    assert b.allowance("private") == 4


def test_lease_counted_from_the_query_snapshot() -> None:
    """A call made between the query and its grant counts against the grant."""
    clock = Clock()
    b = LeasedBudget(clock=clock)
    marks, query_m = b.marks(), clock()
    b.on_request("/v1/me/getchildorders")  # in flight while the query is answered
    b.apply_lease({"private": 3, "orders": 1, "small_orders": 1, "ip": 1}, valid_for_s=5.0, query_m=query_m,
                  marks=marks, free={}, bots=1)
    assert b.allowance("private") == 2


def test_want_follows_demand() -> None:
    clock = Clock()
    b = leased(clock, {"private": 1, "orders": 1, "small_orders": 0, "ip": 1})
    base = b.want("small_orders", 5.0)
    for _ in range(4):
        assert not b.can_order(0.01)
    assert b.want("small_orders", 5.0) == base + 6
    clock.t += 6.0
    assert b.want("small_orders", 5.0) == base


def test_too_many_bots_for_an_even_split_take_turns() -> None:
    """A pace of 5 private calls for 6 bots would be 0-1 each: no bot could ever place an order
    (it needs 2). Instead two bots per term get 2, in turn, so every bot trades within a few terms."""
    bots = [f"b{i}" for i in range(6)]
    v = view(15, horizon_s=5.0)  # pool 5
    served: set[str] = set()
    for term in range(6):
        pool = LeasePool("private", ttl_s=5.0)  # fresh book: only the turn differs
        t = term * 5.0
        got = {b: pool.grant(b, None, 0, v, bots, t).calls for b in bots}
        assert sum(got.values()) <= 5
        served |= {b for b, n in got.items() if n >= 2}
    assert served == set(bots)


def test_floor_comes_before_the_share_but_never_past_the_pool() -> None:
    """A bot asked to settle gets the calls its resync needs ahead of the shares, within the pool."""
    pool = LeasePool("private", ttl_s=5.0)
    v = view(610, horizon_s=300.0)  # pace 30 for 30 bots: 1 each, less than the floor
    bots = [f"b{i:02d}" for i in range(30)]
    assert pool.grant("b00", 1, 0, v, bots, 0.0).calls == 1
    assert pool.grant("b00", 1, 0, v, bots, 0.0, floor=4).calls == 4
    tight = view(13, horizon_s=300.0)  # pool 3: the floor cannot exceed it
    assert LeasePool("private").grant("b00", 1, 0, tight, bots, 0.0, floor=4).calls == 3


def test_a_cancel_goes_out_beyond_the_lease_but_never_beyond_the_headers() -> None:
    """A used-up lease (or a fallback share of zero after the server went) must not leave an order
    on the book: cancels still go while the bot's own header view has private calls left."""
    clock = Clock()
    b = leased(clock, {"private": 1, "orders": 1, "small_orders": 1, "ip": 1})
    b.on_request("/v1/me/getchildorders")  # the lease's last private call
    with pytest.raises(LeaseExhausted):
        b.on_request("/v1/me/sendchildorder", order_size=0.01)
    b.on_request("/v1/me/cancelchildorder")
    b.on_request("/v1/me/cancelallchildorders")
    b.on_headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Period": "200", "X-RateLimit-Reset": "9999999999"})
    with pytest.raises(LeaseExhausted):  # the exchange itself has nothing left: not even a cancel
        b.on_request("/v1/me/cancelchildorder")
