"""A correction the exchange refuses as a self trade (-159): it would have matched the account's
own resting orders, which only the bots place. The bots of that market step aside (paused, their
orders cancelled) until the correction goes through or the market is in sync; refused again after
they had their time, the order in the way is not theirs and they trade again.

The server's judging runs one check at a time against the stub exchange of
test_judging_mutants.py; the bots' side and the whole loop with real processes are in
test_self_trade_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal
from pathlib import Path

from bfsx.bitflyer.errors import SELF_TRADE, OrderRejected
from bfsx.posserver.controls import SELF_TRADE_PAUSE, Controls

from .test_judging_mutants import FX, _checks, _report, _server

D = Decimal


def _self_trade() -> OrderRejected:
    return OrderRejected(SELF_TRADE.status, SELF_TRADE.message, SELF_TRADE.http, "/v1/me/sendchildorder")


def _alerts(s: object, kind: str) -> list[str]:
    return [text for k, text in s.alerts_sent if k == kind]  # type: ignore[attr-defined]


def test_a_self_trade_refusal_makes_the_bots_step_aside_until_the_correction_goes_through(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    _report(s, "a", "0")
    ex.position = D("0.03")  # a foreign buy: the correction sells into the account's own bid
    ex.send_error = _self_trade()
    [first] = _checks(s, 1)
    assert first.correction == "SELL 0.03000000 refused (self trade): the bots step aside"
    control = s.controls.bot_control(FX)
    assert control.mode == "pause" and SELF_TRADE_PAUSE in control.reasons
    [alert] = _alerts(s, "self_trade")
    assert FX in alert and "SELL 0.03000000" in alert and "cancel their orders" in alert
    assert alert.endswith(f"so the bots of {FX} pause and cancel their orders until the correction goes through")
    assert s.counters["self_trade_steps"] == 1
    # Refused again before the bots had their time: still waiting, nothing more said.
    [again] = _checks(s, 1)
    assert again.correction == "SELL 0.03000000 refused (self trade): waiting for the bots to cancel"
    assert len(_alerts(s, "self_trade")) == 1 and _alerts(s, "correction_failed") == []
    assert s.controls.bot_control(FX).mode == "pause"
    # The bots cancelled: the correction goes through, and they trade again.
    ex.send_error = None
    [done] = _checks(s, 1)
    assert done.correction == "SELL 0.03000000" and ex.sent == [(FX, "SELL", 0.03)]
    assert s.controls.bot_control(FX).mode == "run" and s.controls.aside_since(FX) is None


def test_refused_again_after_the_wait_the_order_in_the_way_is_not_the_bots(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    s.step_aside_wait_s = 0.0
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = _self_trade()
    _checks(s, 1)
    assert s.controls.bot_control(FX).mode == "pause"
    [second] = _checks(s, 1)
    assert second.correction == "SELL 0.03000000 failed (self trade)"
    assert s.controls.bot_control(FX).mode == "run"  # the bots are not the cause: they trade again
    [blocked] = _alerts(s, "correction_failed")
    assert "no bot placed" in blocked and "cancel that order" in blocked
    # What the operator reads: how long the bots had, and what to do.
    assert f" 0 s after the bots of {FX} were asked to cancel their orders: a resting order" in blocked
    assert blocked.endswith("is in the way; the bots trade again; cancel that order")
    # Further refusals fail and alert; the bots are not paused again in this episode.
    [third] = _checks(s, 1)
    assert third.correction == "SELL 0.03000000 failed (self trade)"
    assert s.controls.bot_control(FX).mode == "run" and s.counters["self_trade_steps"] == 1
    assert len(_alerts(s, "correction_failed")) == 2
    assert _alerts(s, "correction_failed")[1].endswith(
        ": a resting order of this account that no bot placed is in the way; cancel it "
        "(the bots' own orders were cancelled before)")
    # Once the market was in sync, a new refusal is a new episode: the bots step aside again.
    ex.position = D("0")
    _checks(s, 1)
    ex.position = D("0.03")
    _checks(s, 1)
    assert s.controls.bot_control(FX).mode == "pause" and s.counters["self_trade_steps"] == 2


def test_a_market_in_sync_releases_its_bots_without_a_correction(tmp_path: Path) -> None:
    """Someone else took the foreign position out while the bots stood aside: nothing is left to
    correct, and they must not stay paused."""
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = _self_trade()
    _checks(s, 1)
    assert s.controls.bot_control(FX).mode == "pause"
    ex.position = D("0")
    [in_sync] = _checks(s, 1)
    assert in_sync.correction == "" and s.controls.bot_control(FX).mode == "run"


def test_other_refusals_do_not_make_the_bots_step_aside(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = OrderRejected(-200, "Insufficient funds", 400, "/v1/me/sendchildorder")
    [r] = _checks(s, 1)
    assert r.correction == "SELL 0.03000000 failed" and s.controls.bot_control(FX).mode == "run"
    assert _alerts(s, "self_trade") == [] and len(_alerts(s, "correction_failed")) == 1


def test_the_step_aside_pause_is_never_saved(tmp_path: Path) -> None:
    """A restart's first correction finds out again; a saved pause would hold the bots after a
    restart with nobody left to release it."""
    c = Controls(tmp_path)
    c.pause("ctl", FX)
    assert c.step_aside(FX, 1.0) is True and c.step_aside(FX, 2.0) is False
    saved = json.loads((tmp_path / "controls.json").read_text())
    assert saved["pauses"] == {FX: ["ctl"]}
    again = Controls(tmp_path)
    again.load({FX})
    assert again.paused(FX) == ["ctl"] and again.aside_since(FX) is None
    assert c.step_aside_over(FX) is True and c.step_aside_over(FX) is False and c.paused(FX) == ["ctl"]


def test_after_stepping_aside_the_next_check_corrects_without_a_new_streak(tmp_path: Path) -> None:
    """The refused order never traded, so the evidence for it stands: with 3 checks needed, the
    first check after the refusal that sees the same drift sends it (not three more with the bots
    paused all along); a drift that changed meanwhile needs its own streak."""
    s, ex = _server(tmp_path, pos_server_consecutive=3, adjust_max_size=0.1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = _self_trade()
    results = _checks(s, 3)
    assert [r.correction for r in results] == ["", "", "SELL 0.03000000 refused (self trade): the bots step aside"]
    ex.send_error = None
    [done] = _checks(s, 1)
    assert done.correction == "SELL 0.03000000" and ex.sent == [(FX, "SELL", 0.03)]
    assert s.controls.bot_control(FX).mode == "run"
    # A second episode whose drift moves while the bots stand aside: a fresh streak of 3.
    ex.sent.clear()
    ex.position = D("0.05")
    ex.send_error = _self_trade()
    _checks(s, 3)
    assert s.controls.bot_control(FX).mode == "pause"
    ex.send_error = None
    ex.position = D("0.04")  # someone else's fill moved it
    assert [r.correction for r in _checks(s, 2)] == ["", ""] and ex.sent == []
    [third] = _checks(s, 1)
    assert third.correction == "SELL 0.04000000" and ex.sent == [(FX, "SELL", 0.04)]


async def test_the_refused_correction_is_tried_again_seconds_later_not_a_check_interval(tmp_path: Path) -> None:
    """With the default 30 s check interval, the bots would stand aside for 30 s and the drift stay
    uncorrected as long: the check loop runs again ``step_aside_recheck_s`` after the refusal."""
    s, ex = _server(tmp_path, pos_server_consecutive=3, adjust_max_size=0.1, pos_server_check_interval=30)
    s.step_aside_recheck_s = 0.2
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = _self_trade()
    for _ in range(3):  # the streak, checked by hand (the loop would take 90 s)
        await s._check_market(FX)
    assert s.controls.aside_since(FX) is not None and ex.sent == []
    ex.send_error = None  # the bots cancelled
    loop_task = asyncio.create_task(s._check_loop())
    try:
        deadline = time.monotonic() + 10
        while not ex.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert ex.sent == [(FX, "SELL", 0.03)], "no check round within 10 s of the refusal"
        assert s.controls.bot_control(FX).mode == "run"
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
