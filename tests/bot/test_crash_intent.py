"""Invariant 6 in the crash window of an order: the exchange accepted it, the process died before
the reply was journaled. Every order POST is journaled as an *intent* first; the restart looks the
intents left OPEN up and adopts the orders they became, so their fills are counted (exactly once).

A real ``bfsx trade`` process is killed with -9 while two order replies are held back by the
simulator's ``latency_ms`` fault (both orders already live); then, in-process: each way an
intent can end (adopted, not placed, ambiguous, lookup failing), and repeated cancels.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bfsx.account.journal import Journal
from bfsx.account.orders import IntentState, OrderIntent
from bfsx.bitflyer.rest import RestClient
from bfsx.bot import resync
from bfsx.bot.strategy import Strategy
from bfsx.sim.server import SimServer

from .conftest import (
    BFSX,
    STRATEGIES,
    BotProcess,
    SimProc,
    StartBot,
    account,
    bot_trade_yaml,
    net,
    wait_for,
    wait_sync,
    write_yaml,
)

P = "FX_BTC_JPY"
LATENCY_MS = 4000  # the replies are this late; the kill comes as soon as both orders are live


def _rows(folder: Path, sql: str) -> list[Any]:
    """Read a bot's journal (read-only: while it runs, or after it died)."""
    path = folder / "journal.db"
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the tables are not there yet
        return []
    finally:
        con.close()


def _journal_position(folder: Path) -> Decimal:
    rows = _rows(folder, "SELECT side, size FROM fills")
    return sum((Decimal(repr(s)) if side == "BUY" else -Decimal(repr(s)) for side, s in rows), Decimal(0))


def test_kill_9_between_acceptance_and_reply_then_restart_adopts_and_counts_once(
    sim_proc: SimProc, tmp_path: Path, bot_processes: list[BotProcess]
) -> None:
    n = 12
    key, _ = account(n)
    logs = tmp_path / "logs"
    trigger = tmp_path / "send-now"
    write_yaml(tmp_path / "crash.yaml", {"parameters": {"trigger": str(trigger), "taker": 0.03, "resting": 0.02}})
    write_yaml(tmp_path / "trade.yaml", bot_trade_yaml(sim_proc, n, logs, strategy_py=str(STRATEGIES / "crash_order.py"),
                                                       strategy_yaml="crash.yaml"))
    first = BotProcess([str(BFSX), "trade"], tmp_path, logs / f"bot{n}.log")
    bot_processes.append(first)
    first.wait_log("crash armed")

    def both_live() -> bool:
        acct = sim_proc.state()["accounts"][key]
        return acct["executions"] >= 1 and len(acct["open_orders"]) == 1

    try:
        sim_proc.faults(latency_ms=LATENCY_MS)
        trigger.touch()
        # Both intents journaled, both orders on the exchange (the market buy filled, the sell
        # rests), neither reply back yet: kill -9 now.
        wait_sync(lambda: len(_rows(logs, "SELECT 1 FROM intents WHERE state = 'OPEN'")) == 2 and both_live(),
                  20, "two OPEN intents and both orders live on the exchange")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        sim_proc.faults(latency_ms=0)
    # The crash window really was hit: the bot knew nothing of either order, nor of the fill.
    assert "crash sent" not in first.log()
    assert _rows(logs, "SELECT COUNT(*) FROM orders") == [(0,)]
    assert _rows(logs, "SELECT COUNT(*) FROM fills") == [(0,)]
    dead = sim_proc.state()
    resting_id = dead["accounts"][key]["open_orders"][0]["child_order_acceptance_id"]
    assert net(dead, key) == pytest.approx(0.03)

    # Restart (no trigger: it sends nothing itself) with the latency back to 0.
    write_yaml(tmp_path / "crash.yaml", {"parameters": {}})
    second = BotProcess([str(BFSX), "trade"], tmp_path, logs / f"bot{n}.log")
    bot_processes.append(second)
    second.wait_log("crash restarted")
    wait_sync(lambda: not _rows(logs, "SELECT 1 FROM intents WHERE state = 'OPEN'"), 30, "both intents resolved")
    intents = _rows(logs, "SELECT state, acceptance_id, order_type FROM intents ORDER BY order_type")
    assert [(s, t) for s, _, t in intents] == [("PLACED", "LIMIT"), ("PLACED", "MARKET")]
    assert intents[0][1] == resting_id
    adopted = {a for _, a, _ in intents}
    assert {a for (a,) in _rows(logs, "SELECT acceptance_id FROM orders")} == adopted
    assert second.log().count("(adopted)") == 2
    executions = sim_proc.state()["accounts"][key]["executions"]
    wait_sync(lambda: len(_rows(logs, "SELECT exec_id FROM fills")) == executions, 30,
              "the journal to hold the market buy's fills")
    assert {a for (a,) in _rows(logs, "SELECT DISTINCT acceptance_id FROM fills")} <= adopted

    # A clean stop cancels the adopted resting sell: the bot tracks it as its own order.
    assert second.stop(signal.SIGTERM) == 0
    final = sim_proc.state()
    assert final["accounts"][key]["open_orders"] == []
    assert final["accounts"][key]["executions"] == len(_rows(logs, "SELECT exec_id FROM fills")) == executions
    stopped = re.findall(r"stopped: position (\S+),", second.log())
    assert stopped and float(stopped[-1]) == pytest.approx(net(final, key), abs=1e-12)
    assert float(_journal_position(logs)) == pytest.approx(net(final, key), abs=1e-12) == pytest.approx(0.03)
    assert "Traceback" not in first.stderr() + second.stderr()


