"""The account's controls (posserver/controls.py), the reduce-only rule of corrections
(``PosServer._reopen_gate``) and ``bfsx ctl`` as a real command against a real server: bad
commands, a wrong secret, no server, odd casing, an unknown market, two commands at once, an adopt
on unknown data."""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from bfsx.account.drift import Correction
from bfsx.bitflyer.products import PRODUCTS
from bfsx.net import free_port
from bfsx.posserver.controls import FLATTEN, FROZEN, Controls
from bfsx.posserver.server import PosServer

from .conftest import SECRET, fast_config

FX, SPOT = "FX_BTC_JPY", "BTC_JPY"
D = Decimal


# ------------------------------------------------------------------------------ Controls
def test_holds_pauses_and_the_mode_of_a_market(tmp_path: Path) -> None:
    c = Controls(tmp_path)
    assert c.bot_control(FX).mode == "run" and c.bot_control(FX).reasons == ()
    assert c.hold("keep_rate") is True and c.hold("keep_rate") is False  # None: every market
    assert c.bot_control(FX).mode == "close-only" and c.bot_control(SPOT).reasons == ("keep_rate",)
    assert c.hold("ctl", FX) is True
    assert c.bot_control(FX).reasons == ("ctl", "keep_rate") and c.bot_control(SPOT).reasons == ("keep_rate",)
    assert c.pause("ctl", SPOT) is True
    assert c.bot_control(SPOT).mode == "pause"  # pause is stricter than close-only
    assert c.hold(FLATTEN, SPOT) and c.bot_control(SPOT).mode == "flatten"  # flatten wins: it closes
    assert c.release("keep_rate") is True and c.release("keep_rate") is False
    assert c.release("ctl", SPOT) is False  # held on FX, not on BTC_JPY
    assert c.bot_control(FX).reasons == ("ctl",)
    gen = c.generation
    assert c.release("nothing", FX) is False and c.generation == gen  # no change, no new generation


def test_controls_survive_a_restart_and_a_bad_file_starts_empty(tmp_path: Path, caplog: Any) -> None:
    c = Controls(tmp_path)
    c.hold("ctl", FX)
    c.pause("ctl")
    c.freeze(FX, "why")
    c.pause(FROZEN, FX)
    c.adopt(FX, D("-0.03"))
    again = Controls(tmp_path)
    again.load(frozenset(PRODUCTS))
    assert again.to_dict() | {"saved": 0} == c.to_dict() | {"saved": 0}
    assert again.adjust_of(FX) == D("-0.03") and again.frozen_why(FX) == "why"
    assert again.unfreeze(FX) == [FX] and again.frozen_why(FX) is None and FROZEN not in again.paused(FX)
    # A damaged file: one line, an empty state (the guard must start).
    (tmp_path / "controls.json").write_text("{not json")
    broken = Controls(tmp_path)
    broken.load(frozenset(PRODUCTS))
    assert broken.scopes() == set()
    assert "unreadable" in caplog.text
    # A hostile file: unknown markets dropped, reasons bounded, a non-finite base refused whole.
    (tmp_path / "controls.json").write_text(json.dumps({
        "holds": {"fx_btc_jpy": ["x"], FX: [f"r{i}" for i in range(1000)] + [5, "", "a\nb"]},
        "pauses": {"*": ["ctl"]}, "frozen": {"NOPE": "x"}, "base_adjust": {FX: "0.5", "XX": "1"},
    }))
    hostile = Controls(tmp_path)
    hostile.load(frozenset(PRODUCTS))
    assert set(hostile.holds) == {FX} and len(hostile.holds[FX]) == 16
    assert hostile.pauses == {"*": {"ctl"}} and hostile.frozen == {} and hostile.base_adjust == {FX: D("0.5")}
    (tmp_path / "controls.json").write_text(json.dumps({"base_adjust": {FX: "NaN"}}))
    nan = Controls(tmp_path)
    nan.load(frozenset(PRODUCTS))
    assert nan.base_adjust == {}


