"""The position server's judging (``PosServer._check_market``, ``_correct``, ``_reopen_gate``),
driven one check at a time against a stub exchange. Written as the fast test selection of mutation
run D (docs/reliability.md, "Run D") and extended from its survivors: each test isolates a rule
that a surviving mutant showed no fast test held (docs/mutation-survivors.md names the mutants).

The server is built but not started (no sockets, no check loop): a test reports positions into
its registry, sets what the stub exchange answers, runs ``_check_market`` itself and asserts
what went out (the stub's orders), what the market records and what the check returned. No
timing: ``quiet_seconds=0`` and ``startup_grace=0`` unless a test is about them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bfsx.account.drift import Correction
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.errors import ApiError, BitflyerError
from bfsx.posserver import protocol as p
from bfsx.posserver.controls import FLATTEN
from bfsx.posserver.server import CheckResult, PosServer

from .conftest import fast_config

FX = "FX_BTC_JPY"
D = Decimal


class StubExchange:
    """What ``_check_market`` and ``_correct`` ask of the REST client, answered from attributes."""

    def __init__(self) -> None:
        self.budget = ApiBudget()
        self.board: dict[str, str] | BaseException = {"health": "NORMAL", "state": "RUNNING"}
        self.position: Any = D(0)
        self.ltp: Any = 5_000_000.0
        self.sent: list[tuple[str, str, float]] = []
        self.send_error: BaseException | None = None
        #: Called while the position is being read (a report arriving during the requests).
        self.during: Callable[[], None] | None = None
        self.asked: list[tuple[str, str]] = []  # (request, market)

    async def get_board_state(self, market: str) -> dict[str, str]:
        self.asked.append(("board", market))
        if isinstance(self.board, BaseException):
            raise self.board
        return dict(self.board)

    async def net_position(self, market: str) -> Any:
        self.asked.append(("position", market))
        if self.during is not None:
            self.during()
        if isinstance(self.position, BaseException):
            raise self.position
        return self.position

    async def get_ticker(self, market: str) -> dict[str, Any]:
        self.asked.append(("ticker", market))
        return {"ltp": self.ltp}

    async def send_child_order(self, market: str, side: str, size: float) -> str:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((market, side, size))
        return f"JRF{len(self.sent)}"


def _server(tmp_path: Path, *, quiet: float = 0.0, grace: float = 0.0, **kw: Any) -> tuple[PosServer, StubExchange]:
    ex = StubExchange()
    s = PosServer(fast_config(**kw), rest=ex, state_dir=tmp_path / "state", console=False,  # type: ignore[arg-type]
                  quiet_seconds=quiet, startup_grace=grace)
    s.alerts_sent = []  # type: ignore[attr-defined]
    s.alert = lambda kind, text: s.alerts_sent.append((kind, text))  # type: ignore[attr-defined,method-assign]
    return s, ex


def _report(s: PosServer, bot: str, position: str, *, market: str = FX, base: str = "0", profit: float = 0.0) -> None:
    """A bot's report, as ``on_datagram`` applies a verified one."""
    s.registry.apply(p.Report(bot, market, float(position), float(base), profit, 0.0, 1))
    s.reports_since_start += 1


def _check(s: PosServer, market: str = FX) -> CheckResult:
    return asyncio.run(s._check_market(market))


def _checks(s: PosServer, n: int, market: str = FX) -> list[CheckResult]:
    async def run() -> list[CheckResult]:
        return [await s._check_market(market) for _ in range(n)]
    return asyncio.run(run())


# ------------------------------------------------------------------------------ a correction
def test_a_stable_drift_is_corrected_once_after_consecutive_checks(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=3, adjust_max_size=0.1)
    _report(s, "a", "0.02", profit=12.5)
    ex.position = D("0.05")  # a fill of 0.03 no bot reported
    first = _checks(s, 2)
    assert ex.sent == [] and [r.correction for r in first] == ["", ""]
    (third,) = _checks(s, 1)
    assert ex.sent == [(FX, "SELL", 0.03)] and third.correction == "SELL 0.03000000"
    assert (third.market, third.total, third.base, third.expected, third.exchange, third.skip_reason) == (
        FX, D("0.02"), D(0), D("0.02"), D("0.05"), "")
    assert third.price == 5_000_000.0 and third.profit == 12.5
    ms = s.registry.markets[FX]
    assert ms.exchange == D("0.05") and ms.diff == D("0.03") and ms.in_sync_at is None and ms.corrections == 1
    assert ms.price == 5_000_000.0 and ms.skip_reason == "" and (ms.health, ms.board_state) == ("NORMAL", "RUNNING")
    assert set(ex.asked) == {("board", FX), ("position", FX), ("ticker", FX)}  # the market judged, no other
    assert s.counters["corrections"] == 1 and [k for k, _ in s.alerts_sent] == ["correction"]  # type: ignore[attr-defined]
    assert s.alerts_sent[0][1] == (  # type: ignore[attr-defined]
        f"{FX}: exchange 0.05 ≠ expected {third.expected} (Σ bots {third.total} + base {third.base}) for 3 checks: "
        "sent MARKET SELL 0.03000000")


