"""What an alert costs the event loop: ``Alerts.emit`` per call, and the loop's lag while the
webhook hangs (a local aiohttp server that never answers) and a flood is emitted.

    python bench/alerts.py [--emits N]

Prints µs per ``emit`` (a message queued; a message suppressed by the per-kind window) and the
worst lateness of a 10 ms ticker on the same loop during the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

from bfsx.reporting.alerts import Alerts


async def _run(emits: int) -> None:
    hold = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        await hold.wait()  # a webhook that hangs
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/webhooks/{id}/{token}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/webhooks/1/token"
    queued = Alerts(url, per_kind_interval_s=0.0, timeout_s=60.0)
    limited = Alerts(url, per_kind_interval_s=3600.0, timeout_s=60.0)
    queued.start()
    limited.start()
    lag_ms = 0.0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal lag_ms
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag_ms = max(lag_ms, (time.perf_counter() - t - 0.01) * 1000)

    stop = asyncio.Event()
    tick = asyncio.get_running_loop().create_task(ticker(stop))
    await asyncio.sleep(0.05)
    try:
        for alerts, what in ((queued, "queued (queue bounded at 100)"), (limited, "suppressed (per-kind window)")):
            t = time.perf_counter()
            for i in range(emits):
                alerts.emit("eviction", f"bot b{i} evicted")
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # let the ticker and the sender run, as a real loop would
            us = (time.perf_counter() - t) / emits * 1e6
            print(f"emit, {what}: {us:.2f} µs per call; queued {alerts.queued}, dropped {alerts.dropped}")
        await asyncio.sleep(0.2)
        print(f"worst lateness of a 10 ms ticker during the floods (webhook hanging): {lag_ms:.1f} ms")
    finally:
        stop.set()
        await tick
        hold.set()
        await queued.close(flush_s=0)
        await limited.close(flush_s=0)
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emits", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(_run(args.emits))


if __name__ == "__main__":
    main()