def test_a_save_that_fails_keeps_the_state_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = Controls(blocker / "sub")  # its folder cannot be made
    assert c.hold("ctl", FX) is True
    assert c.save_errors == 1 and c.bot_control(FX).mode == "close-only"


# ------------------------------------------------------------------------------ reduce-only
def _server(tmp_path: Path, **kw: Any) -> PosServer:
    return PosServer(fast_config(**kw), state_dir=tmp_path / "state", console=False)


def _gate(s: PosServer, market: str, side: str, size: str, actual: str, expected: str) -> Correction | None:
    c = Correction(side, D(size), D(actual) - D(expected))  # type: ignore[arg-type]
    return s._reopen_gate(market, c, D(actual), D(expected))


def test_only_corrections_that_reduce_the_exchange_position_go_out(tmp_path: Path) -> None:
    s = _server(tmp_path)
    alerts: list[tuple[str, str]] = []
    s.alert = lambda kind, text: alerts.append((kind, text))  # type: ignore[method-assign]
    # A foreign buy on a flat account (base 0): selling it back reduces.
    assert _gate(s, FX, "SELL", "0.03", "0.03", "0") == Correction("SELL", D("0.03"), D("0.03"))
    # Bots long 0.1, a hand sale of 0.04 leaves 0.06: buying it back re-opens. Frozen, one alert.
    assert _gate(s, FX, "BUY", "0.04", "0.06", "0.1") is None
    assert s.controls.frozen_why(FX) is not None and s.controls.bot_control(FX).mode == "pause"
    assert s.controls.bot_control(FX).reasons == ("pause:frozen",)
    assert _gate(s, FX, "BUY", "0.04", "0.06", "0.1") is None
    assert [k for k, _ in alerts] == ["freeze"]  # once, however often it is refused
    assert s.counters["reopen_refused"] == 2
    # The other markets are untouched; a hand flatten of a short is frozen the same way.
    assert s.controls.frozen_why(SPOT) is None and s.controls.bot_control(SPOT).mode == "run"
    assert _gate(s, SPOT, "SELL", "0.1", "0", "-0.1") is None and [k for k, _ in alerts] == ["freeze", "freeze"]


def test_reduces_means_the_absolute_exchange_position_also_with_a_base(tmp_path: Path) -> None:
    s = _server(tmp_path)
    s.alert = lambda kind, text: None  # type: ignore[method-assign]
    # Spot, base 1 BTC held outside the bots: a hand sale of 0.3 leaves 0.7; buying back re-opens.
    assert _gate(s, SPOT, "BUY", "0.1", "0.7", "1.0") is None
    # A hand buy of 0.3 on top of the base: selling it reduces.
    assert _gate(s, FX, "SELL", "0.1", "1.3", "1.0") is not None
    # A short base of -0.5 flattened by hand: selling again re-opens.
    assert _gate(s, "ETH_JPY", "SELL", "0.1", "0", "-0.5") is None
    # Crossing zero: only the part that flattens goes out (the rest would open the other side).
    assert _gate(s, FX, "SELL", "0.08", "0.05", "-0.03") == Correction("SELL", D("0.05"), D("0.08"))


def test_an_evicted_bots_leftover_is_corrected_either_way(tmp_path: Path) -> None:
    s = _server(tmp_path)
    s.alert = lambda kind, text: None  # type: ignore[method-assign]
    # A long bot (0.03) evicted next to a short one (-0.01): exchange 0.02, expected -0.01. The
    # whole sell removes what the evicted bot held (its cause is known), though it crosses zero.
    s._orphans[FX] = {"holder": D("0.03")}
    assert _gate(s, FX, "SELL", "0.03", "0.02", "-0.01") == Correction("SELL", D("0.03"), D("0.03"))
    s._consume_orphans(FX, "SELL", D("0.03"))
    assert FX not in s._orphans
    # Beyond the leftover, the reduce-only rule again.
    s._orphans[FX] = {"holder": D("0.01")}
    assert _gate(s, FX, "SELL", "0.05", "0.02", "-0.03") == Correction("SELL", D("0.01"), D("0.05"))


