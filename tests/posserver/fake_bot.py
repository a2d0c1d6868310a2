"""A bot process for the position-server tests: real orders on the simulator, real UDP reports.

    python fake_bot.py SIM_URL API_KEY API_SECRET PORT SECRET BOT_ID MARKET SIDE SIZE [REPORTED_SIZE]

Sends one market order (SIDE SIZE), waits for the fill, then reports REPORTED_SIZE (default SIZE,
signed) as its position every $REPORT_INTERVAL s (default 0.2) until SIGTERM (last report, exit 0) or SIGKILL. Prints
``READY`` once the first report is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from decimal import Decimal

from bfsx.bitflyer.rest import RestClient
from bfsx.posserver.client import PosServerClient


async def main(argv: list[str]) -> int:
    url, key, secret, port, pos_secret, bot, market, side, size = argv[:9]
    reported = Decimal(argv[9]) if len(argv) > 9 else Decimal(size)
    sign = 1 if side == "BUY" else -1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with RestClient(url, key, secret) as rest:
        interval = float(os.environ.get("REPORT_INTERVAL", "0.2"))
        client = PosServerClient("127.0.0.1", int(port), pos_secret, bot, market, report_interval=interval,
                                 query_interval=0.5)
        await client.start()
        client.report(0.0, 0.0, 0.0, 0.0, rest.budget.snapshot())
        if Decimal(size) > 0:
            acc = await rest.send_child_order(market, side, float(size))  # type: ignore[arg-type]
            for _ in range(500):
                rows = await rest.get_child_orders(market, acceptance_id=acc)
                if rows and rows[0]["child_order_state"] == "COMPLETED":
                    break
                await asyncio.sleep(0.02)
            else:
                print("NOT FILLED", flush=True)
                return 1
        client.report(float(sign * reported), 0.0, 0.0, 0.0, rest.budget.snapshot())
        print("READY", flush=True)
        await stop.wait()
        with contextlib.suppress(Exception):
            await client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
