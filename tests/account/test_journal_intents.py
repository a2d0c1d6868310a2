"""Journal order intents: written before the POST, closed with the order row, kept OPEN across a
restart until resolved, tolerated in a journal created before the table existed, compacted."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from bfsx.account.journal import Journal
from bfsx.account.orders import IntentState, Order, OrderIntent, OrderState
from bfsx.bitflyer.timestamps import JST

P = "FX_BTC_JPY"
NOON = datetime(2026, 9, 23, 12, 0, tzinfo=JST).timestamp()
DAY = 86400.0
ACC = "JRF20260923-030000-000001"


def placed(intent: OrderIntent, acc: str = ACC) -> Order:
    return Order(product=intent.product, side=intent.side, size=intent.size, price=intent.price,
                 order_type=intent.order_type, acceptance_id=acc, state=OrderState.PENDING,
                 created=intent.sent_at, updated=intent.sent_at)


def test_intent_lifecycle_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    limit = OrderIntent.new(P, "BUY", 0.01, 100.0)
    market = OrderIntent.new(P, "SELL", 0.02, None)
    rejected = OrderIntent.new(P, "BUY", 0.03, 90.0)
    lost = OrderIntent.new(P, "SELL", 0.04, 110.0)
    assert (limit.order_type, market.order_type) == ("LIMIT", "MARKET")
    assert len({limit.intent_id, market.intent_id, rejected.intent_id, lost.intent_id}) == 4
    with Journal(path) as j:
        for intent in (limit, market, rejected, lost):
            j.record_intent(intent)
        assert j.open_intents() == [limit, market, rejected, lost]  # every field round-trips, oldest first
        j.record_order(placed(limit), intent_id=limit.intent_id)
        j.close_intent(rejected.intent_id, IntentState.FAILED)
        assert j.intent_outcome(limit.intent_id) == (IntentState.PLACED, ACC)
        assert j.intent_outcome(rejected.intent_id) == (IntentState.FAILED, None)
        order = j.get_order(ACC)
        assert order is not None and order.size == 0.01 and order.price == 100.0
    # A process that dies with two POSTs unanswered: the restart sees exactly those two.
    with Journal(path) as j:
        assert j.open_intents() == [market, lost]
        assert j.open_intents("BTC_JPY") == []
        j.close_intent(lost.intent_id, IntentState.NOT_PLACED)
        j.record_order(placed(market, "JRF20260923-030000-000002"), intent_id=market.intent_id)
        assert j.open_intents() == []
        assert j.intent_outcome(market.intent_id) == (IntentState.PLACED, "JRF20260923-030000-000002")
        assert j.intent_outcome(lost.intent_id) == (IntentState.NOT_PLACED, None)
        assert j.intent_outcome("never-journaled") is None


def test_order_row_and_closed_intent_are_one_transaction(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        intent = OrderIntent.new(P, "BUY", 0.01, 100.0)
        j.record_intent(intent)
        # The intent update fails (its table is gone): the order row must not land without it.
        j._db.execute("ALTER TABLE intents RENAME TO intents_gone")
        with pytest.raises(sqlite3.OperationalError):
            j.record_order(placed(intent), intent_id=intent.intent_id)
        assert j.get_order(ACC) is None
        j._db.execute("ALTER TABLE intents_gone RENAME TO intents")
        j.record_order(placed(intent), intent_id=intent.intent_id)
        assert j.get_order(ACC) is not None
        assert j.intent_outcome(intent.intent_id) == (IntentState.PLACED, ACC)


def test_journal_created_before_intents_existed_opens_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Journal(path) as j:
        j.record_order(Order(product=P, side="BUY", size=0.01, price=100.0, acceptance_id=ACC))
        j._db.execute("DROP TABLE intents")  # the file as the previous release left it
    with Journal(path) as j:
        assert j.open_intents() == []
        assert j.get_order(ACC) is not None
        intent = OrderIntent.new(P, "BUY", 0.01, 100.0)
        j.record_intent(intent)
        assert j.open_intents() == [intent]


def test_compact_drops_old_closed_intents_but_never_open_ones(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        old_open = OrderIntent(intent_id="old-open", product=P, side="BUY", order_type="LIMIT", size=0.01,
                               price=100.0, sent_at=NOON - 10 * DAY)
        old_closed = OrderIntent(intent_id="old-closed", product=P, side="BUY", order_type="LIMIT", size=0.01,
                                 price=100.0, sent_at=NOON - 10 * DAY)
        fresh_closed = OrderIntent.new(P, "SELL", 0.01, 110.0)
        for intent in (old_open, old_closed, fresh_closed):
            j.record_intent(intent)
        j.close_intent(old_closed.intent_id, IntentState.NOT_PLACED)
        j.close_intent(fresh_closed.intent_id, IntentState.FAILED)
        j._db.execute("UPDATE intents SET resolved = ? WHERE intent_id = ?", (NOON - 10 * DAY, old_closed.intent_id))
        j.compact(keep_days=7, now=NOON)
        assert j.intent_outcome(old_closed.intent_id) is None
        assert j.intent_outcome(fresh_closed.intent_id) == (IntentState.FAILED, None)
        assert j.open_intents() == [old_open]  # its outcome is still unknown: only a lookup may close it


def test_an_intent_closed_with_an_acceptance_id_keeps_it(tmp_path: Path) -> None:
    """Found by mutating ``close_intent``: an outcome closed without an order row keeps the
    acceptance id it was given (what a restart's lookup found)."""
    intent = OrderIntent.new(P, "BUY", 0.01, 100.0)
    with Journal(tmp_path / "j.db") as j:
        j.record_intent(intent)
        j.close_intent(intent.intent_id, IntentState.UNKNOWN, ACC)
    with Journal(tmp_path / "j.db") as j:
        assert j.intent_outcome(intent.intent_id) == (IntentState.UNKNOWN, ACC)
        assert j.open_intents() == []


def test_open_intents_of_one_product(tmp_path: Path) -> None:
    """Found by mutation (docs/mutation-survivors.md): a restart looks up the open intents of its
    own product; the product filter must select them, and only them."""
    with Journal(tmp_path / "j.db") as j:
        fx, spot = OrderIntent.new(P, "BUY", 0.01, None), OrderIntent.new("BTC_JPY", "SELL", 0.01, None)
        j.record_intent(fx)
        j.record_intent(spot)
        assert j.open_intents(P) == [fx]
        assert j.open_intents("BTC_JPY") == [spot]
        assert j.open_intents() == [fx, spot]