async def test_unfreeze_lets_the_held_correction_re_open_until_in_sync(tmp_path: Path) -> None:
    s = _server(tmp_path)
    s.alert = lambda kind, text: None  # type: ignore[method-assign]
    assert _gate(s, FX, "BUY", "0.1", "0", "0.2") is None and s.controls.frozen_why(FX) is not None
    ok, text = await s._apply_ctl("unfreeze", FX)
    assert ok and "also one that re-opens" in text, text
    assert s.controls.frozen_why(FX) is None and s.controls.bot_control(FX).mode == "run"
    assert _gate(s, FX, "BUY", "0.1", "0", "0.2") is not None  # the operator confirmed it
    assert _gate(s, FX, "BUY", "0.1", "0.1", "0.2") is not None  # the next step too
    again = Controls(tmp_path / "state")
    again.load(frozenset(PRODUCTS))
    assert again.reopen_allowed(FX)  # persisted
    s.controls.in_sync(FX)  # reached: the allowance is used up
    assert _gate(s, FX, "BUY", "0.1", "0", "0.1") is None  # a new outside trade freezes again


def test_correct_all_and_ctl_flatten_let_every_correction_through(tmp_path: Path) -> None:
    s = _server(tmp_path, pos_server_correct_all=True)
    assert _gate(s, FX, "BUY", "0.1", "0", "0.1") is not None
    t = _server(tmp_path / "t")
    t.controls.hold(FLATTEN, FX)
    assert _gate(t, FX, "BUY", "0.1", "-0.1", "0") is not None  # the operator asked for the base


# ------------------------------------------------------------------------------ bfsx ctl
async def _ctl(yaml_path: Path | None, *words: str) -> tuple[int, str, str]:
    args = [str(yaml_path)] if yaml_path is not None else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfsx.cli", "ctl", *args, *words,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _yaml(tmp_path: Path, port: int, secret: str = SECRET, name: str = "ctl.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"pos_server": ["127.0.0.1", port], "pos_server_secret": secret,
                                    "console_output": False}))
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("bfsx ctl: ")
    return lines[0]


@pytest.mark.timeout(120)
async def test_ctl_mistakes_are_one_line_and_a_non_zero_exit(server_factory: Any, tmp_path: Path) -> None:
    server: PosServer = await server_factory()
    good = _yaml(tmp_path, server.port)
    before = server.controls.to_dict() | {"saved": 0}
    bad = server.bad["bad_signature"]
    cases: list[tuple[Path, tuple[str, ...], str]] = [
        (good, ("explode",), "unknown command 'explode'"),
        (good, ("pause", "FOO_JPY"), "unknown market 'FOO_JPY'"),
        (good, ("pause", FX, "extra"), "too many arguments"),
        (good, (), "no command"),
        (tmp_path / "missing.yaml", ("status",), "file not found"),
        # A wrong secret: the server drops the frame unanswered (and counts it).
        (_yaml(tmp_path, server.port, secret="another-secret", name="bad.yaml"), ("pause",),
         "no valid answer from the position server"),
        (_yaml(tmp_path, free_port(), name="none.yaml"), ("status",), ""),  # no server at all
    ]
    # All at once (independent processes): also two commands arriving together.
    results = await asyncio.gather(*(_ctl(path, *words) for path, words, _ in cases))
    for (_, words, needle), (code, out, err) in zip(cases, results, strict=True):
        assert code == 2 and not out, (words, out, err)
        assert needle in _one_line(err), err
    assert server.bad["bad_signature"] == bad + 1
    assert server.controls.to_dict() | {"saved": 0} == before
    # An adopt on unknown data (this server's exchange does not answer): refused, exit 1, nothing adopted.
    code, out, err = await _ctl(good, "adopt", FX)
    assert code == 1 and out.startswith("refused: FX_BTC_JPY: exchange position unknown") and not err, (out, err)
    assert server.controls.base_adjust == {}
    assert server.counters["ctl_refused"] == 1


