"""Position server over real sockets, without an exchange (every REST call fails = unknown).

Reports, totals, eviction, every rejected packet (UDP and TCP), many TCP clients at once, the
account-wide budget, the non-loopback bind refusal, history across a restart, config reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bfsx.bitflyer import limits
from bfsx.bitflyer.budget import ApiBudget
from bfsx.config import ConfigError, load_trade_config
from bfsx.posserver import protocol as p
from bfsx.posserver.client import PosServerClient, PosServerUnavailable, query_status
from bfsx.posserver.server import PosServer

SECRET = "pos-secret"
Factory = Callable[..., Awaitable[PosServer]]


def _client(s: PosServer, bot: str, market: str = "FX_BTC_JPY", **kw: Any) -> PosServerClient:
    return PosServerClient("127.0.0.1", s.port, SECRET, bot, market, report_interval=0.2, query_interval=0.2, **kw)


async def test_reports_totals_status_and_eviction(server_factory: Factory, wait_for: Any) -> None:
    s = await server_factory()
    a, b = _client(s, "bot-a"), _client(s, "bot-b")
    await a.start()
    await b.start()
    a.report(0.03, 0.5, 100.0, 50.0, ApiBudget().snapshot())
    b.report(-0.01, 0.5, -20.0, 0.0, None)
    await wait_for(lambda: len(s.registry.bots) == 2, what="two bots")
    status = await a.status()
    market = {m["market"]: m for m in status["markets"]}["FX_BTC_JPY"]
    assert market["total"] == pytest.approx(0.02)
    assert market["expected"] == pytest.approx(0.52)  # Σ bots + base_position
    assert market["profit"] == pytest.approx(80.0)
    assert {x["id"] for x in status["bots"]} == {"bot-a", "bot-b"}
    # A new absolute position replaces the old one (no deltas).
    a.report(0.05, 0.5, 100.0, 50.0, None)
    await wait_for(lambda: float(s.registry.total("FX_BTC_JPY")) == pytest.approx(0.04), what="new total")
    # b stops (last report sent) and goes silent: evicted after pos_server_evict_after (2 s).
    await b.stop()
    await wait_for(lambda: "bot-b" not in s.registry.bots, what="eviction")
    assert s.counters["evictions"] == 1
    assert "bot-a" in s.registry.bots  # the heartbeat keeps a alive
    await a.stop()


def _signed(payload: bytes, secret: str = SECRET) -> bytes:
    return payload + hmac.new(secret.encode(), payload, hashlib.sha256).digest()


async def test_bad_datagrams_are_counted_and_change_nothing(server_factory: Factory, wait_for: Any) -> None:
    s = await server_factory()
    sender = p.Sender(SECRET)

    def report(pos: float, **kw: Any) -> bytes:
        return sender.encode(p.Report(bot="bot-x", market="FX_BTC_JPY", position=pos, base_position=0,
                                      profit=0, realized=0, pid=1), **kw)

    old, good = report(9.0), report(0.02)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.sendto(good, ("127.0.0.1", s.port))
        await wait_for(lambda: "bot-x" in s.registry.bots, what="the good report")
        wrong_version = _signed(b"BX\x02" + good[3:-32])
        bad = {
            "malformed": [b"hello", b'{"id":"bot-x","pos":5}' + b" " * 80, good[:40]],
            "bad_signature": [good[:-32] + bytes(32), p.Sender("wrong").encode(
                p.Report(bot="bot-x", market="FX_BTC_JPY", position=7.0, base_position=0, profit=0, realized=0, pid=1))],
            "bad_version": [wrong_version],
            "replay": [good, old],  # the same datagram again; an older one overtaken by a newer
            "stale": [report(5.0, now=1_600_000_000.0)],
            "oversized": [good + b"\0" * 1500],
        }
        for packets in bad.values():
            for data in packets:
                sock.sendto(data, ("127.0.0.1", s.port))
        want = {reason: len(v) for reason, v in bad.items()}
        await wait_for(lambda: all(s.bad[r] >= n for r, n in want.items()), what="all bad packets counted")
    finally:
        sock.close()
    assert dict(s.bad) == want
    assert s.counters["reports"] == 1
    assert float(s.registry.bots["bot-x"].position) == pytest.approx(0.02)  # nothing changed
    assert list(s.registry.bots) == ["bot-x"]
    status = await query_status("127.0.0.1", s.port, SECRET)
    assert status["counters"]["replay"] == 2 and status["counters"]["oversized"] == 1


async def test_bad_tcp_queries_are_refused(server_factory: Factory) -> None:
    s = await server_factory()

    async def exchange(data: bytes) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        w.write(data)
        await w.drain()
        got = await asyncio.wait_for(r.read(), 10)  # the server closes the connection
        w.close()
        return got

    assert await exchange(struct.pack("!I", 10_000_000) + b"x" * 100) == b""
    assert await exchange(p.frame(p.Sender("wrong").encode(p.StatusQuery(client="t")))) == b""
    assert await exchange(p.frame(b"garbage-garbage-garbage-garbage-garbage-garbage-garbage-garbage-x")) == b""
    with pytest.raises(PosServerUnavailable):
        await query_status("127.0.0.1", s.port, "wrong secret", timeout=5)
    assert (s.bad["oversized"], s.bad["bad_signature"], s.bad["malformed"]) == (1, 2, 1)
    assert s.counters["queries"] == 0
    # A good query on the same server still works.
    assert (await query_status("127.0.0.1", s.port, SECRET))["bots"] == []


async def test_a_query_handler_that_raises_drops_that_connection_only(server_factory: Factory,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    s = await server_factory()
    caplog.set_level(logging.ERROR, logger="bfsx.posserver")
    real = s.status

    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug in the status")

    s.status = broken  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(PosServerUnavailable):
            await query_status("127.0.0.1", s.port, SECRET, timeout=5)
    assert s.counters["query_errors"] == 3
    assert len([r for r in caplog.records if "answering a StatusQuery failed" in r.getMessage()]) == 1
    s.status = real  # type: ignore[method-assign]
    assert (await query_status("127.0.0.1", s.port, SECRET))["bots"] == []  # the server answers on


async def test_many_tcp_clients_at_once(server_factory: Factory) -> None:
    s = await server_factory()
    clients = [_client(s, f"bot-{i}") for i in range(30)]
    replies = await asyncio.gather(*(c.query_budget() for c in clients), *(c.status() for c in clients[:10]))
    assert len(replies) == 40
    assert all(isinstance(r, p.BudgetReply) and r.advice == "trade" for r in replies[:30])
    assert s.counters["queries"] == 40
    for c in clients:
        await c.stop()


async def test_account_budget_keeps_n_bots_under_the_private_limit(server_factory: Factory,
                                                                   fast_config: Any) -> None:
    """Four bots share one key's private bucket (500 / 5 min). Each reads the exchange's rate-limit
    headers only every 50th request (the rest is counted locally), as when replies are in flight.
    Alone, each bot's own budget lets it spend what the others spend too: the account goes over the
    limit. With the position server each bot honours the combined budget and the account stays under."""
    # No checks meanwhile: each check's REST calls count in the server's own budget, and one landing
    # between the four concurrent queries of a tick would give them views one request apart.
    s = await server_factory(fast_config(pos_server_check_interval=3600))

    async def run(use_server: bool) -> tuple[int, list[int]]:
        bucket = limits.PRIVATE_LIMIT
        lowest = bucket
        reset = str(int(time.time()) + 300)
        budgets = [ApiBudget(reserve=20) for _ in range(4)]
        clients = [_client(s, f"{'srv' if use_server else 'own'}-{i}") for i in range(4)]
        sent = [0] * 4
        for c in clients:
            await c.start()
        try:
            for _tick in range(1000):
                active = False
                for i, bud in enumerate(budgets):
                    if bud.private_left() <= bud.reserve or bud.advice() == "pause":
                        continue
                    active = True
                    seq = bud.on_request("/v1/me/getpositions")
                    bucket -= 1
                    lowest = min(lowest, bucket)
                    sent[i] += 1
                    if sent[i] % 50 == 1:
                        bud.on_headers({limits.HDR_REMAINING: str(bucket), limits.HDR_PERIOD: "300",
                                        limits.HDR_RESET: reset}, request_seq=seq)
                if not active:
                    break
                if use_server:
                    for c, bud in zip(clients, budgets, strict=True):
                        c.report(0, 0, 0, 0, bud.snapshot())
                    for c in clients:  # every report is applied before the queries (deterministic)
                        await _applied(s, c)
                    replies = await asyncio.gather(*(c.query_budget() for c in clients))
                    assert len({r.remaining for r in replies}) == 1  # every bot gets the same account view
                    for bud, r in zip(budgets, replies, strict=True):
                        assert r.budget is not None
                        bud.apply_account(r.budget)
        finally:
            for c in clients:
                await c.stop()
        return lowest, sent

    alone_lowest, _ = await run(use_server=False)
    assert alone_lowest < 0, "without the server the four bots overdraw the account"
    shared_lowest, shared_sent = await run(use_server=True)
    assert shared_lowest >= 0, f"with the server the account stays under its limit (lowest {shared_lowest})"
    assert sum(shared_sent) >= limits.PRIVATE_LIMIT - 100  # and the budget is still used, not starved
    assert all(n > 0 for n in shared_sent)


async def _applied(s: PosServer, c: PosServerClient) -> None:
    for _ in range(400):
        bot = s.registry.bots.get(c.bot_id)
        if bot is not None and bot.seq == c.last_report_seq:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"report of {c.bot_id} not applied")


async def test_budget_reply_is_none_when_server_unreachable() -> None:
    with socket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        port = tmp.getsockname()[1]
    c = PosServerClient("127.0.0.1", port, SECRET, "lonely", "FX_BTC_JPY", report_interval=0.1, query_interval=0.1,
                        timeout=1.0)
    await c.start()
    c.report(0.0, 0.0, 0.0, 0.0, None)  # the datagram goes nowhere; never raises
    await asyncio.sleep(0.3)
    assert c.account_budget is None  # unknown: the bot falls back to its own budget
    with pytest.raises(PosServerUnavailable):
        await c.query_budget()
    await c.stop()


def test_non_loopback_bind_without_secret_is_refused(tmp_path: Path, fast_config: Any) -> None:
    cfg_file = tmp_path / "trade.yaml"
    cfg_file.write_text("pos_server: ['0.0.0.0', 51000]\n")
    with pytest.raises(ConfigError) as ei:
        load_trade_config(cfg_file)
    assert "pos_server_secret" in str(ei.value) and "\n" not in str(ei.value)
    # A config built in code (no validation) is refused by the server itself.
    cfg = fast_config().model_copy(update={"pos_server_bind": "0.0.0.0",
                                           "pos_server_secret": type(fast_config().pos_server_secret)("")})
    with pytest.raises(ConfigError, match="not loopback"):
        PosServer(cfg, state_dir=tmp_path)
    # The command: one line, exit 2, no traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    r = subprocess.run([sys.executable, "-m", "bfsx.cli", "pos-server", str(cfg_file)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert "pos_server_secret" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


async def test_history_survives_restart_without_reviving_markets(server_factory: Factory, tmp_path: Path,
                                                                wait_for: Any) -> None:
    state = tmp_path / "hist"
    s = await server_factory(state_dir=state)
    c = _client(s, "bot-h", market="BTC_JPY")
    await c.start()
    c.report(0.2, 1.0, 10.0, 0.0, None)
    await wait_for(lambda: "bot-h" in s.registry.bots, what="report")
    await s.check_all()  # REST is down: the exchange is unknown, but the samples are recorded
    assert s.results["BTC_JPY"].exchange is None and "unknown" in s.results["BTC_JPY"].skip_reason
    await c.stop()
    await s.stop()

    s2 = await server_factory(state_dir=state)
    assert (await s2.history.counts())[0] >= 1
    samples = await s2.history.market_samples("BTC_JPY", 0)
    assert samples[-1].position == pytest.approx(0.2)
    # The charts keep their history, but nobody vouches for the market: it is not checked (nor
    # traded) again until a live bot reports it.
    assert s2.registry.markets == {} and s2.registry.bots == {}


def _free_port() -> int:
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u.bind(("127.0.0.1", port))
        return int(port)


async def test_config_reload(server_factory: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                             wait_for: Any) -> None:
    port = _free_port()
    path = tmp_path / "trade.yaml"
    base = (f"apikey: k\nsecret: s\nendpoint: http://127.0.0.1:9\npos_server: ['127.0.0.1', {port}]\n"
            f"pos_server_secret: {SECRET}\nconsole_output: false\npos_server_check_interval: 5\n")
    path.write_text(base + "pos_server_graph_period: 6\n")
    s = await server_factory(load_trade_config(path), config_path=path)
    assert s.port == port
    caplog.set_level(logging.INFO, logger="bfsx.posserver")
    path.write_text(base + "pos_server_graph_period: 12\npos_server_discord_interval: 0.5\n"
                    "pos_server_bitflyer_color: true\nproduct: BTC_JPY\n")
    await wait_for(lambda: s.config.pos_server_graph_period == 12, what="live reload")
    assert s.config.pos_server_discord_interval == 0.5 and s.config.pos_server_bitflyer_color
    assert s.config.product == "FX_BTC_JPY"  # needs a restart: the old value stays
    assert any("needs a restart" in r.getMessage() and "product" in r.getMessage() for r in caplog.records)
    path.write_text(base + "pos_server_graph_period: -3\n")  # invalid: logged, old config kept
    await wait_for(lambda: any("not reloaded" in r.getMessage() for r in caplog.records), what="rejection")
    assert s.config.pos_server_graph_period == 12


async def test_fast_judging_is_no_longer_warned(server_factory: Factory, fast_config: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # Settle rounds (lease_desk.py) make every bot settle before a correction, whatever the check
    # interval: the start-up warning about check_interval × consecutive is gone.
    caplog.set_level(logging.WARNING, logger="bfsx.posserver")
    await server_factory(fast_config(pos_server_check_interval=1, pos_server_consecutive=1))
    assert not any("heals a lost fill" in r.getMessage() for r in caplog.records)
