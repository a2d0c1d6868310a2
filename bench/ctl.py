"""The kill switch's delay: from a ``bfsx ctl`` command answered by the server to every bot knowing
its new mode (issue 11: "bots honour a command within one second").

An in-process :class:`~bfsx.posserver.server.PosServer` (no exchange: checks find nothing to do)
and ``--bots`` :class:`~bfsx.posserver.lease_client.LeaseClient` s, each the real bot-side client
with its lease and control loop at the default ``pos_server_control_interval`` (0.5 s), on
loopback. The bench sends ``--commands`` signed CTL_COMMANDs (pause / resume in turn, over TCP as
``bfsx ctl`` does) and for each one measures, per bot, the time from the command's reply to the
bot's ``on_control`` callback seeing the new mode: p50 / p99 / max over all bots and commands.
The runtime applies that mode to its refusal gate in the same callback, so this is the delay of
the gate.

Run: ``python -m bench.ctl [--bots 10] [--commands 20] [--interval 0.5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bfsx import aio
from bfsx.config import TradeConfig
from bfsx.posserver import protocol as p
from bfsx.posserver.client import send_ctl
from bfsx.posserver.lease_budget import LeasedBudget
from bfsx.posserver.lease_client import LeaseClient
from bfsx.posserver.server import PosServer

SECRET = "bench-ctl-secret"
FX = "FX_BTC_JPY"


async def run(bots: int, commands: int, interval_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TradeConfig.model_validate(dict(
            endpoint="http://127.0.0.1:9", pos_server=["127.0.0.1", 51000], pos_server_secret=SECRET,
            console_output=False, pos_server_check_interval=30.0,
        )).model_copy(update={"pos_server": ("127.0.0.1", 0)})
        server = PosServer(cfg, state_dir=Path(tmp) / "state", console=False)
        await server.start()
        seen: dict[str, list[tuple[str, float]]] = {f"bot{i}": [] for i in range(bots)}
        clients = []
        try:
            for name in seen:
                def on_control(reply: p.ControlReply, name: str = name) -> None:
                    log = seen[name]
                    if not log or log[-1][0] != reply.mode:
                        log.append((reply.mode, time.monotonic()))

                c = LeaseClient("127.0.0.1", server.port, SECRET, name, FX, budget=LeasedBudget(),
                                control_interval=interval_s, on_control=on_control)
                await c.start()
                clients.append(c)
            delays: list[float] = []
            for i in range(commands):
                command, mode = ("pause", "pause") if i % 2 == 0 else ("resume", "run")
                await send_ctl("127.0.0.1", server.port, SECRET, command, FX)
                answered = time.monotonic()
                deadline = answered + 10.0
                while not all(log and log[-1][0] == mode for log in seen.values()):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not every bot saw {mode!r} within 10 s")
                    await asyncio.sleep(0.005)
                delays += [max(0.0, log[-1][1] - answered) for log in seen.values()]
                await asyncio.sleep(interval_s * 0.37)  # not in step with the bots' polls
        finally:
            for c in clients:
                await c.stop()
            await server.stop()
    delays.sort()
    return {"p50_ms": 1000 * statistics.median(delays), "p99_ms": 1000 * delays[int(0.99 * (len(delays) - 1))],
            "max_ms": 1000 * delays[-1], "n": float(len(delays)), "queries": float(server.counters["control_queries"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bots", type=int, default=10)
    ap.add_argument("--commands", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.5, help="pos_server_control_interval (s)")
    a = ap.parse_args()
    logging.getLogger("bfsx").setLevel(logging.ERROR)  # every command logs an ALERT line: not the result
    r = aio.run(run(a.bots, a.commands, a.interval))
    print(f"ctl → bot mode, {a.bots} bots × {a.commands} commands, control interval {a.interval:g} s: "
          f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms "
          f"({r['queries']:.0f} control queries answered)")


if __name__ == "__main__":
    main()
