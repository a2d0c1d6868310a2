"""The test's hands inside a namespace: ``ip netns exec <ns> python probe.py`` reads one command a
line on stdin and answers one JSON line on stdout (``{"ok": ...}`` or ``{"error": "..."}``).

The test process stays in the host's namespace (no address of ours is ever added there), so what
it reads from the simulator or the position server it asks through a probe that lives beside them:

- ``state URL`` → the simulator's ``GET URL/_sim/state``;
- ``status HOST PORT`` → the position server's STATUS_QUERY (secret from ``BFSX_POS_SERVER_SECRET``);
- ``trade URL PRODUCT SIDE SIZE`` → a MARKET order with ``BFSX_APIKEY`` / ``BFSX_SECRET`` (a trade
  no bot knows about); answers the acceptance id or the exchange's error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from typing import Any


async def handle(words: list[str]) -> Any:
    cmd, args = words[0], words[1:]
    if cmd == "state":
        def get() -> Any:
            with urllib.request.urlopen(f"{args[0]}/_sim/state", timeout=10) as r:
                return json.loads(r.read())
        return await asyncio.to_thread(get)
    if cmd == "status":
        from bfsx.posserver.client import query_status

        return await query_status(args[0], int(args[1]), os.environ["BFSX_POS_SERVER_SECRET"], timeout=5)
    if cmd == "trade":
        from bfsx.bitflyer.rest import RestClient

        url, product, side, size = args
        async with RestClient(url, os.environ["BFSX_APIKEY"], os.environ["BFSX_SECRET"]) as rest:
            return await rest.send_child_order(product, side, float(size))  # type: ignore[arg-type]
    raise ValueError(f"unknown command {cmd!r}")


async def main() -> int:
    loop = asyncio.get_running_loop()
    print(json.dumps({"ok": "READY"}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return 0
        words = line.split()
        if not words:
            continue
        try:
            out: dict[str, Any] = {"ok": await handle(words)}
        except Exception as e:  # the test reads the error and decides
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
