"""OrderTracker: lifecycle, events before the HTTP reply, dedupe, foreign orders, reconcile."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bfsx.account.orders import Fill, Order, OrderIntent, OrderState, OrderTracker
from bfsx.account.position import Position
from bfsx.bitflyer.messages import ChildOrder, ChildOrderEvent, PrivateExecution

P = "FX_BTC_JPY"
WS_DATE = "2026-09-23T03:31:27.0873222Z"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def order_ev(acc: str, side: str = "BUY", price: float = 100.0, size: float = 0.03) -> ChildOrderEvent:
    return {
        "product_code": P, "child_order_id": "JFX" + acc[3:] + "F", "child_order_acceptance_id": acc,
        "event_date": WS_DATE, "event_type": "ORDER", "child_order_type": "LIMIT", "side": side,  # type: ignore[typeddict-item]
        "price": price, "size": size, "expire_date": "2026-09-24T03:31:27",
    }


def exec_ev(acc: str, exec_id: int, size: float, outstanding: float, *, side: str = "BUY", price: float = 100.0,
            commission: float = 0.0, sfd: float = 0.0) -> ChildOrderEvent:
    return {
        "product_code": P, "child_order_id": "JFX" + acc[3:] + "F", "child_order_acceptance_id": acc,
        "event_date": WS_DATE, "event_type": "EXECUTION", "exec_id": exec_id, "side": side,  # type: ignore[typeddict-item]
        "price": price, "size": size, "commission": commission, "sfd": sfd, "outstanding_size": outstanding,
    }


def simple_ev(acc: str, kind: str, **extra: Any) -> ChildOrderEvent:
    ev: dict[str, Any] = {"product_code": P, "child_order_id": "JFX" + acc[3:] + "F",
                          "child_order_acceptance_id": acc, "event_date": WS_DATE, "event_type": kind}
    ev.update(extra)
    return ev  # type: ignore[return-value]


def placed(tracker: OrderTracker, acc: str, side: str = "BUY", size: float = 0.03, price: float | None = 100.0) -> Order:
    order = Order.new(P, side, size, price)
    order.acceptance_id = acc
    assert tracker.accepted(order) == []
    return order


def row(order_acc: str, state: str, executed: float, size: float = 0.03, side: str = "BUY") -> ChildOrder:
    return {
        "id": 0 if state == "ACTIVE" else 1, "child_order_id": "JFX" + order_acc[3:] + "F", "product_code": P,
        "side": side, "child_order_type": "LIMIT", "price": 100.0, "average_price": 100.0, "size": size,  # type: ignore[typeddict-item]
        "child_order_state": state, "expire_date": "2026-10-23T03:31:27", "child_order_date": "2026-09-23T03:31:27",
        "child_order_acceptance_id": order_acc, "outstanding_size": size - executed, "cancel_size": 0.0,
        "executed_size": executed, "total_commission": 0.0, "time_in_force": "GTC",
    }


def pexec(acc: str, exec_id: int, size: float, side: str = "BUY", price: float = 100.0) -> PrivateExecution:
    return {"id": exec_id, "child_order_id": "JFX" + acc[3:] + "F", "side": side, "price": price, "size": size,  # type: ignore[typeddict-item]
            "commission": 0.0, "exec_date": "2026-09-23T03:31:27.087", "child_order_acceptance_id": acc}


# ---------------------------------------------------------------------------------------------- orders
def test_new_order_and_local_outcomes() -> None:
    o = Order.new(P, "BUY", 0.01)
    assert o.order_type == "MARKET" and o.price is None and o.state is OrderState.PENDING
    assert o.is_open and not o.is_done and o.outstanding == 0.01
    o.refuse("close-only mode")
    assert o.state is OrderState.REFUSED and o.reason == "close-only mode" and o.is_done and o.outstanding == 0
    f = Order.new(P, "SELL", 0.02, 123.0)
    f.fail("-205: Margin amount is insufficient for this order.")
    assert f.state is OrderState.FAILED and f.order_type == "LIMIT"
    with pytest.raises(ValueError, match="BUY or SELL"):
        Order.new(P, "buy", 0.01)


def test_lifecycle_partial_then_filled() -> None:
    t = OrderTracker(P)
    o = placed(t, "JRF20260923-033127-000001")
    assert t.open_orders == [o] and o.state is OrderState.PENDING
    fill, changed = t.apply_event(order_ev("JRF20260923-033127-000001"))
    assert fill is None and changed is o and o.state is OrderState.ACTIVE and o.child_order_id
    fill, changed = t.apply_event(exec_ev("JRF20260923-033127-000001", 11, 0.01, 0.02, price=100.0))
    assert fill is not None and changed is o
    assert (fill.exec_id, fill.side, fill.price, fill.size, fill.product) == (11, "BUY", 100.0, 0.01, P)
    assert fill.time == datetime(2026, 9, 23, 3, 31, 27, 87322, tzinfo=UTC).timestamp()
    assert o.state is OrderState.PARTIALLY_FILLED and o.filled_size == 0.01 and o.outstanding == 0.02
    t.apply_event(exec_ev("JRF20260923-033127-000001", 12, 0.01, 0.01, price=103.0))
    fill, _ = t.apply_event(exec_ev("JRF20260923-033127-000001", 13, 0.01, 0.0, price=106.0))
    assert fill is not None
    assert o.state is OrderState.FILLED and o.filled_size == 0.03 and o.is_done
    assert o.average_price == pytest.approx(103.0)
    assert t.open_orders == [] and t.unsettled_orders == []  # fully filled: proven complete
    assert t.last_exec_id == 13


def test_cancel_expire_failed_and_cancel_failed() -> None:
    t = OrderTracker(P)
    a, b, c = (placed(t, f"JRF20260923-033127-00000{i}") for i in (1, 2, 3))
    t.apply_event(simple_ev("JRF20260923-033127-000001", "CANCEL"))
    t.apply_event(simple_ev("JRF20260923-033127-000002", "EXPIRE"))
    _, changed = t.apply_event(simple_ev("JRF20260923-033127-000003", "ORDER_FAILED", reason="COLLATERAL_IS_INSUFFICIENT"))
    assert (a.state, b.state, c.state) == (OrderState.CANCELLED, OrderState.EXPIRED, OrderState.FAILED)
    assert changed is c and c.reason == "COLLATERAL_IS_INSUFFICIENT"
    assert t.open_orders == []
    # A cancelled or expired order may hide a lost fill until REST confirms; a failed one cannot.
    assert {o.acceptance_id for o in t.unsettled_orders} == {a.acceptance_id, b.acceptance_id}
    # CANCEL_FAILED changes nothing; a second CANCEL of a finished order neither.
    d = placed(t, "JRF20260923-033127-000004")
    assert t.apply_event(simple_ev("JRF20260923-033127-000004", "CANCEL_FAILED")) == (None, None)
    assert d.state is OrderState.PENDING
    assert t.apply_event(simple_ev("JRF20260923-033127-000001", "CANCEL")) == (None, None)


def test_late_execution_after_cancel_still_counts() -> None:
    t = OrderTracker(P)
    o = placed(t, "JRF20260923-033127-000001")
    t.apply_event(simple_ev("JRF20260923-033127-000001", "CANCEL"))
    fill, _ = t.apply_event(exec_ev("JRF20260923-033127-000001", 7, 0.01, 0.0))
    assert fill is not None and o.filled_size == 0.01 and o.state is OrderState.CANCELLED


# ---------------------------------------------------------------------------------------------- parking
def test_events_before_the_http_reply_are_parked_then_applied() -> None:
    t = OrderTracker(P)
    acc = "JRF20260923-033127-000009"
    assert t.apply_event(order_ev(acc)) == (None, None)
    assert t.apply_event(exec_ev(acc, 21, 0.01, 0.02)) == (None, None)
    assert t.apply_event(exec_ev(acc, 22, 0.02, 0.0, price=101.0)) == (None, None)
    assert t.parked == 1 and t.open_orders == []
    order = Order.new(P, "BUY", 0.03, 100.0)
    order.acceptance_id = acc
    fills = t.accepted(order)
    assert [f.exec_id for f in fills] == [21, 22]
    assert order.state is OrderState.FILLED and order.filled_size == 0.03 and t.parked == 0
    assert t.parked_applied == 3
    # Registering the same id again is harmless.
    assert t.accepted(order) == []


def test_accepted_requires_an_id() -> None:
    with pytest.raises(ValueError, match="acceptance_id"):
        OrderTracker(P).accepted(Order.new(P, "BUY", 0.01))


def test_foreign_orders_never_become_fills_and_age_out() -> None:
    clock = Clock()
    t = OrderTracker(P, park_ttl=30.0, clock=clock)
    mine = placed(t, "JRF20260923-033127-000001")
    for i in range(50):
        foreign = f"JRF20260923-033127-1{i:05d}"
        assert t.apply_event(order_ev(foreign)) == (None, None)
        assert t.apply_event(exec_ev(foreign, 1000 + i, 0.01, 0.0)) == (None, None)
    assert t.parked == 50
    clock.t += 31.0
    fill, _ = t.apply_event(exec_ev("JRF20260923-033127-000001", 5, 0.01, 0.02))
    assert fill is not None and mine.filled_size == 0.01
    t.apply_event(order_ev("JRF20260923-033127-200000"))  # any later park purges expired ids
    assert t.parked == 1 and t.foreign_dropped == 100
    # A foreign id registered after its TTL has nothing left to apply.
    late = Order.new(P, "BUY", 0.03, 100.0)
    late.acceptance_id = "JRF20260923-033127-100000"
    assert t.accepted(late) == []
    # Events for another product are ignored outright.
    other = dict(exec_ev("JRF20260923-033127-000001", 6, 0.01, 0.01))
    other["product_code"] = "BTC_JPY"
    assert t.apply_event(other) == (None, None)  # type: ignore[arg-type]


def test_parking_is_bounded() -> None:
    t = OrderTracker(P, max_parked_events=100)
    for i in range(1000):
        t.apply_event(exec_ev(f"JRF20260923-033127-{i:06d}", i + 1, 0.01, 0.0))
    assert t.parked == 100 and t.foreign_dropped == 900


# ---------------------------------------------------------------------------------------------- dedupe
def test_duplicate_exec_ids_count_once() -> None:
    t = OrderTracker(P)
    o = placed(t, "JRF20260923-033127-000001")
    first, _ = t.apply_event(exec_ev("JRF20260923-033127-000001", 42, 0.01, 0.02))
    again = t.apply_event(exec_ev("JRF20260923-033127-000001", 42, 0.01, 0.02))
    assert first is not None and again == (None, None) and t.duplicates == 1
    fills, _ = t.reconcile([], [pexec("JRF20260923-033127-000001", 42, 0.01)])
    assert fills == [] and o.filled_size == 0.01 and t.duplicates == 2


def test_seen_set_is_bounded() -> None:
    t = OrderTracker(P, max_seen=10)
    placed(t, "JRF20260923-033127-000001", size=1.0)
    for i in range(1, 31):
        t.apply_event(exec_ev("JRF20260923-033127-000001", i, 0.01, 1.0 - i / 100))
    assert len(t._seen) == 10 and 30 in t._seen and 1 not in t._seen


# ---------------------------------------------------------------------------------------------- reconcile
def test_reconcile_fills_gaps_dedupes_and_ignores_foreign() -> None:
    t = OrderTracker(P)
    a = placed(t, "JRF20260923-033127-000001")
    b = placed(t, "JRF20260923-033127-000002", side="SELL", size=0.02)
    t.apply_event(exec_ev("JRF20260923-033127-000001", 100, 0.01, 0.02))
    # The realtime socket drops; meanwhile a fills twice more, b is cancelled, a foreign order fills.
    rows = [row("JRF20260923-033127-000001", "COMPLETED", 0.03), row("JRF20260923-033127-000002", "CANCELED", 0.0, 0.02, "SELL")]
    execs = [
        pexec("JRF20260923-033127-000001", 104, 0.01),
        pexec("JRF20260923-033199-999999", 103, 0.5),
        pexec("JRF20260923-033127-000001", 102, 0.01),
        pexec("JRF20260923-033127-000001", 100, 0.01),  # already counted over the socket
    ]
    fills, changed = t.reconcile(rows, execs)
    assert [f.exec_id for f in fills] == [102, 104]  # oldest first, foreign and seen ones skipped
    assert a.state is OrderState.FILLED and a.filled_size == 0.03
    assert b.state is OrderState.CANCELLED
    assert {o.acceptance_id for o in changed} == {a.acceptance_id, b.acceptance_id}
    assert t.open_orders == [] and t.unsettled_orders == [] and t.missing_fills() == []
    assert t.last_exec_id == 104


def test_fill_lost_before_cancel_is_found_by_order_lookup() -> None:
    t = OrderTracker(P)
    a = placed(t, "JRF20260923-033127-000001")
    b = placed(t, "JRF20260923-033127-000002")
    t.apply_event(order_ev("JRF20260923-033127-000001"))
    t.apply_event(exec_ev("JRF20260923-033127-000001", 300, 0.01, 0.02))
    # EXECUTION 301 of a is lost while connected, then a is cancelled and b fills (305): the
    # cursor passes 301, so getexecutions(after=cursor) alone would never see it.
    t.apply_event(simple_ev("JRF20260923-033127-000001", "CANCEL"))
    t.apply_event(exec_ev("JRF20260923-033127-000002", 305, 0.03, 0.0))
    assert t.last_exec_id == 305
    assert t.unsettled_orders == [a] and b.state is OrderState.FILLED
    fills, changed = t.reconcile([row("JRF20260923-033127-000001", "CANCELED", 0.02)], [])
    assert fills == [] and changed == []
    assert t.missing_fills() == ["JRF20260923-033127-000001"] and t.unsettled_orders == [a]
    by_order = [pexec("JRF20260923-033127-000001", 301, 0.01), pexec("JRF20260923-033127-000001", 300, 0.01)]
    fills, changed = t.reconcile([], by_order)
    assert [f.exec_id for f in fills] == [301] and changed == [a]
    assert a.filled_size == 0.02 and t.missing_fills() == [] and t.unsettled_orders == []


def test_filled_with_a_lost_execution_stays_unsettled() -> None:
    t = OrderTracker(P)
    o = placed(t, "JRF20260923-033127-000001")
    t.apply_event(exec_ev("JRF20260923-033127-000001", 1, 0.01, 0.02))
    t.apply_event(exec_ev("JRF20260923-033127-000001", 3, 0.01, 0.0))  # 2 was lost
    assert o.state is OrderState.FILLED and o.filled_size == 0.02 and t.unsettled_orders == [o]
    fills, _ = t.reconcile([row("JRF20260923-033127-000001", "COMPLETED", 0.03)], [pexec("JRF20260923-033127-000001", 2, 0.01)])
    assert [f.exec_id for f in fills] == [2] and t.unsettled_orders == [] and o.filled_size == 0.03


def test_reconcile_confirms_active_and_settles_clean_cancels() -> None:
    t = OrderTracker(P)
    a = placed(t, "JRF20260923-033127-000001")
    b = placed(t, "JRF20260923-033127-000002")
    t.apply_event(simple_ev("JRF20260923-033127-000002", "CANCEL"))
    fills, changed = t.reconcile([row("JRF20260923-033127-000001", "ACTIVE", 0.0), row("JRF20260923-033127-000002", "CANCELED", 0.0)], [])
    assert fills == [] and changed == [a] and a.state is OrderState.ACTIVE and b.state is OrderState.CANCELLED
    assert t.unsettled_orders == [a]  # only the open one is left to look up next time


def test_restore_recomputes_filled_from_journaled_fills() -> None:
    t = OrderTracker(P)
    o = Order(product=P, side="BUY", size=0.03, price=100.0, acceptance_id="JRF20260923-033127-000001",
              filled_size=0.03, state=OrderState.PARTIALLY_FILLED)  # row written ahead of a fill that never made it
    fills = [Fill(exec_id=9, acceptance_id="JRF20260923-033127-000001", side="BUY", price=100.0, size=0.01, product=P)]
    t.restore([o], fills, {"last_exec_id": "15"})
    assert t.open_orders == [o] and o.filled_size == 0.01 and t.last_exec_id == 15
    assert t.apply_event(exec_ev("JRF20260923-033127-000001", 9, 0.01, 0.02)) == (None, None)
    assert "JRF20260923-033127-000001" in t.known_ids() and len(t.known_ids()) == 1
    assert list(t.known_ids()) == ["JRF20260923-033127-000001"]


# ---------------------------------------------------------------------------------------------- stress
def test_random_orders_with_lost_early_late_duplicate_and_foreign_events() -> None:
    """1,000 random orders on an account shared with another bot; 20 % of this bot's events are
    lost, the rest arrive shuffled (some before the HTTP reply) and some twice. A resync as the
    runtime does it (rows for unsettled orders, executions after the cursor, then the missing
    orders' executions) must leave exactly the exchange's fills counted, each once."""
    rng = random.Random(20260923)
    t = OrderTracker(P, max_unsettled=5_000)
    next_exec = iter(range(10_000, 10**9))
    truth_orders: dict[str, dict[str, Any]] = {}
    account_execs: list[PrivateExecution] = []
    stream: list[tuple[str, Any]] = []  # ("event", ev) | ("accept", acc), in delivery order
    mine: dict[str, Order] = {}
    for n in range(1000):
        acc = f"JRF20260923-033127-{n:06d}"
        side = rng.choice(("BUY", "SELL"))
        size = rng.choice((0.01, 0.02, 0.05))
        order = Order.new(P, side, size, 100.0)
        order.acceptance_id = acc
        mine[acc] = order
        evs: list[ChildOrderEvent] = [order_ev(acc, side, 100.0, size)]
        left = round(size * 100)
        executed = 0
        ending = rng.choice(("fill", "cancel", "expire", "partial-cancel"))
        while left and ending != "cancel" and ending != "expire":
            piece = rng.randint(1, left)
            if ending == "partial-cancel" and piece == left:
                break
            left -= piece
            executed += piece
            eid = next(next_exec)
            price = 100.0 + rng.randint(-5, 5)
            evs.append(exec_ev(acc, eid, piece / 100, left / 100, side=side, price=price))
            account_execs.append(pexec(acc, eid, piece / 100, side, price))
        if ending != "fill" or left:
            evs.append(simple_ev(acc, "CANCEL" if "cancel" in ending else "EXPIRE"))
        state = "COMPLETED" if not left and ending == "fill" else ("CANCELED" if "cancel" in ending else "EXPIRED")
        truth_orders[acc] = {"executed": executed / 100, "row": row(acc, state, executed / 100, size, side)}
        delivered = [e for e in evs if rng.random() >= 0.2]
        delivered += [e for e in delivered if rng.random() < 0.1]  # duplicates
        accept_at = rng.randint(0, len(delivered))
        stream.extend(("event", e) for e in delivered[:accept_at])
        stream.append(("accept", acc))
        stream.extend(("event", e) for e in delivered[accept_at:])
        # The other bot on the same account.
        facc = f"JRF20260923-033128-{n:06d}"
        feid = next(next_exec)
        stream.append(("event", exec_ev(facc, feid, 0.01, 0.0)))
        account_execs.append(pexec(facc, feid, 0.01))
    counted: dict[int, Fill] = {}

    def take(fill: Fill | None) -> None:
        if fill is not None:
            assert fill.exec_id not in counted, "a fill counted twice"
            counted[fill.exec_id] = fill

    for kind, item in stream:
        if kind == "accept":
            for f in t.accepted(mine[item]):
                take(f)
        else:
            take(t.apply_event(item)[0])
    # Resync, as the runtime does after a reconnect.
    rows = [truth_orders[o.acceptance_id or ""]["row"] for o in t.unsettled_orders]
    cursor = t.last_exec_id or 0
    fills, _ = t.reconcile(rows, [e for e in account_execs if e["id"] > cursor])
    for f in fills:
        take(f)
    missing = t.missing_fills()
    assert missing and t.parked_applied and t.duplicates and t.foreign_dropped == 0  # every path exercised
    assert len(counted) < len([e for e in account_execs if e["child_order_acceptance_id"] in mine])
    for acc in missing:
        fills, _ = t.reconcile([truth_orders[acc]["row"]], [e for e in account_execs if e["child_order_acceptance_id"] == acc])
        for f in fills:
            take(f)
    own = {e["id"] for e in account_execs if e["child_order_acceptance_id"] in mine}
    assert set(counted) == own
    assert t.missing_fills() == [] and t.open_orders == [] and t.unsettled_orders == []
    for acc, order in mine.items():
        assert order.filled_size == pytest.approx(truth_orders[acc]["executed"], abs=1e-12)
    # The position built from these fills equals the exchange's net for this bot.
    pos = Position()
    for f in counted.values():
        pos.apply_fill(f)
    net = sum(Decimal(repr(e["size"])) * (1 if e["side"] == "BUY" else -1)
              for e in account_execs if e["child_order_acceptance_id"] in mine)
    assert pos.exact_size == net


def test_known_ids_are_exactly_the_open_and_done_orders() -> None:
    """Found by mutating ``_KnownIds``: the REST client's lost-reply lookup skips these ids, so a
    wrong member would hide the lost order itself (or let another order of this bot pass for it)."""
    t = OrderTracker(P)
    placed(t, "JRF20260923-033127-000001")
    placed(t, "JRF20260923-033127-000002")
    t.apply_event(simple_ev("JRF20260923-033127-000002", "CANCEL"))
    known = t.known_ids()
    assert "JRF20260923-033127-000001" in known and "JRF20260923-033127-000002" in known
    assert "JRF20260923-033127-000003" not in known  # the lost order: never excluded
    assert len(known) == 2 and sorted(known) == ["JRF20260923-033127-000001", "JRF20260923-033127-000002"]


# ---------------------------------------------------------------------------------------------- found by mutation
# Each test below kills mutants that survived the first mutation runs (docs/mutation-survivors.md).
def test_a_refused_or_failed_order_carries_the_time_it_ended() -> None:
    before = time.time()
    refused, failed = Order.new(P, "BUY", 0.01), Order.new(P, "SELL", 0.01, 100.0)
    refused.updated = failed.updated = 0.0
    refused.refuse("close-only mode")
    failed.fail("-205: Margin amount is insufficient for this order.")
    assert refused.updated >= before and failed.updated >= before


def test_a_recently_accepted_cancel_is_not_sent_again_until_repeat_after() -> None:
    clock = Clock()
    t = OrderTracker(P, clock=clock)
    acc = "JRF20260923-033127-000001"
    assert not t.cancel_recently_sent(acc, 3.0)
    t.cancel_accepted(acc)
    clock.t += 2.5
    assert t.cancel_recently_sent(acc, 3.0)
    assert not t.cancel_recently_sent("JRF20260923-033127-000002", 3.0)  # another order's cancel
    clock.t += 0.5
    assert not t.cancel_recently_sent(acc, 3.0)  # exactly repeat_after: send it again


def test_pending_cancels_are_bounded_at_10_000() -> None:
    clock = Clock()
    t = OrderTracker(P, clock=clock)
    for i in range(10_000):
        t.cancel_accepted(f"JRF20260923-033127-{i:06d}")
    assert t.cancel_recently_sent("JRF20260923-033127-009999", 3.0)
    t.cancel_accepted("JRF20260923-033127-010000")  # the 10,001st: not remembered
    assert not t.cancel_recently_sent("JRF20260923-033127-010000", 3.0)


def test_stuck_orders_are_the_unconfirmed_and_the_uncancelled_ones() -> None:
    """The order audit: an order with no ORDER event ``audit_after`` s after it was sent, or still
    open ``audit_after`` s after a cancel was accepted, is stuck; a resting order with no news, a
    fresh order and a fresh cancel are not. Cancel sends older than ``repeat_after`` are forgotten,
    fresher ones kept."""
    clock = Clock()
    t = OrderTracker(P, clock=clock)
    old_pending = placed(t, "JRF20260923-033127-000001")
    old_pending.created -= 11.0  # sent 11 s ago, never confirmed
    fresh_pending = placed(t, "JRF20260923-033127-000002")
    resting = placed(t, "JRF20260923-033127-000003")
    resting.created -= 100.0
    t.apply_event(order_ev("JRF20260923-033127-000003"))  # ACTIVE: on the book, no news is fine
    cancelled = placed(t, "JRF20260923-033127-000004")
    cancelled.created -= 100.0
    t.apply_event(order_ev("JRF20260923-033127-000004"))
    t.cancel_accepted("JRF20260923-033127-000004")
    assert fresh_pending.state is OrderState.PENDING and resting.state is OrderState.ACTIVE
    clock.t += 1.0
    assert t.stuck_orders(10.0, 3.0) == ["JRF20260923-033127-000001"]
    assert t.cancel_recently_sent("JRF20260923-033127-000004", 3.0)  # 1 s old: kept by the audit
    clock.t += 9.0
    assert t.stuck_orders(10.0, 3.0) == ["JRF20260923-033127-000001"]  # exactly 10 s: not yet
    assert not t.cancel_recently_sent("JRF20260923-033127-000004", 3.0)
    clock.t += 0.5
    assert t.stuck_orders(10.0, 3.0) == ["JRF20260923-033127-000001", "JRF20260923-033127-000004"]
    # The cancelled order ends: its cancel is forgotten, and it is not stuck any more.
    t.apply_event(simple_ev("JRF20260923-033127-000004", "CANCEL"))
    assert t.stuck_orders(10.0, 3.0) == ["JRF20260923-033127-000001"]
    assert t._cancel_asked == {}


def test_a_full_park_drops_the_oldest_ids_first() -> None:
    """Another bot's events fill the park: the ids parked first go, not the one just parked (whose
    HTTP reply may be a moment away)."""
    t = OrderTracker(P, max_parked_events=2)
    t.apply_event(exec_ev("JRF20260923-033199-000001", 1, 0.01, 0.0))
    t.apply_event(exec_ev("JRF20260923-033199-000002", 2, 0.01, 0.0))
    mine = "JRF20260923-033127-000001"
    t.apply_event(exec_ev(mine, 3, 0.01, 0.02))
    assert t.parked == 2 and t.foreign_dropped == 1
    order = Order.new(P, "BUY", 0.03, 100.0)
    order.acceptance_id = mine
    assert [f.exec_id for f in t.accepted(order)] == [3]


def test_expired_parked_events_free_their_room() -> None:
    """An id parked ``park_ttl`` s ago expires, and its events no longer count toward
    ``max_parked_events``: the park keeps room for what comes next."""
    clock = Clock()
    t = OrderTracker(P, park_ttl=30.0, max_parked_events=3, clock=clock)
    t.apply_event(order_ev("JRF20260923-033199-000001"))
    t.apply_event(exec_ev("JRF20260923-033199-000001", 1, 0.01, 0.0))
    clock.t += 30.0  # exactly the TTL: expired
    mine = ["JRF20260923-033127-000001", "JRF20260923-033127-000002", "JRF20260923-033127-000003"]
    t.apply_event(exec_ev(mine[0], 10, 0.01, 0.02))
    assert t.parked == 1 and t.foreign_dropped == 2
    for n, acc in enumerate(mine[1:], 1):
        t.apply_event(exec_ev(acc, 10 + n, 0.01, 0.02))
    assert t.parked == 3 and t.foreign_dropped == 2  # nothing of this bot's was dropped
    for n, acc in enumerate(mine):
        order = Order.new(P, "BUY", 0.03, 100.0)
        order.acceptance_id = acc
        assert [f.exec_id for f in t.accepted(order)] == [10 + n]


def test_an_execution_event_keeps_commission_sfd_order_id_and_falls_back_to_the_order_side() -> None:
    t = OrderTracker(P)
    acc = "JRF20260923-033127-000001"
    placed(t, acc, side="SELL")
    fill, _ = t.apply_event(exec_ev(acc, 5, 0.01, 0.02, side="SELL", commission=0.5, sfd=-12.0))
    assert fill is not None and (fill.commission, fill.sfd) == (0.5, -12.0)
    assert fill.child_order_id == "JFX20260923-033127-000001F"
    no_side = dict(exec_ev(acc, 6, 0.01, 0.01))
    del no_side["side"]
    fill, _ = t.apply_event(no_side)  # type: ignore[arg-type]
    assert fill is not None and fill.side == "SELL"
    for _ in range(2):
        assert t.apply_event(exec_ev(acc, 5, 0.01, 0.02, side="SELL")) == (None, None)
    assert t.duplicates == 2


def test_a_missing_fill_of_an_open_order_settles_when_the_order_fills() -> None:
    """A ``getchildorders`` row shows more executed size than counted while the order is still
    open; the fills then arrive over the socket and complete it: nothing is left missing or
    unsettled, and no error is raised."""
    t = OrderTracker(P)
    acc = "JRF20260923-033127-000001"
    o = placed(t, acc)
    t.reconcile([row(acc, "ACTIVE", 0.02)], [])
    assert t.missing_fills() == [acc] and t.unsettled_orders == [o]
    t.apply_event(exec_ev(acc, 1, 0.02, 0.01))
    assert t.missing_fills() == []
    t.apply_event(exec_ev(acc, 2, 0.01, 0.0))
    assert o.state is OrderState.FILLED and t.missing_fills() == [] and t.unsettled_orders == []
    # A row read while the exchange was finishing the order: still ACTIVE, everything executed.
    acc = "JRF20260923-033127-000002"
    o = placed(t, acc)
    t.apply_event(exec_ev(acc, 3, 0.01, 0.02))
    t.reconcile([row(acc, "ACTIVE", 0.03)], [])
    assert t.missing_fills() == [acc]
    t.apply_event(exec_ev(acc, 4, 0.02, 0.0))  # the last execution completes it
    assert o.state is OrderState.FILLED and t.missing_fills() == [] and t.unsettled_orders == []


def test_done_orders_are_remembered_up_to_max_done_newest_kept() -> None:
    """Beyond ``max_done`` the oldest finished order is forgotten, with its unsettled and missing
    entries (a row for it could never settle it any more); the newest ones stay known."""
    t = OrderTracker(P, max_done=2)
    a, b, c, d = (placed(t, f"JRF20260923-033127-00000{i}") for i in (1, 2, 3, 4))
    t.apply_event(simple_ev("JRF20260923-033127-000001", "CANCEL"))
    t.reconcile([row("JRF20260923-033127-000001", "CANCELED", 0.01)], [])  # a fill of a was lost
    assert t.missing_fills() == ["JRF20260923-033127-000001"] and t.unsettled_orders == [b, c, d, a]
    t.apply_event(exec_ev("JRF20260923-033127-000002", 1, 0.03, 0.0))  # b fills: done, settled
    t.apply_event(exec_ev("JRF20260923-033127-000003", 2, 0.03, 0.0))  # c fills: a is forgotten
    assert t.get("JRF20260923-033127-000001") is None
    assert t.get("JRF20260923-033127-000002") is b and t.get("JRF20260923-033127-000003") is c
    assert t.missing_fills() == [] and t.unsettled_orders == [d]
    t.apply_event(exec_ev("JRF20260923-033127-000004", 3, 0.03, 0.0))  # d fills: b is forgotten
    assert t.get("JRF20260923-033127-000002") is None and t.get("JRF20260923-033127-000004") is d
    assert sorted(t.known_ids()) == ["JRF20260923-033127-000003", "JRF20260923-033127-000004"]


def test_unsettled_orders_are_bounded_newest_kept() -> None:
    t = OrderTracker(P, max_unsettled=2)
    orders = [placed(t, f"JRF20260923-033127-00000{i}") for i in (1, 2, 3)]
    for o in orders:
        t.apply_event(simple_ev(o.acceptance_id or "", "CANCEL"))
    assert t.unsettled_orders == orders[1:]


def test_an_intent_is_held_until_dropped_and_dropping_an_unknown_one_is_harmless() -> None:
    """An order POST of unknown outcome is looked up until its outcome is known; once dropped it is
    never looked up again, and dropping one twice (adopted by a lookup and closed by another) is
    no error."""
    t = OrderTracker("FX_BTC_JPY")
    a, b = OrderIntent.new("FX_BTC_JPY", "BUY", 0.01, 100.0), OrderIntent.new("FX_BTC_JPY", "SELL", 0.02, None)
    t.add_intent(a)
    t.add_intent(b)
    assert t.intents == [a, b] and t.holds_intent(a) and t.holds_intent(b)
    t.drop_intent(a.intent_id)
    assert t.intents == [b] and not t.holds_intent(a) and t.holds_intent(b)
    t.drop_intent(a.intent_id)  # again: nothing to drop
    t.drop_intent("never-seen")
    assert t.intents == [b]
