"""Odd or hostile input never makes the server trade wrongly or stop (issue 10, item 5 and the
server half of item 4). Real servers on real sockets, fed signed packets; several run the server,
the bots or the intruder as separate processes.

Each test fails on the server before this hardening: non-canonical markets became markets, a
|pos| ≥ 1e20 froze every check, one bot id could open any number of markets, markets never retired
and came back from history, one failing market stopped every round, markup in a bot id broke the
console and the SIGTERM exit, idle TCP connections took every slot, a one-space remote secret was
accepted, a captured report passed a restarted server once, and two senders sharing a bot id both
moved its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import logging
import math
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from bfsx.bitflyer.products import PRODUCTS
from bfsx.bitflyer.rest import RestClient
from bfsx.config import ConfigError, TradeConfig
from bfsx.net import free_port
from bfsx.posserver import protocol as p
from bfsx.posserver.client import PosServerClient, PosServerUnavailable, query_status
from bfsx.posserver.console import Console
from bfsx.posserver.server import MAX_PENDING_PER_PEER, PosServer
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

SECRET = "pos-secret"
FX = "FX_BTC_JPY"
HERE = Path(__file__).parent
ROOT = HERE.parents[1]
Factory = Callable[..., Awaitable[PosServer]]


@pytest.fixture
def sim_config() -> SimConfig:
    # The server checks every 0.3 s: room in the limits for that pace.
    return SimConfig.fast(limits={"private": 20_000, "ip": 50_000, "orders": 5_000})


def _client(s: PosServer, bot: str, market: str = FX) -> PosServerClient:
    return PosServerClient("127.0.0.1", s.port, SECRET, bot, market, report_interval=0.2, query_interval=0.2)


def _raw_report(body: bytes | dict[str, Any], *, boot: int = 7, seq: int = 1, now: float | None = None) -> bytes:
    """A correctly signed REPORT with any body, as a hostile sender holding the secret could send."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    t = time.time() if now is None else now
    payload = p.HEADER.pack(p.MAGIC, p.VERSION, p.MsgType.REPORT, boot, seq, int(t * 1_000_000)) + data
    return payload + hmac.digest(SECRET.encode(), payload, "sha256")


def _body(bot: str, market: str = FX, pos: Any = 0.0, base: Any = 0.0, profit: Any = 0.0) -> dict[str, Any]:
    return {"id": bot, "market": market, "pos": pos, "base": base, "profit": profit, "realized": 0.0, "pid": 1,
            "budget": None}


def _udp(port: int, *packets: bytes) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in packets:
            sock.sendto(data, ("127.0.0.1", port))


async def _checks(s: PosServer, n: int, wait_for: Any) -> None:
    target = s.checks + n
    await wait_for(lambda: s.checks >= target, what=f"{n} checks")


