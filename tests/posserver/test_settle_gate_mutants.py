"""Settle before correct (``LeaseDesk.gate`` and ``_settled``, ``PosServer._settle_gate``) and the use
of evicted bots' leftovers (``PosServer._consume_orphans``), rule by rule: written from the survivors
of mutation run F (docs/mutation-survivors.md, "Run F"). The desk runs on a fake clock; the server
on the stub exchange of test_judging_mutants.py, one check at a time."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from bfsx.posserver import protocol as p
from bfsx.posserver.lease_budget import HostBudget
from bfsx.posserver.lease_desk import SETTLE_TIMEOUT_S, LeaseDesk

from .test_judging_mutants import FX, _check, _report, _server

D = Decimal
STEP = D("0.001")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _query(bot: str, settled: int = 0, seq: int = 1, market: str = FX) -> p.LeaseQuery:
    return p.LeaseQuery(bot=bot, market=market, v=1, want={}, used={}, sent={}, budget=None, ip=None,
                        settled=settled, header=p.Header(p.MsgType.LEASE_QUERY, 1, seq, 0.0))


def _desk(*bots: str) -> tuple[LeaseDesk, Clock]:
    clock = Clock()
    desk = LeaseDesk(clock=clock)
    for b in bots:
        desk.grant(_query(b), "local", {}, HostBudget())
    return desk, clock


# ------------------------------------------------------------------------------ the desk
def test_a_drift_of_exactly_the_minimum_size_is_settled_first() -> None:
    desk, clock = _desk("a")
    assert desk.gate(FX, STEP, STEP, clock()) == "asked 1 bot(s) to settle"
    assert desk.gate(FX, -STEP, STEP, clock()) == "asked 1 bot(s) to settle"  # a new drift: a new round
    assert desk.epochs[FX] == 2
    assert desk.gate(FX, STEP / 2, STEP, clock()) == "" and FX not in desk.rounds  # below it: in sync


def test_a_round_its_live_bots_never_settle_times_out(caplog: Any) -> None:
    """Bots that keep asking for leases but never echo the round hold the correction back only for
    SETTLE_TIMEOUT_S; then the next check that starts afterwards may correct."""
    desk, clock = _desk("a", "b")
    assert desk.gate(FX, D("0.03"), STEP, clock()) == "asked 2 bot(s) to settle"
    opened = clock()
    seq = 1
    for t in (30.0, SETTLE_TIMEOUT_S - 1):
        clock.t = opened + t
        seq += 1
        for b in ("a", "b"):
            desk.grant(_query(b, seq=seq), "local", {}, HostBudget())  # still live, still unsettled
        assert desk.gate(FX, D("0.03"), STEP, clock()) == "waiting for 2 bot(s) to settle"
    clock.t = opened + SETTLE_TIMEOUT_S + 1
    desk.grant(_query("a", seq=seq + 1), "local", {}, HostBudget())
    desk.grant(_query("b", seq=seq + 1), "local", {}, HostBudget())
    with caplog.at_level(logging.WARNING, logger="bfsx.posserver"):
        assert desk.gate(FX, D("0.03"), STEP, clock() - 1) == "bots settled: judging on the next checks"
    assert f"{FX}: a, b did not settle within 60 s; judging without them" in caplog.text
    assert desk.rounds[FX].waiting == set() and desk.rounds[FX].settled_m == clock()
    assert desk.gate(FX, D("0.03"), STEP, clock() + 1) == ""


def test_the_gate_judges_who_is_live_at_the_time_it_is_given() -> None:
    """``now_m`` is the time of the judgement: a bot whose lease query is older than LIVE_TERMS
    leases by then is not waited for, whatever the desk's own clock says."""
    desk, clock = _desk("a")  # asked at 100; live until 115
    assert desk.gate(FX, D("0.03"), STEP, 121.0, now_m=120.0) == ""  # no live bot at 120: nothing to wait for
    assert FX not in desk.rounds
    assert desk.gate(FX, D("0.03"), STEP, clock(), now_m=101.0) == "asked 1 bot(s) to settle"
    # The bot went quiet: at 120 it holds nothing back any more (the desk's clock still says 100).
    assert desk.gate(FX, D("0.03"), STEP, 121.0, now_m=120.0) == ""
    assert desk.rounds[FX].settled_m == 120.0