@pytest.mark.timeout(120)
async def test_ctl_casing_two_at_once_and_status(server_factory: Any, tmp_path: Path) -> None:
    server: PosServer = await server_factory()
    good = _yaml(tmp_path, server.port)
    code, out, _ = await _ctl(good, "status")
    assert code == 0 and out.startswith("nothing held"), out
    (c1, o1, e1), (c2, o2, e2) = await asyncio.gather(_ctl(good, "close-only", "fx_btc_jpy"),
                                                      _ctl(good, "PAUSE", " btc_jpy "))
    assert (c1, c2) == (0, 0), (o1, e1, o2, e2)
    assert o1.startswith("FX_BTC_JPY: close-only") and o2.startswith("BTC_JPY: paused"), (o1, o2)
    assert server.controls.bot_control(FX).mode == "close-only" and server.controls.bot_control(SPOT).mode == "pause"
    code, out, _ = await _ctl(good, "status")
    assert code == 0 and "BTC_JPY paused (ctl)" in out and "FX_BTC_JPY close-only (ctl)" in out, out
    code, out, _ = await _ctl(good, "freeze")
    assert code == 0 and server.controls.frozen_why(FX) is not None and server.controls.frozen_why(SPOT) is not None
    code, out, _ = await _ctl(good, "unfreeze", FX)  # frozen through every market's scope: says how
    assert code == 1 and "without a market" in out, out
    code, out, _ = await _ctl(good, "unfreeze")
    assert code == 0 and "unfrozen: *" in out and server.controls.frozen == {}
    server.controls.hold("keep_rate")  # the margin guard's: resume does not lift it, and says so
    code, out, _ = await _ctl(good, "resume", SPOT)
    assert code == 0 and "BTC_JPY: resumed; still held: BTC_JPY: keep_rate" in out, out
    assert server.controls.bot_control(SPOT).mode == "close-only" and server.controls.bot_control(FX).reasons == (
        "ctl", "keep_rate")
    code, out, _ = await _ctl(good, "resume")  # every market: the per-market commands too
    assert code == 0 and "still held: *: keep_rate" in out, out
    server.controls.release("keep_rate")
    assert server.controls.bot_control(FX).mode == server.controls.bot_control(SPOT).mode == "run"
    # Persisted as it went: a new server on the same state dir reads the same (empty) controls.
    saved = json.loads((tmp_path / "state" / "controls.json").read_text())
    assert saved["holds"] == {} and saved["pauses"] == {} and saved["generation"] == server.controls.generation


async def test_a_non_canonical_market_on_the_wire_is_refused_and_changes_nothing(server_factory: Any) -> None:
    from bfsx.posserver.client import PosServerUnavailable, send_ctl

    server: PosServer = await server_factory()
    before = server.controls.to_dict() | {"saved": 0}
    with pytest.raises(PosServerUnavailable):  # the CLI upper-cases; a raw frame is not normalized
        await send_ctl("127.0.0.1", server.port, SECRET, "pause", "fx_btc_jpy", timeout=2)
    assert server.bad["malformed"] == 1
    assert server.controls.to_dict() | {"saved": 0} == before