# -------------------------------------------------------------------------------- 1. canonical markets
async def test_non_canonical_markets_are_refused_and_logged_once_per_sender(
        server_factory: Factory, wait_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bfsx.posserver")
    s = await server_factory()
    odd = p.Sender(SECRET)
    other = p.Sender(SECRET)
    packets = []
    for market in ("fx_btc_jpy", "FX_BTC_JPY ", "DOGE_JPY", " FX_BTC_JPY", "Fx_Btc_Jpy"):
        for _ in range(3):
            packets.append(odd.encode(p.Report(bot="odd", market=market, position=0.01, base_position=0,
                                               profit=0, realized=0, pid=1)))
    packets.append(other.encode(p.Report(bot="odd-2", market="fx_btc_jpy", position=0.01, base_position=0,
                                         profit=0, realized=0, pid=2)))
    _udp(s.port, *packets)
    await wait_for(lambda: s.bad["malformed"] >= 16, what="every odd market refused")
    good = _client(s, "good")
    await good.start()
    good.report(0.0, 0.0, 0.0, 0.0)
    await wait_for(lambda: "good" in s.registry.bots, what="the good report")
    assert list(s.registry.markets) == [FX]  # no second market, whatever the spelling
    assert set(s.registry.bots) == {"good"}
    assert s.bad["malformed"] == 16
    warnings = [r.getMessage() for r in caplog.records if "unknown market" in r.getMessage()]
    assert len([w for w in warnings if "id odd)" in w]) == 1, warnings  # once per sender, not per datagram
    assert len([w for w in warnings if "id odd-2)" in w]) == 1, warnings
    await good.stop()


# -------------------------------------------------------------------------------- 2. bounded numbers
async def test_unbounded_numbers_are_refused_and_checks_go_on(
        sim: SimServer, server_factory: Factory, fast_config: Any, wait_for: Any) -> None:
    s = await server_factory(fast_config(endpoint=sim.url), startup_grace=0.5)
    good = _client(s, "good")
    await good.start()
    good.report(0.0, 0.0, 0.0, 0.0)
    await wait_for(lambda: s.results.get(FX) is not None and s.results[FX].exchange is not None,
                   what="the good market checked against the simulator")
    bound = 1e6  # p.max_position("BTC_JPY"): 10^9 minimum sizes of 0.001 BTC
    hostile = [  # one market each, so no two cancel out
        _body("huge", "BTC_JPY", pos=1e20), _body("huge-short", "XLM_JPY", pos=-1e20),
        _body("at-bound", "ETH_JPY", pos=bound * 10), _body("btc-bound", "BTC_EUR", pos=bound),
        _body("base", "BCH_BTC", base=-1e7), _body("profit", FX, profit=1e300), _body("xrp", "XRP_JPY", pos=1e8),
    ]
    raw = [b'{"id":"inf","market":"BTC_JPY","pos":1e400,"base":0,"profit":0,"realized":0,"pid":1}',
           b'{"id":"nan","market":"BTC_JPY","pos":NaN,"base":0,"profit":0,"realized":0,"pid":1}']
    _udp(s.port, *(_raw_report(b, boot=100 + i) for i, b in enumerate([*hostile, *raw])))
    n = len(hostile) + len(raw)
    await wait_for(lambda: s.bad["malformed"] >= n, what="every unbounded report refused")
    rows_before = (await s.history.counts())[0]
    await _checks(s, 5, wait_for)
    assert s.bad["malformed"] == n
    assert list(s.registry.markets) == [FX] and set(s.registry.bots) == {"good"}
    assert p.max_position("BTC_JPY") == bound and p.max_position("XRP_JPY") == 1e8
    assert s.results[FX].exchange == Decimal(0) and s.counters["check_errors"] == 0
    assert (await s.history.counts())[0] >= rows_before + 5  # history goes on
    # A report built in code (no decoder) is held to the same bounds by the registry.
    for bad in (dict(position=1e20), dict(base_position=math.nan), dict(position=math.inf)):
        r = p.Report(**{**dict(bot="code", market=FX, position=0.0, base_position=0.0, profit=0.0, realized=0.0,
                               pid=1), **bad})
        assert s.registry.apply(r) == "refused"
    assert "code" not in s.registry.bots
    await good.stop()


@pytest.mark.parametrize("cap", [math.inf, math.nan])
async def test_a_non_finite_cap_never_trades(sim: SimServer, server_factory: Factory, fast_config: Any,
                                             wait_for: Any, caplog: pytest.LogCaptureFixture, cap: float) -> None:
    caplog.set_level(logging.ERROR, logger="bfsx.posserver")
    # Built in code, past the config model's own checks: the server must hold the line itself.
    cfg: TradeConfig = fast_config(endpoint=sim.url).model_copy(update={"adjust_max_size": cap})
    s = await server_factory(cfg, startup_grace=0.5)
    async with RestClient(sim.url, "demo-key-1", "demo-secret-1") as rest:
        await rest.send_child_order(FX, "BUY", 0.5)  # a fill no bot reports: drift of +0.5
        await wait_for(lambda: rest.net_position(FX), what="the fill")
        bot = _client(s, "bot")
        await bot.start()
        bot.report(0.0, 0.0, 0.0, 0.0)
        await wait_for(lambda: s.results.get(FX) is not None and s.results[FX].exchange == Decimal("0.5"),
                       what="the drift seen")
        await _checks(s, 8, wait_for)  # well over consecutive (3) quiet checks
        assert await rest.net_position(FX) == Decimal("0.5")  # nothing was sent
        assert s.counters["corrections"] == 0 and s.counters["check_errors"] == 0
        await bot.stop()
    assert any("adjust_max_size" in r.getMessage() and "no correcting order" in r.getMessage()
               for r in caplog.records)


# -------------------------------------------------------------------------------- 3. markets per bot
async def test_one_bot_id_cannot_open_many_markets(server_factory: Factory, wait_for: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bfsx.posserver")
    s = await server_factory()
    hopper = p.Sender(SECRET)
    names = [f"X{i}_JPY" for i in range(150)] + sorted(PRODUCTS)
    _udp(s.port, *(hopper.encode(p.Report(bot="hopper", market=m, position=0.0, base_position=0.0, profit=0,
                                          realized=0, pid=1)) for m in names))
    await wait_for(lambda: s.bad["malformed"] + s.counters["reports"] >= len(names), what="every report handled")
    assert s.bad["malformed"] == 150  # not a product: refused by the decoder
    assert len(s.registry.markets) == 2  # the first two products; every later one refused
    assert s.counters["market_cap"] == len(PRODUCTS) - 2
    await s.check_all()
    assert s.checks == 1 and len(s.results) == 2  # what the server's checks (and API calls) cover
    assert len([r for r in caplog.records if "markets per bot" in r.getMessage()]) == 1
    assert len(s.registry.markets) <= len(PRODUCTS)


# -------------------------------------------------------------------------------- 4. markets retire
async def test_markets_retire_and_are_not_revived_from_history(server_factory: Factory, tmp_path: Path,
                                                               wait_for: Any) -> None:
    state = tmp_path / "state"
    s = await server_factory(state_dir=state)
    a, b = _client(s, "a", "BTC_JPY"), _client(s, "b")
    await a.start()
    await b.start()
    a.report(0.2, 1.0, 0.0, 0.0)
    b.report(0.0, 0.0, 0.0, 0.0)
    await wait_for(lambda: {"a", "b"} <= set(s.registry.bots), what="both bots")
    await _checks(s, 2, wait_for)  # bot samples in the history
    await a.stop()
    await wait_for(lambda: "BTC_JPY" not in s.registry.markets, what="BTC_JPY retired")
    assert s.counters["retired"] == 1 and s.counters["evictions"] == 1
    assert FX in s.registry.markets  # b still reports it
    st = await query_status("127.0.0.1", s.port, SECRET)
    assert [m["market"] for m in st["markets"]] == [FX]
    await b.stop()
    await s.stop()
    # A restart within the eviction time of b's last report: nothing comes back without a live bot.
    s2 = await server_factory(state_dir=state)
    assert (await s2.history.counts())[1] >= 2
    assert s2.registry.markets == {}
    await s2.check_all()
    assert s2.results == {}


# -------------------------------------------------------------------------------- 5. isolated markets
class _OddBoardRest(RestClient):
    """The simulator, except that BTC_JPY's board state comes back as an odd JSON value."""

    async def get_board_state(self, product: str) -> Any:
        if product == "BTC_JPY":
            return []  # .get() on it raises in the check
        return await super().get_board_state(product)


async def test_one_failing_market_never_stops_the_others(
        sim: SimServer, server_factory: Factory, fast_config: Any, wait_for: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bfsx.posserver")
    rest = _OddBoardRest(sim.url, "demo-key-1", "demo-secret-1")
    s = await server_factory(fast_config(endpoint=sim.url), rest=rest, startup_grace=0.5)
    fx, spot = _client(s, "fx"), _client(s, "spot", "BTC_JPY")
    for c in (fx, spot):
        await c.start()
    fx.report(0.0, 0.0, 0.0, 0.0)
    spot.report(0.0, 1.0, 0.0, 0.0)
    await wait_for(lambda: s.results.get(FX) is not None and s.results[FX].exchange is not None,
                   what="FX checked")
    rows = (await s.history.counts())[0]
    await _checks(s, 6, wait_for)
    assert s.results[FX].exchange == Decimal(0) and s.results[FX].skip_reason == ""
    assert "check failed (AttributeError)" in s.results["BTC_JPY"].skip_reason
    assert s.counters["check_errors"] >= 6
    assert (await s.history.counts())[0] >= rows + 12  # both markets recorded every round
    failed = [r for r in caplog.records if "the check failed" in r.getMessage()]
    assert len(failed) == 1 and "BTC_JPY" in failed[0].getMessage() and failed[0].exc_info is not None
    st = await query_status("127.0.0.1", s.port, SECRET)  # the TCP side still answers
    assert {m["market"] for m in st["markets"]} == {FX, "BTC_JPY"}
    for c in (fx, spot):
        await c.stop()


# -------------------------------------------------------------------------------- 6. literal console
def _write_config(tmp_path: Path, port: int, **extra: Any) -> Path:
    cfg = tmp_path / "trade.yaml"
    keys: dict[str, Any] = {
        "pos_server": f"['127.0.0.1', {port}]", "pos_server_secret": SECRET,
        "log_folder": tmp_path / "logs" / "bot", "endpoint": "http://127.0.0.1:9", "pos_server_check_interval": 0.3,
        "pos_server_consecutive": 3, "pos_server_evict_after": 20, "pos_server_report_interval": 0.5,
        "console_output": "false", **extra,
    }
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return cfg


async def _status(port: int) -> dict[str, Any] | None:
    try:
        return await query_status("127.0.0.1", port, SECRET, timeout=2)
    except PosServerUnavailable:
        return None


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


async def test_console_shows_markup_literally_and_sigterm_exits_clean(tmp_path: Path, wait_for: Any) -> None:
    port = free_port()
    cfg = _write_config(tmp_path, port, console_output="true")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    out = bytearray()

    def pump() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                out.extend(chunk)

    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "pos_server.py"), str(cfg), cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=slave, stderr=slave, env={**env, "COLUMNS": "200", "LINES": "50", "TERM": "xterm"})
    os.close(slave)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    clients: list[PosServerClient] = []
    try:
        await wait_for(lambda: _status(port), timeout=60, what="server up")
        for name in ("evil[/b]", "[bold red]x"):
            c = PosServerClient("127.0.0.1", port, SECRET, name, FX, report_interval=0.3)
            await c.start()
            c.report(0.01, 0.0, 0.0, 0.0)
            clients.append(c)

        def shown(needle: bytes) -> bool:
            return needle in _ANSI.sub(b"", bytes(out))

        await wait_for(lambda: shown(b"evil[/b]") and shown(b"[bold red]x"), what="the ids shown literally")
        late = PosServerClient("127.0.0.1", port, SECRET, "late-bot", FX, report_interval=0.3)
        await late.start()
        late.report(0.02, 0.0, 0.0, 0.0)
        clients.append(late)
        await wait_for(lambda: shown(b"late-bot"), what="the live table still updating")
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        for c in clients:
            await c.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    log_text = (tmp_path / "logs" / "pos_server" / "pos_server.log").read_text()
    assert code == 0, log_text[-3000:]
    assert "position server stopped" in log_text  # stop() ran to its end: the history was closed
    wal = tmp_path / "logs" / "pos_server" / "history.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # the last connection closed cleanly
    # And in-process: the rendered cells are the ids as sent.
    assert "Traceback" not in log_text


async def test_console_render_keeps_ids_literal(server_factory: Factory, wait_for: Any) -> None:
    from rich.console import Console as RichConsole

    s = await server_factory()
    c = _client(s, "evil[/b]")
    await c.start()
    c.report(0.01, 0.0, 0.0, 0.0)
    await wait_for(lambda: "evil[/b]" in s.registry.bots, what="report")
    out = RichConsole(record=True, width=200)
    out.print(Console(s, live=True).render())
    assert "evil[/b]" in out.export_text()
    await c.stop()


# -------------------------------------------------------------------------------- 7. TCP hoarding
_HOLDER = """
import socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    conns.append(s)
print("READY", flush=True)
sys.stdin.read()
"""


async def test_idle_connections_of_one_client_do_not_block_queries(server_factory: Factory,
                                                                    wait_for: Any) -> None:
    s = await server_factory()  # 256 connections at most
    bots = [_client(s, f"bot-{i}") for i in range(2)]
    for b in bots:  # two bots already keep a connection open, as bots do
        assert isinstance(await b.query_budget(), p.BudgetReply)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(s.port), "255", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 60)
        assert line.strip() == b"READY"
        # Another process, another client: its budget query is answered.
        reply = await asyncio.to_thread(_query_in_subprocess, s.port)
        assert reply == "BudgetReply"
        for b in bots:  # and the bots' kept-alive connections still serve them
            assert isinstance(await b.query_budget(), p.BudgetReply)
        assert s.counters["connections_closed"] >= 1

        async def held_to_the_limit() -> bool:
            # Any new connection sweeps the silent ones older than the grace down to 8 per address.
            await query_status("127.0.0.1", s.port, SECRET)
            return s.silent_connections <= MAX_PENDING_PER_PEER

        await wait_for(held_to_the_limit, what="the hoarder held to 8 silent connections")
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        await holder.wait()
        for b in bots:
            await b.stop()