def test_a_correction_counts_as_a_position_change(tmp_path: Path) -> None:
    """The correcting order's fill takes a moment to show: the next checks wait the quiet time."""
    s, ex = _server(tmp_path, quiet=3600.0, pos_server_consecutive=1)
    _report(s, "a", "0")
    s.registry.markets[FX].last_change -= 7200  # quiet long enough
    ex.position = D("0.03")
    assert _check(s).correction == "SELL 0.03000000"
    assert _check(s).skip_reason.startswith("a bot's position changed") and len(ex.sent) == 1


def test_a_send_that_fails_is_counted_and_alerted_with_its_error(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.send_error = ApiError(-200, "Insufficient funds", 400, "/v1/me/sendchildorder")
    r = _check(s)
    assert r.correction == "SELL 0.03000000 failed" and ex.sent == []
    assert (s.counters["correction_errors"], s.counters["corrections"]) == (1, 0)
    assert s.registry.markets[FX].corrections == 0
    ((kind, text),) = s.alerts_sent  # type: ignore[attr-defined]
    assert kind == "correction_failed" and "ApiError" in text and "Insufficient funds" in text
    assert _check(s).correction == "SELL 0.03000000 failed" and s.counters["correction_errors"] == 2


def test_the_cap_bounds_the_correction(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1, adjust_max_size=0.05)
    _report(s, "a", "0")
    ex.position = D("-0.2")
    assert _check(s).correction == "BUY 0.05000000" and ex.sent == [(FX, "BUY", 0.05)]


# ------------------------------------------------------------------------------ unknown is not zero
@pytest.mark.parametrize("answer", [
    BitflyerError("down"), ApiError(-1, "x", 500), RuntimeError("bug"), 0.03, None, "0.03", D("NaN"), D("Infinity"),
    D("-Infinity"),
], ids=repr)
def test_an_unknown_or_malformed_exchange_position_is_never_acted_on(tmp_path: Path, answer: Any, caplog: Any) -> None:
    caplog.set_level("ERROR", logger="bfsx.posserver")
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0.02")
    ex.position = answer
    r = _check(s)
    assert ex.sent == [] and r.correction == "" and r.exchange is None
    assert r.skip_reason.startswith("exchange position"), r.skip_reason
    ms = s.registry.markets[FX]
    assert ms.exchange is None and ms.diff is None and ms.in_sync_at is None
    assert s._drift[FX].unknown == 1 and s._drift[FX].last_diff is None
    # An exchange error is the exchange's (counted, shown); anything else is a bug: logged.
    logged = f"{FX}: getting the exchange position failed: {answer!r}" in caplog.text
    assert logged == (isinstance(answer, BaseException) and not isinstance(answer, BitflyerError))


def test_a_position_at_the_bound_is_unknown_and_just_below_it_is_a_number(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    bound = D(repr(p.max_position(FX)))
    for at in (bound, -bound):
        ex.position = at
        r = _check(s)
        assert r.exchange is None and "not a bounded number" in r.skip_reason and ex.sent == []
    ex.position = bound - D("0.001")
    r = _check(s)
    assert r.exchange == bound - D("0.001") and len(ex.sent) == 1  # a number: judged (and capped)


def test_an_unknown_position_keeps_a_streak_and_a_known_one_continues_it(tmp_path: Path) -> None:
    """Unknown is no observation: it neither counts nor resets (drift.py's rule, kept by the
    server: the position is None, not a made-up value)."""
    s, ex = _server(tmp_path, pos_server_consecutive=2)
    _report(s, "a", "0")
    ex.position = D("0.03")
    _check(s)
    ex.position = BitflyerError("down")
    _check(s)
    assert s._drift[FX].streak == 1 and ex.sent == []
    ex.position = D("0.03")
    assert _check(s).correction == "SELL 0.03000000"


# ------------------------------------------------------------------------------ the board
@pytest.mark.parametrize("board", [
    {"health": "NORMAL", "state": "CLOSED"}, {"health": "NO ORDER", "state": "RUNNING"},
    {"health": "STOP", "state": "RUNNING"}, {"health": "odd", "state": "RUNNING"}, {"state": "RUNNING"},
    {"health": "NORMAL"},
], ids=str)
def test_no_correction_unless_the_board_runs_and_takes_orders(tmp_path: Path, board: dict[str, str]) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.board = board
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == f"exchange {board.get('health', '')} / {board.get('state', '')}"
    assert r.exchange == D("0.03")  # known, recorded, not acted on
    assert s.leases.health[FX][:2] == (board.get("health", ""), board.get("state", ""))


def test_a_busy_board_is_still_judged(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.board = {"health": "SUPER BUSY", "state": "RUNNING"}
    assert _check(s).correction == "SELL 0.03000000"


def test_an_unknown_board_state_is_no_correction(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.board = BitflyerError("down")
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == "board state unknown (BitflyerError)"
    ms = s.registry.markets[FX]
    assert (ms.health, ms.board_state) == ("UNKNOWN", "UNKNOWN")
    assert FX not in s.leases.health  # an unknown reading is not handed to the bots


def test_a_closed_market_resets_the_streak(tmp_path: Path) -> None:
    """A known position on a market that does not trade resets the streak: after it, the
    correction needs ``consecutive`` fresh checks (none rests on a sample of a closed market)."""
    s, ex = _server(tmp_path, pos_server_consecutive=3)
    _report(s, "a", "0")
    ex.position = D("0.03")
    _check(s)
    assert s._drift[FX].streak == 1
    ex.board = {"health": "NORMAL", "state": "CLOSED"}
    _check(s)
    assert s._drift[FX].streak == 0 and s._drift[FX].unknown == 0
    ex.board = {"health": "NORMAL", "state": "RUNNING"}
    assert [r.correction for r in _checks(s, 3)] == ["", "", "SELL 0.03000000"]


@pytest.mark.parametrize("stop", ["NO ORDER", "STOP"])
def test_a_stopped_exchange_is_alerted_once_and_its_return_logged(tmp_path: Path, caplog: Any, stop: str) -> None:
    s, ex = _server(tmp_path)
    _report(s, "a", "0")
    ex.board = {"health": stop, "state": "RUNNING"}
    _checks(s, 2)
    assert [k for k, _ in s.alerts_sent] == ["health_stop"]  # type: ignore[attr-defined]
    assert f"{stop} / RUNNING" in s.alerts_sent[0][1]  # type: ignore[attr-defined]
    ex.board = {"health": "NORMAL", "state": "CLOSED"}  # not stopped any more, but not trading yet
    _check(s)
    assert FX in s._health_stopped
    caplog.set_level("INFO", logger="bfsx.posserver")
    ex.board = {"health": "NORMAL", "state": "RUNNING"}
    _check(s)
    assert FX not in s._health_stopped and "trades again" in caplog.text
    ex.board = {"health": stop, "state": "RUNNING"}
    _check(s)
    assert [k for k, _ in s.alerts_sent] == ["health_stop", "health_stop"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ when not to judge
def test_no_judging_before_the_startup_grace_or_before_any_report(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, grace=3600.0, pos_server_consecutive=1)
    s._started_m = time.monotonic()
    _report(s, "a", "0")
    ex.position = D("0.03")
    r = _check(s)
    assert ex.sent == [] and r.skip_reason.startswith("waiting 3.6e+03 s after start")
    assert s._drift[FX].streak == 0 and s._drift[FX].unknown == 1
    t, ex2 = _server(tmp_path / "t", pos_server_consecutive=1)
    _report(t, "a", "0")
    t.reports_since_start = 0  # e.g. a market restored from history, no report since the start
    ex2.position = D("0.03")
    assert _check(t).skip_reason.startswith("waiting") and ex2.sent == []


def test_a_report_during_the_requests_makes_the_check_not_quiet(tmp_path: Path) -> None:
    """Quiet before AND during: a fill reported while the position was read may or may not be in
    the exchange's answer."""
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    ex.during = lambda: setattr(s.registry.markets[FX], "last_change", s.registry.markets[FX].last_change + 1e-6)
    r = _check(s)
    assert ex.sent == [] and r.skip_reason.startswith("a bot's position changed within")
    assert s._drift[FX].streak == 0
    ex.during = None
    assert _check(s).correction == "SELL 0.03000000"


def test_a_busy_market_is_corrected_after_enough_quiet_checks_never_on_a_busy_one(tmp_path: Path) -> None:
    """Bots that trade between most checks: a check while a bot just traded sends nothing and does
    not count, but does not reset the streak either. Otherwise a market maker that is rarely quiet
    for three checks in a row would hold a real drift (a hand trade) back for ever."""
    s, ex = _server(tmp_path, pos_server_consecutive=3)
    _report(s, "a", "0")
    ex.position = D("0.03")  # a trade no bot placed
    ms = s.registry.markets[FX]

    def busy() -> None:
        ms.last_change += 1e-6  # a bot's fill reported while the position was read

    seen = []
    for is_busy in (False, True, True, False, True, True, True, False):
        ex.during = busy if is_busy else None
        r = _check(s)
        seen.append(r.correction)
        if is_busy:
            assert r.correction == "" and r.skip_reason.startswith("a bot's position changed within")
    assert seen == [""] * 7 + ["SELL 0.03000000"] and ex.sent == [(FX, "SELL", 0.03)]


def test_a_recent_change_holds_the_judging(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, quiet=3600.0, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == "a bot's position changed within 3.6e+03 s"
    s.registry.markets[FX].last_change -= 7200
    assert _check(s).correction == "SELL 0.03000000"


def test_a_bot_id_claimed_twice_holds_the_judging(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    first = p.Header("report", boot=1, seq=1, time=0.0)  # type: ignore[arg-type]
    second = p.Header("report", boot=2, seq=1, time=0.0)  # type: ignore[arg-type]
    s.registry.apply(p.Report("a", FX, 0.0, 0.0, 0.0, 0.0, 1, header=first), "h:1", silent_after=3600)
    assert s.registry.apply(p.Report("a", FX, 0.0, 0.0, 0.0, 0.0, 2, header=second), "h:2",
                            silent_after=3600) == "duplicate"
    s.reports_since_start = 2
    ex.position = D("0.03")
    r = _check(s)
    assert ex.sent == [] and r.skip_reason.startswith("bot id a is claimed by two live senders")
    assert s._drift[FX].unknown == 1


def test_a_settle_round_holds_the_correction_and_resets_the_streak(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    s.leases.gate = lambda *a, **k: "asked 1 bot(s) to settle"  # type: ignore[method-assign]
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == "asked 1 bot(s) to settle" and r.correction == ""
    del s.leases.gate
    assert _check(s).correction == "SELL 0.03000000"


def test_a_frozen_market_sends_nothing_and_says_so(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, quiet=3600.0, pos_server_consecutive=1)
    _report(s, "a", "0")
    ex.position = D("0.03")
    s.controls.freeze(FX, "why")
    r = _check(s)
    assert ex.sent == [] and r.skip_reason.startswith("frozen: no correction until") and r.skip_reason.endswith(
        "; a bot's position changed within 3.6e+03 s")
    s.registry.markets[FX].last_change -= 7200
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == "frozen: no correction until 'bfsx ctl unfreeze' or 'adopt'"
    assert s.registry.markets[FX].skip_reason == r.skip_reason  # what the console shows


def test_a_correction_that_would_re_open_is_refused_and_freezes(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0.1")
    ex.position = D("0.06")  # a hand sale of 0.04: buying it back re-opens
    r = _check(s)
    assert ex.sent == [] and r.skip_reason == "frozen: the correction would re-open a position"
    why = s.controls.frozen_why(FX)
    assert why is not None and why.startswith(f"{FX}: exchange 0.06 ≠ expected {r.expected}; the correction BUY")


# ------------------------------------------------------------------------------ in sync
def test_in_sync_means_within_less_than_the_minimum_size(tmp_path: Path) -> None:
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0.02")
    ex.position = D("0.0209")  # below the 0.001 minimum: in sync
    s._orphans[FX] = {"gone": D("0.01")}
    s.controls.allow_reopen([FX])  # after 'bfsx ctl unfreeze': used up once in sync
    r = _check(s)
    assert r.correction == "" and s.registry.markets[FX].in_sync_at is not None and FX not in s._orphans
    assert not s.controls.reopen_allowed(FX)
    ex.position = D("0.021")  # exactly the minimum: a drift, corrected
    s._orphans[FX] = {"gone": D("0.001")}
    r = _check(s)
    assert s.registry.markets[FX].in_sync_at is None and r.correction == "SELL 0.00100000"


def test_the_ticker_price_is_recorded_only_as_a_number(tmp_path: Path) -> None:
    s, ex = _server(tmp_path)
    _report(s, "a", "0")
    ex.ltp = "5000000"
    assert _check(s).price is None and s.registry.markets[FX].price is None


# ------------------------------------------------------------------------------ the last gate
def test_the_last_gate_sends_only_a_finite_size_within_the_cap_fast(tmp_path: Path) -> None:
    """``tests/posserver/test_safety_rules.py::test_the_last_gate_sends_only_a_finite_size_within_the_cap``
    against the stub (no real server): whatever reaches ``_correct``, only a size in (0, cap] is
    sent, and a cap that is no finite positive size sends nothing."""
    s, ex = _server(tmp_path, adjust_max_size=0.1)
    zero = D(0)
    for size in ("0.2", "0.1000001", "0", "-0.01", "NaN", "Infinity"):
        done = asyncio.run(s._correct(FX, "BUY", D(size), zero, zero, zero, zero))
        assert done == f"BUY {D(size)} refused (adjust_max_size)" and ex.sent == [], size
    assert s.counters["corrections_refused"] == 6 and s.counters["corrections"] == 0
    assert {k for k, _ in s.alerts_sent} == {"correction_failed"}  # type: ignore[attr-defined]
    for size in ("0.1", "0.001"):
        assert asyncio.run(s._correct(FX, "BUY", D(size), zero, zero, zero, zero)) == f"BUY {size}"
    assert ex.sent == [(FX, "BUY", 0.1), (FX, "BUY", 0.001)] and s.counters["corrections"] == 2
    for cap in (float("nan"), float("inf"), 0.0, -0.1):
        t, ex2 = _server(tmp_path / str(cap))
        t.config = t.config.model_copy(update={"adjust_max_size": cap})
        assert "refused" in asyncio.run(t._correct(FX, "SELL", D("0.01"), zero, zero, zero, zero)) and ex2.sent == []


# ------------------------------------------------------------------------------ what is expected
def test_the_base_and_an_adopted_adjust_are_part_of_the_expected_position(tmp_path: Path) -> None:
    """Spot with 1 BTC held outside the bots (``base_position``), then ``bfsx ctl adopt`` of a
    further -0.2: the exchange is judged against Σ bots + base + adjust, never Σ bots alone."""
    spot = "BTC_JPY"
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "0.02", market=spot, base="1.0")
    ex.position = D("1.02")
    r = _check(s, spot)
    assert (r.total, r.base, r.expected, r.correction) == (D("0.02"), D("1.0"), D("1.02"), "")
    assert s.registry.markets[spot].in_sync_at is not None
    s.controls.adopt(spot, D("-0.2"))  # the operator took 0.2 BTC out by hand
    ex.position = D("0.82")
    r = _check(s, spot)
    assert (r.base, r.expected, r.correction) == (D("0.8"), D("0.82"), "") and ex.sent == []
    ms = s.registry.markets[spot]
    assert ms.diff == 0 and ms.in_sync_at is not None  # what the console shows: no difference
    ex.position = D("0.85")  # a foreign buy of 0.03 on top: sold back
    r = _check(s, spot)
    assert r.correction == "SELL 0.03000000" and ms.diff == D("0.03")


# ------------------------------------------------------------------------------ settle before correct
def _lease_query(bot: str, settled: int = 0, seq: int = 1) -> p.LeaseQuery:
    return p.LeaseQuery(bot=bot, market=FX, v=1, want={}, used={}, sent={}, budget=None, ip=None, settled=settled,
                        header=p.Header(p.MsgType.LEASE_QUERY, 1, seq, 0.0))


def test_a_leased_bot_settles_before_its_market_is_corrected(tmp_path: Path) -> None:
    """A real settle round (lease_desk.py): the drift of the checked market, ``actual -
    expected``, is held until the leased bot on it echoed the round; a check after that corrects."""
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "a", "-0.02")  # the bot is short 0.02; the exchange shows +0.02: SELL (cut to flatten)
    ex.position = D("0.02")
    s.leases.grant(_lease_query("a"), "local", {}, s.own_budget)
    r = _check(s)
    assert r.skip_reason == "asked 1 bot(s) to settle" and ex.sent == []
    assert s.leases.rounds[FX].diff == D("0.04")
    assert _check(s).skip_reason == "waiting for 1 bot(s) to settle" and ex.sent == []
    s.leases.grant(_lease_query("a", settled=s.leases.epochs[FX], seq=2), "local", {}, s.own_budget)
    assert _check(s).correction == "SELL 0.02" and ex.sent == [(FX, "SELL", 0.02)]


# ------------------------------------------------------------------------------ evicted bots' leftovers
def test_a_correction_of_an_evicted_bots_leftover_uses_it_up(tmp_path: Path) -> None:
    """What a correction removed of an evicted bot's position is no longer its to explain: a later
    drift the same way is judged by the reduce-only rule again."""
    s, ex = _server(tmp_path, pos_server_consecutive=1)
    _report(s, "b", "-0.01")
    s._orphans[FX] = {"gone": D("0.03")}  # an evicted bot held 0.03
    ex.position = D("0.02")  # its 0.03 is still on the exchange: SELL 0.03 crosses zero, allowed
    assert _check(s).correction == "SELL 0.03000000"
    assert FX not in s._orphans
    ex.position = D("-0.01")
    assert _check(s).correction == ""  # in sync


# ------------------------------------------------------------------------------ the reduce-only gate
def _gate(s: PosServer, market: str, side: str, size: str, actual: str, expected: str) -> Any:
    return s._reopen_gate(market, Correction(side, D(size), D(actual) - D(expected)),  # type: ignore[arg-type]
                          D(actual), D(expected))


def test_the_gate_uses_the_markets_own_minimum_size(tmp_path: Path) -> None:
    """ETH_JPY's minimum order is 0.01: a flattening part or a leftover below it is not sent (the
    exchange would refuse it), one of exactly the minimum is."""
    eth = "ETH_JPY"
    s, _ = _server(tmp_path)
    assert _gate(s, eth, "SELL", "0.03", "0.005", "-0.025") is None  # crosses zero; 0.005 < 0.01
    t, _ = _server(tmp_path / "t")
    assert _gate(t, eth, "SELL", "0.03", "0.01", "-0.02").size == D("0.01")  # exactly the minimum
    u, _ = _server(tmp_path / "u")
    u._orphans[eth] = {"gone": D("0.005")}
    assert _gate(u, eth, "BUY", "0.005", "0.1", "0.105") is None  # a leftover below the minimum
    v, _ = _server(tmp_path / "v")
    v._orphans[eth] = {"gone": D("-0.01")}
    assert _gate(v, eth, "BUY", "0.01", "0.1", "0.11").size == D("0.01")  # exactly the minimum


def test_the_gate_at_one_whole_coin(tmp_path: Path) -> None:
    """Sizes of exactly 1 (a whole BTC) behave as any other size."""
    s, _ = _server(tmp_path)
    assert _gate(s, FX, "SELL", "0.1", "1", "0.9").size == D("0.1")  # reduces a long of exactly 1
    s._orphans[FX] = {"gone": D("1")}
    # An evicted bot's whole coin, next to a bot short 0.5: the whole sell removes the leftover.
    assert _gate(s, FX, "SELL", "1", "0.5", "-0.5").size == D("1")


def test_ctl_flatten_lets_a_re_opening_correction_of_its_market_through(tmp_path: Path) -> None:
    s, _ = _server(tmp_path)
    s.controls.hold(FLATTEN, FX)
    assert _gate(s, FX, "BUY", "0.1", "0", "0.1") is not None  # the operator asked for the base


def test_the_freeze_alert_says_what_and_how_to_lift_it(tmp_path: Path) -> None:
    s, _ = _server(tmp_path)
    assert _gate(s, FX, "BUY", "0.04", "0.06", "0.1") is None
    ((kind, text),) = s.alerts_sent  # type: ignore[attr-defined]
    assert kind == "freeze" and text == s.controls.frozen_why(FX)
    assert text.startswith(f"{FX}: exchange 0.06 ≠ expected 0.1") and "'bfsx ctl adopt'" in text


def test_an_evicted_bots_leftover_explains_only_a_drift_its_way(tmp_path: Path) -> None:
    """An evicted bot held 0.03 long: a sell removes that; a buy (the exchange below the bots, a
    hand sale) is no removal of it and stays frozen by the reduce-only rule."""
    s, _ = _server(tmp_path)
    s._orphans[FX] = {"gone": D("0.03")}
    assert _gate(s, FX, "BUY", "0.02", "0.05", "0.07") is None
    assert s.controls.frozen_why(FX) is not None