@pytest.mark.timeout(60)
async def test_a_bot_keeps_its_last_mode_when_control_queries_fail(server_factory: Any, wait_for: Any,
                                                                   caplog: Any) -> None:
    from bfsx.posserver import protocol as p
    from bfsx.posserver.lease_budget import LeasedBudget
    from bfsx.posserver.lease_client import LeaseClient

    server: PosServer = await server_factory()
    server.controls.hold("ctl", FX)
    modes: list[str] = []
    client = LeaseClient("127.0.0.1", server.port, SECRET, "bot", FX, budget=LeasedBudget(),
                         control_interval=0.05, on_control=lambda r: modes.append(r.mode))
    await client.start()
    try:
        await wait_for(lambda: modes and modes[-1] == "close-only", what="the first mode")

        def old_server(q: p.ControlQuery) -> p.ControlReply:  # as a server that predates the type
            raise p.ProtocolError("malformed", "unknown type 8")

        server.control_reply = old_server  # type: ignore[method-assign]
        server.controls.release("ctl", FX)  # the bot cannot learn this one
        await wait_for(lambda: client._control_legacy, timeout=20, what="the server taken for an older one")
        assert client.control is not None and client.control.mode == "close-only"  # the last mode, kept
        assert modes[-1] == "close-only" and client.grants >= 1
        assert caplog.text.count("does not answer control queries") == 1
    finally:
        await client.stop()


@pytest.mark.timeout(60)
async def test_a_bot_cut_off_from_its_server_stops_stepping_aside_after_the_hold(server_factory: Any,
                                                                               wait_for: Any) -> None:
    """The server asked the bots to step aside for its correction, then cannot be heard: the bot
    keeps the operator's hold but not the step-aside, ``step_aside_hold_s`` after the last reply
    that carried it (a cut as long as the eviction time must not pause it all along)."""
    import time

    from bfsx.posserver.controls import SELF_TRADE_PAUSE
    from bfsx.posserver.lease_budget import LeasedBudget
    from bfsx.posserver.lease_client import LeaseClient

    server: PosServer = await server_factory()
    server.controls.hold("ctl", FX)
    server.controls.step_aside(FX, time.monotonic())
    seen: list[tuple[float, str, tuple[str, ...]]] = []
    client = LeaseClient("127.0.0.1", server.port, SECRET, "bot", FX, budget=LeasedBudget(), timeout=0.3,
                         control_interval=0.05, step_aside_hold_s=1.0,
                         on_control=lambda r: seen.append((time.monotonic(), r.mode, tuple(r.reasons))))
    await client.start()
    try:
        await wait_for(lambda: seen and seen[-1][1:] == ("pause", ("ctl", SELF_TRADE_PAUSE)), what="the step-aside")
        await server.stop()  # unreachable from now on
        heard = seen[-1][0]
        await wait_for(lambda: seen[-1][1] != "pause", timeout=20, what="the step-aside dropped")
        at, mode, reasons = seen[-1]
        assert (mode, reasons) == ("close-only", ("ctl",))  # the operator's hold stays
        assert at - heard >= 1.0
        assert client.control is not None and client.control.reasons == ("ctl",)
        await asyncio.sleep(0.3)
        assert seen[-1] == (at, mode, reasons)  # said once
    finally:
        await client.stop()


async def test_margin_holds_are_not_restored_and_resume_lifts_the_daily_loss(server_factory: Any, tmp_path: Path) -> None:
    from bfsx.posserver.margin import DAILY_LOSS_HOLD, KEEP_RATE_HOLD

    server: PosServer = await server_factory()
    server.controls.hold(KEEP_RATE_HOLD)
    server.controls.hold("ctl", FX)
    saved = json.loads((tmp_path / "state" / "controls.json").read_text())
    assert saved["holds"] == {FX: ["ctl"]}  # the margin watch recomputes its holds after a restart
    assert server.controls.to_dict()["holds"] == {"*": [KEEP_RATE_HOLD], FX: ["ctl"]}  # status shows them
    again = Controls(tmp_path / "state")
    again.volatile = {KEEP_RATE_HOLD}
    again.load(frozenset(PRODUCTS))
    assert again.held(FX) == ["ctl"]
    # An operator's resume lifts the daily loss hold (for the rest of the JST day), not the keep rate's.
    server.controls.hold(DAILY_LOSS_HOLD)
    ok, text = await server._apply_ctl("resume", None)
    assert ok and DAILY_LOSS_HOLD not in server.controls.held(FX) and KEEP_RATE_HOLD in server.controls.held(FX), text
    assert "still held: *: keep_rate" in text