# ------------------------------------------------------------------------------ in-process
async def test_restart_resolves_each_open_intent_and_never_guesses(
    sim: SimServer, start_bot: StartBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resync, "ORDER_AUDIT_INTERVAL", 0.1)
    monkeypatch.setattr(resync, "INTENT_RETRY", 0.2)
    folder = tmp_path / "bot"
    # What a killed process can leave behind, with the exchange's side of it.
    async with RestClient(sim.url, "demo-key-1", "demo-secret-1") as rest:
        far = round((await rest.get_board(P))["bids"][0]["price"] - 20000)
        placed = OrderIntent.new(P, "BUY", 0.01, far)  # accepted, reply never journaled
        placed_id = await rest.send_child_order(P, "BUY", 0.01, far)
        twin = OrderIntent.new(P, "BUY", 0.02, far - 10)  # two identical orders match it
        twin_ids = [await rest.send_child_order(P, "BUY", 0.02, far - 10) for _ in range(2)]
    pending = OrderIntent.new(P, "SELL", 0.03, None)  # no order (yet): its window is still open
    stale = OrderIntent(intent_id="stale", product=P, side="SELL", order_type="MARKET", size=0.04, price=None,
                        sent_at=time.time() - 600)  # no order, window long over
    with Journal(folder / "journal.db") as j:
        for intent in (placed, twin, pending, stale):
            j.record_intent(intent)

    await sim.set_faults(http_error_rate=1.0)  # every lookup fails at first
    rt = await start_bot(Strategy(), log_folder=str(folder), apikey="demo-key-1", secret="demo-secret-1")
    assert len(rt.tracker.intents) == 4
    await wait_for(lambda: rt.rest.lookups >= 8, what="two failing lookup rounds")
    # A failed lookup is "unknown": nothing closed, not even the intent whose window is over.
    assert len(rt.journal.open_intents()) == 4 and rt.tracker.open_orders == []
    await sim.set_faults(http_error_rate=0.0)

    await wait_for(lambda: rt.journal.open_intents() == [pending], what="a lookup round that succeeds")
    assert rt.journal.intent_outcome(stale.intent_id) == (IntentState.NOT_PLACED, None)
    assert rt.journal.intent_outcome(placed.intent_id) == (IntentState.PLACED, placed_id)
    assert rt.journal.intent_outcome(twin.intent_id) == (IntentState.UNKNOWN, None)
    # The one match is this bot's order now (journaled, tracked, cancelled at stop); the twins are not.
    assert [o.acceptance_id for o in rt.tracker.open_orders] == [placed_id]
    assert rt.journal.get_order(placed_id) is not None
    assert not any(rt.tracker.get(a) for a in twin_ids)
    assert rt.position.size == 0.0


async def test_a_cancel_accepted_moments_ago_is_not_sent_again(
    sim: SimServer, start_bot: StartBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Strategy()
    rt = await start_bot(s)
    a = await s.buy(0.01, round(s.best_bid - 20000))
    b = await s.buy(0.01, round(s.best_bid - 20010))
    assert a.acceptance_id and b.acceptance_id
    sent: list[str] = []
    cancel = rt.rest.cancel_child_order

    async def counted(product: str, *, acceptance_id: str | None = None, order_id: str | None = None) -> None:
        sent.append(acceptance_id or "")
        await cancel(product, acceptance_id=acceptance_id, order_id=order_id)

    monkeypatch.setattr(rt.rest, "cancel_child_order", counted)
    await sim.set_faults(drop_private_events=1.0)  # no CANCEL event: both stay open in the tracker
    try:
        assert await s.cancel(a)
        assert await s.cancel(a) and await s.cancel(a.acceptance_id)
        assert await s.cancel_all() == 2  # a: accepted moments ago; b: sent now
        assert sent == [a.acceptance_id, b.acceptance_id]
        monkeypatch.setattr(resync, "CANCEL_REPEAT_AFTER", 0.0)  # once the window is over, it is sent again
        await s.cancel(a)
        assert sent == [a.acceptance_id, b.acceptance_id, a.acceptance_id]
    finally:
        await sim.set_faults(drop_private_events=0.0)
    await wait_for(lambda: not sim.state()["accounts"]["demo-key-1"]["open_orders"], what="both cancelled")
    # Their CANCEL events were lost: the order audit settles them (at once here, not after 4 s).
    monkeypatch.setattr(resync, "ORDER_AUDIT_AFTER", 0.0)
    monkeypatch.setattr(resync, "ORDER_AUDIT_INTERVAL", 0.1)
    await wait_for(lambda: not rt.tracker.open_orders, what="the bot to see both cancelled")
