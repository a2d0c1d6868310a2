"""Tick-to-order latency through the simulator: bfsx beside a bare aiohttp client.

The simulator runs in this process (``SimServer`` on a uvloop loop) with a recording hook that
costs the simulator nothing when absent: its engine listener is wrapped to stamp
``time.monotonic_ns()`` when each ``lightning_executions_`` frame is published (encoded and queued
to the sockets), and an aiohttp middleware stamps each ``sendchildorder`` request when it reaches
the application. Both stamps come from one clock in one process.

Each client answers every executions frame with one order that names the frame: an IOC buy far
below the market (it never fills) whose price is ``1,000,000 + last exec id % 1,000,000``. A
sample is ``order arrival - frame publication`` for the frame the order names. Frames a client
did not answer (the bfsx runtime coalesces frames that arrive while the previous answer is still
being sent) are no sample.

* **baseline**: a minimal client, ``python -m bench.tick_to_order --baseline``: aiohttp websocket +
  orjson; per executions frame, a task that signs and POSTs the order (no framework). It
  subscribes ``child_order_events`` as bfsx does, and decodes them.
* **bfsx**: a real ``bfsx trade`` process running a three-line strategy::

      def initialize(self): self.on_executions(self.answer)
      async def answer(self, executions):
          await self.buy(0.11, 1_000_000 + executions[-1]["id"] % 1_000_000, time_in_force="IOC")

Both clients run on uvloop (bfsx installs it when present; the baseline does the same, so the
difference is the framework). Rounds alternate (baseline, bfsx, baseline, bfsx, ...) so that load
from other processes on the machine falls on both alike. Target: bfsx p50 <= 1.5x baseline p50.

Run: ``python -m bench.tick_to_order [--rounds N] [--seconds S] [--profile FILE]``
(or ``python -m bench`` for every bench). About 40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

PRODUCT = "FX_BTC_JPY"
KEY, SECRET = "bench-key", "bench-secret-tick-to-order"
PRICE_BASE = 1_000_000  # order price = PRICE_BASE + exec id % ID_MOD: far below the market, never fills
ID_MOD = 1_000_000
ORDER_SIZE = 0.11  # above 0.1 BTC: the small-order limit (100 / min) is not what is measured
ORDER_PATH = "/v1/me/sendchildorder"
REPO = Path(__file__).resolve().parent.parent
MAX_RECORDS = 500_000  # bound on stamps kept per round

STRATEGY = '''\
import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self):
        self.on_executions(self.answer)

    async def answer(self, executions):
        await self.buy(0.11, 1_000_000 + executions[-1]["id"] % 1_000_000, time_in_force="IOC")
'''


# ------------------------------------------------------------------------------ simulator side
class Recorder:
    """Sim-side stamps of one round: frame publication by exec id, order arrival by named id."""

    def __init__(self) -> None:
        self.active = False
        self.frames: dict[int, int] = {}
        self.orders: list[tuple[int, int]] = []
        self.frame_count = 0

    def reset(self) -> None:
        self.frames = {}
        self.orders = []
        self.frame_count = 0

    def latencies_us(self) -> list[float]:
        frames = self.frames
        return [(t - frames[k]) / 1000 for k, t in self.orders if k in frames]


class StampingListener:
    """Wraps the simulator (the engine's listener) to stamp each executions frame it publishes."""

    def __init__(self, sim: Any, recorder: Recorder) -> None:
        self._sim = sim
        self._rec = recorder

    def on_executions(self, product: str, rows: list[dict[str, Any]]) -> None:
        rec = self._rec
        if rec.active and product == PRODUCT and rows and len(rec.frames) < MAX_RECORDS:
            rec.frames[rows[-1]["id"] % ID_MOD] = time.monotonic_ns()
            rec.frame_count += 1
        self._sim.on_executions(product, rows)

    def on_child_events(self, account: Any, events: list[dict[str, Any]]) -> None:
        self._sim.on_child_events(account, events)


def stamping_middleware(recorder: Recorder) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def stamp(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if recorder.active and request.path == ORDER_PATH:
            arrived = time.monotonic_ns()
            body = await request.read()  # cached: the handler reads the same bytes
            with contextlib.suppress(Exception):
                price = orjson.loads(body).get("price")
                if price and len(recorder.orders) < MAX_RECORDS:
                    recorder.orders.append((int(price) - PRICE_BASE, arrived))
        return await handler(request)

    return stamp


def sim_config() -> Any:
    from bfsx.sim.config import SimConfig

    return SimConfig.fast(
        seed=1,
        accounts=[{"api_key": KEY, "api_secret": SECRET, "jpy": 10_000_000_000}],
        limits={"private": 10_000_000, "orders": 10_000_000, "small_orders": 10_000_000},
        # About 200 executions frames per second: one per flow step that has a taker. Tiny takers,
        # so the ladder is not eaten away.
        market={"step_seconds": 0.004, "taker_rate": 500.0, "taker_size_mean": 0.001, "taker_size_max": 0.01},
        account_history=1_000,
    )


# ------------------------------------------------------------------------------ clients
async def _baseline(url: str, ws_url: str, key: str, secret: str) -> None:
    """The bare client: websocket frame → orjson → task → signed POST. No framework."""
    from bfsx.bitflyer import auth, channels  # signing and the channel name only (no runtime)

    executions = channels.executions(PRODUCT)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(keepalive_timeout=60.0, limit=32)
    async with aiohttp.ClientSession(connector=connector) as session, session.ws_connect(ws_url) as ws:
        await ws.send_str(orjson.dumps(
            {"jsonrpc": "2.0", "method": "auth", "params": auth.ws_auth_params(key, secret), "id": 1}).decode())
        await ws.send_str(orjson.dumps([
            {"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": ch}, "id": i}
            for i, ch in ((2, executions), (3, channels.CHILD_ORDER_EVENTS))
        ]).decode())

        async def post(exec_id: int) -> None:
            body = orjson.dumps({
                "product_code": PRODUCT, "child_order_type": "LIMIT", "side": "BUY",
                "price": PRICE_BASE + exec_id % ID_MOD, "size": ORDER_SIZE, "time_in_force": "IOC",
            })
            headers = auth.rest_headers(key, secret, "POST", ORDER_PATH, body)
            headers["Content-Type"] = "application/json"
            async with session.post(url + ORDER_PATH, data=body, headers=headers) as r:
                await r.read()

        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = orjson.loads(msg.data)
            if type(data) is dict and data.get("method") == "channelMessage":
                params = data["params"]
                if params["channel"] == executions:
                    task = loop.create_task(post(params["message"][-1]["id"]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)


def _baseline_main(argv: list[str]) -> int:
    url, ws_url, key, secret = argv
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        client = asyncio.create_task(_baseline(url, ws_url, key, secret))
        await asyncio.wait([client, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        client.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client

    asyncio.run(run())
    return 0


def _client_command(kind: str, sim: Any, workdir: Path, profile: str | None) -> list[str]:
    if kind == "baseline":
        return [sys.executable, "-m", "bench.tick_to_order", "--baseline", sim.url, sim.ws_url, KEY, SECRET]
    (workdir / "answer.py").write_text(STRATEGY)
    (workdir / "answer.yaml").write_text(yaml.safe_dump(
        {"parameters": {}, "subscribe": {"executions": True, "board": False, "ticker": False},
         # The answer is an IOC far below the market, once per frame: the risk checks still run on
         # every order (they are part of the measured path) but with limits this bench never hits.
         "max_order_size": 1, "price_band": 1, "max_orders_per_second": 1000}))
    (workdir / "trade.yaml").write_text(yaml.safe_dump({
        "apikey": KEY, "secret": SECRET, "product": PRODUCT, "endpoint": sim.url, "ws_endpoint": sim.ws_url,
        "console_output": False, "log_folder": str(workdir / "logs"), "bot_name": "tick_to_order",
    }))
    head = [sys.executable]
    if profile:
        head += ["-m", "cProfile", "-o", profile]
    return [*head, "-m", "bfsx.cli", "trade", "trade.yaml", "answer.py", "answer.yaml"]


# ------------------------------------------------------------------------------ rounds
async def _round(kind: str, sim: Any, rec: Recorder, seconds: float, workdir: Path,
                 profile: str | None = None) -> tuple[list[float], int, int]:
    """Run one client for ``seconds`` of measurement; returns (latencies µs, frames, orders)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        *_client_command(kind, sim, workdir, profile), cwd=workdir if kind == "bfsx" else REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        rec.reset()
        rec.active = True
        deadline = time.monotonic() + 30
        while len(rec.orders) < 100:  # started, connected and warmed up
            if proc.returncode is not None or time.monotonic() > deadline:
                err = (await proc.stderr.read()).decode() if proc.stderr else ""
                raise RuntimeError(f"{kind} client did not start answering: {err.strip()[-500:]}")
            await asyncio.sleep(0.05)
        rec.reset()
        await asyncio.sleep(seconds)
        rec.active = False
        return rec.latencies_us(), rec.frame_count, len(rec.orders)
    finally:
        rec.active = False
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _line(name: str, lat: list[float], frames: int, orders: int) -> str:
    return (f"{name:9s} n={len(lat):5d}  p50 {_pct(lat, 0.50):7.0f} µs  p90 {_pct(lat, 0.90):7.0f} µs  "
            f"p99 {_pct(lat, 0.99):7.0f} µs  mean {statistics.fmean(lat):7.0f} µs  "
            f"(answered {orders / max(1, frames):.0%} of {frames} frames)")


async def _bench(rounds: int, seconds: float, profile: str | None) -> dict[str, list[float]]:
    from bfsx.sim.server import SimServer

    rec = Recorder()
    sim = SimServer(sim_config(), host="127.0.0.1", port=0)
    sim.engine.listener = StampingListener(sim, rec)
    sim.app.middlewares.append(stamping_middleware(rec))
    results: dict[str, list[float]] = {"baseline": [], "bfsx": []}
    totals = {k: [0, 0] for k in results}
    await sim.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bfsx-t2o-") as tmp:
            for r in range(rounds):
                for kind in ("baseline", "bfsx"):
                    workdir = Path(tmp) / f"{kind}{r}"
                    workdir.mkdir()
                    prof = profile if (profile and kind == "bfsx" and r == rounds - 1) else None
                    lat, frames, orders = await _round(kind, sim, rec, seconds, workdir, prof)
                    results[kind] += lat
                    totals[kind][0] += frames
                    totals[kind][1] += orders
                    print(f"  round {r + 1} {_line(kind, lat, frames, orders)}", flush=True)
    finally:
        await sim.stop()
    print()
    for kind, lat in results.items():
        print(_line(kind, lat, *totals[kind]))
    ratio = _pct(results["bfsx"], 0.5) / _pct(results["baseline"], 0.5)
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"bfsx / baseline p50: {ratio:.2f}x  ({verdict} the target <= 1.5x); "
          f"p99 ratio {_pct(results['bfsx'], 0.99) / _pct(results['baseline'], 0.99):.2f}x")
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline":
        sys.exit(_baseline_main(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds per client, alternating (default 4)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per round (default 3)")
    ap.add_argument("--profile", default=None, help="cProfile the last bfsx round into this file")
    args = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"tick-to-order: {args.rounds} rounds x {args.seconds:.0f} s per client, simulator in this process")
    asyncio.run(_bench(args.rounds, args.seconds, args.profile))


if __name__ == "__main__":
    main()
