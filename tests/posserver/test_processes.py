"""Real processes on one simulator account: bot processes (tests/posserver/fake_bot.py) that place
real orders and report over UDP, a ``bfsx sim`` process, and the position server in-process or as
``python3 pos_server.py trade.yaml``.

(c) a bot killed with SIGKILL while holding a position → evicted, then corrected;
(d) the server restarted (SIGTERM → exit 0) mid-run → no wrong correction, totals rebuilt from the
next reports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from bfsx.posserver.client import PosServerUnavailable, query_status
from bfsx.posserver.server import PosServer

SECRET = "pos-secret"
FX = "FX_BTC_JPY"
HERE = Path(__file__).parent
ROOT = HERE.parents[1]


async def _bot(sim: Any, port: int, name: str, side: str, size: str, reported: str | None = None,
               report_interval: float = 0.2) -> asyncio.subprocess.Process:
    args = [sim.url, "demo-key-1", "demo-secret-1", str(port), SECRET, name, FX, side, size]
    if reported is not None:
        args.append(reported)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "fake_bot.py"), *args, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "REPORT_INTERVAL": str(report_interval)})
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"READY", line
    return proc


def _net(sim: Any) -> Decimal:
    return Decimal(repr(sim.state()["accounts"]["demo-key-1"]["positions"][FX]["net"]))


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_c_bot_killed_holding_a_position(sim_process: Any, server_factory: Any, fast_config: Any,
                                               wait_for: Any) -> None:
    server: PosServer = await server_factory(fast_config(endpoint=sim_process.url), startup_grace=0.5)
    holder = await _bot(sim_process, server.port, "holder", "BUY", "0.03")
    other = await _bot(sim_process, server.port, "other", "SELL", "0.01")
    try:
        await wait_for(lambda: len(server.registry.bots) == 2 and server.results.get(FX) is not None
                       and server.results[FX].exchange == server.results[FX].expected == Decimal("0.02"),
                       what="both bots counted and matching")
        checks = server.checks
        await wait_for(lambda: server.checks >= checks + 5, what="quiet checks")
        assert server.counters["corrections"] == 0
        holder.kill()  # SIGKILL: no last report, no cleanup
        await holder.wait()
        await wait_for(lambda: "holder" not in server.registry.bots, what="eviction")
        # The fill can show before the server has read the order's reply (and counted it): wait for both.
        await wait_for(lambda: _net(sim_process) == Decimal("-0.01") and server.counters["corrections"] >= 1,
                       what="correction")
        assert server.counters["corrections"] == 1 and server.counters["evictions"] == 1
        # Invariant 1: exchange = Σ remaining bots' positions + base_position (0).
        assert _net(sim_process) == Decimal("-0.01") == server.registry.expected(FX)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        assert await _stop(other) == 0


async def _status(port: int) -> dict[str, Any] | None:
    try:
        return await query_status("127.0.0.1", port, SECRET, timeout=2)
    except PosServerUnavailable:
        return None


async def test_d_server_restart_mid_run(sim_process: Any, tmp_path: Path, wait_for: Any) -> None:
    from bfsx.net import free_port

    port = free_port()
    cfg = tmp_path / "trade.yaml"
    # Bots report every 1.5 s, slower than 3 checks of 0.3 s: a server that judged right after its
    # restart, before the reports came in, would see Σ bots = 0 against the exchange's 0.02.
    cfg.write_text(
        f"apikey: demo-key-1\nsecret: demo-secret-1\nendpoint: {sim_process.url}\n"
        f"pos_server: ['127.0.0.1', {port}]\npos_server_secret: {SECRET}\nconsole_output: false\n"
        f"log_folder: {tmp_path / 'logs' / 'bot'}\npos_server_check_interval: 0.3\npos_server_consecutive: 3\n"
        "pos_server_evict_after: 20\npos_server_report_interval: 1.5\nadjust_max_size: 0.1\n")

    async def start_server() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "pos_server.py"), str(cfg),
                                                    cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
        await wait_for(lambda: _status(port), timeout=60, what="server up")
        return proc

    server = await start_server()
    bots = [await _bot(sim_process, port, "long", "BUY", "0.03", report_interval=1.5),
            await _bot(sim_process, port, "short", "SELL", "0.01", report_interval=1.5)]
    try:
        async def settled() -> bool:
            st = await _status(port)
            fx = [m for m in st["markets"] if m["market"] == FX] if st else []
            return bool(fx and fx[0]["exchange"] == 0.02 and fx[0]["diff"] == 0 and len(st["bots"]) == 2)  # type: ignore[index]

        await wait_for(settled, what="first server settled")
        assert await _stop(server) == 0  # clean SIGTERM
        server = await start_server()
        first = await _status(port)
        assert first is not None and first["counters"]["corrections"] == 0
        saw_waiting = False

        async def rebuilt() -> bool:
            nonlocal saw_waiting
            st = await _status(port)
            if st is None:
                return False
            fx = [m for m in st["markets"] if m["market"] == FX]
            if fx and "waiting" in fx[0]["skip_reason"]:
                saw_waiting = True
            return bool(fx and len(st["bots"]) == 2 and fx[0]["total"] == 0.02 and fx[0]["diff"] == 0
                        and fx[0]["last_check"] and not fx[0]["skip_reason"])

        await wait_for(rebuilt, what="totals rebuilt from the reports")
        final = await _status(port)
        assert final is not None
        assert saw_waiting  # the market was known (history) but judging was held until the reports
        assert final["counters"]["corrections"] == 0
        assert _net(sim_process) == Decimal("0.02")  # nothing was sent
    finally:
        for b in bots:
            await _stop(b)
        code = await _stop(server)
    assert code == 0