def _query_in_subprocess(port: int) -> str:
    code = ("import asyncio, sys\nfrom bfsx.posserver.client import PosServerClient\n"
            "async def main():\n"
            f"    c = PosServerClient('127.0.0.1', {port}, {SECRET!r}, 'newcomer', 'FX_BTC_JPY', timeout=20)\n"
            "    r = await c.query_budget()\n    print(type(r).__name__)\n    await c.stop()\n"
            "asyncio.run(main())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() or r.stderr.strip().splitlines()[-1]


# -------------------------------------------------------------------------------- 8. remote secret
@pytest.mark.parametrize("secret", ["' '", '"  \\t  "', "short-secret-15", "'  padded-to-16  '"])
def test_remote_bind_needs_a_16_character_secret(tmp_path: Path, fast_config: Any, secret: str) -> None:
    cfg_file = tmp_path / "trade.yaml"
    cfg_file.write_text(f"pos_server: ['0.0.0.0', {free_port()}]\npos_server_secret: {secret}\n"
                        f"log_folder: {tmp_path / 'logs' / 'bot'}\nconsole_output: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    try:
        r = subprocess.run([sys.executable, "-m", "bfsx.cli", "pos-server", str(cfg_file)], capture_output=True,
                           text=True, timeout=30, cwd=tmp_path, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server started off loopback with the secret {secret}")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "pos_server_secret" in r.stderr and "16" in r.stderr
    text = secret.strip("'\"").strip()
    if len(text) > 4:
        assert text not in r.stderr  # a secret is never echoed


def test_remote_bind_with_a_long_secret_is_accepted(tmp_path: Path, fast_config: Any) -> None:
    cfg = fast_config(pos_server_secret="0123456789abcdef").model_copy(update={"pos_server_bind": "0.0.0.0"})
    PosServer(cfg, state_dir=tmp_path)  # constructs: the bind itself is not tried here
    short = fast_config(pos_server_secret="0123456789abcde").model_copy(update={"pos_server_bind": "0.0.0.0"})
    with pytest.raises(ConfigError, match="at least 16"):
        PosServer(short, state_dir=tmp_path)


# -------------------------------------------------------------------------------- 9. replay after restart
async def test_a_captured_report_is_refused_by_a_restarted_server(tmp_path: Path, wait_for: Any) -> None:
    port = free_port()
    cfg = _write_config(tmp_path, port)

    async def start_server() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "pos_server.py"), str(cfg),
                                                    cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL)
        await wait_for(lambda: _status(port), timeout=60, what="server up")
        return proc

    server = await start_server()
    try:
        captured = p.Sender(SECRET).encode(p.Report(bot="victim", market=FX, position=0.05, base_position=0.0,
                                                    profit=0.0, realized=0.0, pid=1))

        async def victim_seen() -> bool:
            # Sent until seen: the TCP side may answer a moment before the UDP socket is bound
            # (a copy after the first is a replay, counted and ignored).
            _udp(port, captured)
            st = await _status(port)
            return bool(st and [b for b in st["bots"] if b["id"] == "victim"])

        await wait_for(victim_seen, what="the report accepted once")
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        server = await start_server()

        async def refused() -> dict[str, Any] | None:
            _udp(port, captured)  # the same bytes, a few seconds old: fresh enough for the 30 s window
            st = await _status(port)
            return st if st and st["counters"]["replay"] >= 1 else None

        st = await wait_for(refused, what="the replay refused")
        assert st["bots"] == [] and st["markets"] == [] and st["counters"]["reports"] == 0
        # A live sender's next report (a fresh time) is accepted as ever.
        _udp(port, p.Sender(SECRET).encode(p.Report(bot="live", market=FX, position=0.01, base_position=0.0,
                                                     profit=0.0, realized=0.0, pid=2)))

        async def live_seen() -> bool:
            st = await _status(port)
            return bool(st and [b["id"] for b in st["bots"]] == ["live"])

        await wait_for(live_seen, what="a fresh report accepted")
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.wait(), 30)