def test_an_echo_of_an_older_round_settles_nothing() -> None:
    desk, clock = _desk("a", "b")
    desk.grant(_query("a", settled=1, seq=2), "local", {}, HostBudget())  # no round yet: nothing to settle
    assert FX not in desk.rounds
    assert desk.gate(FX, D("0.03"), STEP, clock()) == "asked 2 bot(s) to settle"  # epoch 1
    assert desk.gate(FX, D("0.05"), STEP, clock()) == "asked 2 bot(s) to settle"  # moved: epoch 2
    desk.grant(_query("b", settled=1, seq=2), "local", {}, HostBudget())  # b settled epoch 1, late
    clock.t += 1
    assert desk.gate(FX, D("0.05"), STEP, clock()) == "waiting for 2 bot(s) to settle"
    assert desk.rounds[FX].waiting == {"a", "b"}
    desk.grant(_query("b", settled=2, seq=3), "local", {}, HostBudget())
    assert desk.rounds[FX].waiting == {"a"}


# ------------------------------------------------------------------------------ the server's gate
def _lease(s: Any, bot: str, settled: int = 0, seq: int = 1, market: str = FX) -> None:
    s.leases.grant(_query(bot, settled, seq, market), "local", {}, s.own_budget)


def test_a_same_size_drift_after_a_bots_position_moved_is_settled_again(tmp_path: Path) -> None:
    """The server hands the gate this check's expected position: the bot healed one lost fill while
    a second of the same size was lost, so the bots settle once more before anything is sent."""
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    _report(s, "a", "0")
    _lease(s, "a")
    ex.position = D("0.03")
    assert _check(s).skip_reason == "asked 1 bot(s) to settle"
    _lease(s, "a", settled=s.leases.epochs[FX], seq=2)
    _report(s, "a", "0.01")  # its settle found a fill of 0.01 ...
    ex.position = D("0.04")  # ... and another 0.01 traded meanwhile: the drift is 0.03 still
    r = _check(s)
    assert r.skip_reason == "asked 1 bot(s) to settle again" and ex.sent == []
    assert s.leases.rounds[FX].expected == D("0.01") and s.leases.rounds[FX].again
    _lease(s, "a", settled=s.leases.epochs[FX], seq=3)
    assert _check(s).correction == "SELL 0.03000000" and ex.sent == [(FX, "SELL", 0.03)]


def test_the_again_rule_compares_the_bots_plus_the_base(tmp_path: Path) -> None:
    """A bot's position and its base moved by opposite amounts: the expected position (Σ bots + base)
    is the same, so the settled drift is corrected without another round."""
    spot = "BTC_JPY"
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.1)
    _report(s, "a", "0", market=spot, base="1.0")
    _lease(s, "a", market=spot)
    ex.position = D("1.03")
    assert _check(s, spot).skip_reason == "asked 1 bot(s) to settle"
    assert s.leases.rounds[spot].expected == D("1.0")
    _lease(s, "a", settled=s.leases.epochs[spot], seq=2, market=spot)
    _report(s, "a", "0.01", market=spot, base="0.99")
    r = _check(s, spot)
    assert r.skip_reason == "" and r.correction == "SELL 0.03000000" and ex.sent == [(spot, "SELL", 0.03)]


# ------------------------------------------------------------------------------ evicted bots' leftovers
def test_a_correction_uses_up_the_leftovers_its_way_in_order(tmp_path: Path) -> None:
    """A sell removes evicted longs (skipping a short), one after the other, as far as it goes; a
    buy removes a short; what is used up is forgotten."""
    s, _ = _server(tmp_path)
    s._orphans[FX] = {"short": D("-0.01"), "long1": D("0.01"), "long2": D("0.02")}
    s._consume_orphans(FX, "SELL", D("0.015"))
    assert s._orphans[FX] == {"short": D("-0.01"), "long2": D("0.015")}
    s._consume_orphans(FX, "BUY", D("0.004"))
    assert s._orphans[FX] == {"short": D("-0.006"), "long2": D("0.015")}
    s._consume_orphans(FX, "BUY", D("0.01"))  # more than the short: the rest removes nothing
    assert s._orphans[FX] == {"long2": D("0.015")}
    s._consume_orphans(FX, "SELL", D("0.015"))
    assert FX not in s._orphans
    s._consume_orphans(FX, "SELL", D("0.01"))  # none left: nothing to do
    assert FX not in s._orphans