# -------------------------------------------------------------------------------- 10. one sender per id
async def _bot_process(port: int, name: str, reported: str) -> asyncio.subprocess.Process:
    args = ["http://127.0.0.1:9", "demo-key-1", "demo-secret-1", str(port), SECRET, name, FX, "BUY", "0", reported]
    proc = await asyncio.create_subprocess_exec(sys.executable, str(HERE / "fake_bot.py"), *args,
                                                stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "REPORT_INTERVAL": "0.2"})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"READY", line
    return proc


async def _end(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_a_second_live_sender_of_a_bot_id_is_refused(server_factory: Factory, fast_config: Any,
                                                           wait_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    from rich.console import Console as RichConsole

    caplog.set_level(logging.ERROR, logger="bfsx.posserver")
    # Evicts after 4 s of silence: room for a loaded machine's scheduling before the first "goes silent".
    # Heartbeat assumed 1 s: a same-host twin silent 3 s would count as a restart, far above the
    # fake bots' 0.2 s heartbeat even on a loaded machine.
    s = await server_factory(fast_config(pos_server_evict_after=4.0, pos_server_report_interval=1.0),
                             startup_grace=0.0)
    first = await _bot_process(s.port, "twin", "0.03")
    second: asyncio.subprocess.Process | None = None
    try:
        await wait_for(lambda: "twin" in s.registry.bots and s.registry.bots["twin"].position == Decimal("0.03"),
                       what="the first sender")
        boot = s.registry.bots["twin"].boot
        second = await _bot_process(s.port, "twin", "0.01")
        await wait_for(lambda: s.counters["duplicates"] >= 10, what="the second sender's reports refused")
        bot = s.registry.bots["twin"]
        assert bot.position == Decimal("0.03") and bot.boot == boot  # never flipped
        st = await query_status("127.0.0.1", s.port, SECRET)
        assert [d["id"] for d in st["duplicates"]] == ["twin"] and st["duplicates"][0]["boot"] != boot
        assert st["counters"]["duplicates"] >= 10
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "twin" in r.getMessage()]
        assert len(errors) == 1, errors  # once per (id, boot)
        out = RichConsole(record=True, width=200)
        out.print(Console(s, live=True).render())
        assert "DUPLICATE bot id twin" in out.export_text()
        await wait_for(lambda: "claimed by two" in s.registry.markets[FX].skip_reason, what="judging held")
        # The first one dies (kill -9): its pid is gone on this host, so the second takes over.
        first.kill()
        await first.wait()
        await wait_for(lambda: s.registry.bots.get("twin") is not None
                       and s.registry.bots["twin"].position == Decimal("0.01"), what="the second sender accepted")
        assert s.registry.bots["twin"].boot != boot
        await wait_for(lambda: not s.registry.claimants, what="no claimant left")
    finally:
        await _end(first)
        if second is not None:
            assert await _end(second) == 0


async def test_a_bot_restarted_after_a_clean_stop_is_accepted_at_once(server_factory: Factory, fast_config: Any,
                                                                      wait_for: Any) -> None:
    s = await server_factory(fast_config(pos_server_evict_after=60.0), startup_grace=0.0)
    first = await _bot_process(s.port, "phoenix", "0.03")
    await wait_for(lambda: "phoenix" in s.registry.bots, what="the first run")
    assert await _end(first) == 0  # SIGTERM: its last report says it is stopping
    second = await _bot_process(s.port, "phoenix", "0.01")
    try:
        await wait_for(lambda: s.registry.bots["phoenix"].position == Decimal("0.01"), what="the restarted run")
        assert s.counters["duplicates"] == 0 and s.counters["evictions"] == 0
    finally:
        assert await _end(second) == 0


async def test_a_bot_killed_and_restarted_at_once_is_taken_back_before_eviction(
        server_factory: Factory, fast_config: Any, wait_for: Any) -> None:
    # kill -9 leaves no final report; the eviction time (60 s) would hold the market unjudged that long.
    s = await server_factory(fast_config(pos_server_evict_after=60.0, pos_server_report_interval=1.0),
                             startup_grace=0.0)
    first = await _bot_process(s.port, "lazarus", "0.03")
    await wait_for(lambda: "lazarus" in s.registry.bots, what="the first run")
    boot = s.registry.bots["lazarus"].boot
    first.kill()
    await first.wait()
    second = await _bot_process(s.port, "lazarus", "0.01")
    try:
        await wait_for(lambda: s.registry.bots["lazarus"].position == Decimal("0.01"), what="the restarted run")
        assert s.registry.bots["lazarus"].boot != boot and s.counters["evictions"] == 0
        assert not s.registry.claimants
    finally:
        assert await _end(second) == 0


def _report(bot: str, position: float, pid: int, boot: int) -> p.Report:
    return p.Report(bot=bot, market=FX, position=position, base_position=0.0, profit=0.0, realized=0.0, pid=pid,
                    header=p.Header(p.MsgType.REPORT, boot, 1, time.time()))


def test_a_new_boot_is_a_restart_only_from_the_same_host_after_missed_heartbeats() -> None:
    from bfsx.posserver.registry import Registry

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)  # exited: its pid is gone (not reused within this test)
    live_pid = os.getpid()
    kw = {"silent_after": 60.0, "restart_after": 3.0}
    for holder_pid, host, silent, want in [
        (live_pid, "10.0.0.5", 1.0, "duplicate"),   # a twin that may still be alive: refused
        (live_pid, "10.0.0.5", 3.0, "changed"),     # three heartbeats missed from the same host: a restart
        (live_pid, "10.0.0.6", 59.0, "duplicate"),  # another host: a configuration error, held until eviction
        (live_pid, "127.0.0.1", 1.5, "duplicate"),  # same host, pid alive: wait for the silence
        (dead_pid, "127.0.0.1", 1.5, "changed"),    # same host, pid gone: proof after one heartbeat
        (dead_pid, "127.0.0.1", 0.5, "duplicate"),  # ... but not before one heartbeat is missed
    ]:
        r = Registry()
        assert r.apply(_report("b", 0.03, holder_pid, 11), "10.0.0.5:4000" if host != "127.0.0.1"
                       else "127.0.0.1:4000", now=100.0, **kw) == "new"
        got = r.apply(_report("b", 0.01, 4242, 12), f"{host}:4001", now=100.0 + silent, **kw)
        assert got == want, (holder_pid == dead_pid, host, silent, got)
        assert r.bots["b"].position == (Decimal("0.01") if want == "changed" else Decimal("0.03"))
