"""The ``bfsx sim`` console line: the touch and last price of every market, executions per second,
realtime connections and the board state, rewritten in place on a terminal, a line now and then
otherwise. Reads the :class:`~bfsx.sim.server.SimServer` it is given; owns only its rate counter.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bfsx.sim.server import SimServer


def _fmt(v: float | int | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


class LiveView:
    """The one-line market view: rewritten in place on a terminal, a line now and then otherwise."""

    def __init__(self, sim: SimServer, tty: bool) -> None:
        self.sim = sim
        self.tty = tty
        self._last_total = sim.executions_total
        self._last_time = time.monotonic()

    def line(self) -> str:
        now = time.monotonic()
        total = self.sim.executions_total
        rate = (total - self._last_total) / max(1e-6, now - self._last_time)
        self._last_total, self._last_time = total, now
        parts = []
        for code, mkt in self.sim.engine.markets.items():
            b = mkt.book
            parts.append(f"{code} {_fmt(b.touch(1))}/{_fmt(b.touch(-1))} last {_fmt(mkt.ltp)}")
        state = self.sim.engine.board_state()
        up = self.sim.upstream_market
        if up is not None:  # paper trading: is the followed book known?
            unknown = [code for code, p in up.products.items() if not p.known]
            state += f" | upstream {'unknown: ' + ', '.join(unknown) if unknown else 'ok'}"
        return " | ".join(parts) + f" | {rate:.0f} exec/s | {len(self.sim._clients)} ws | {state}"

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            line = self.line()
            try:
                if self.tty:
                    width = shutil.get_terminal_size((120, 24)).columns
                    sys.stdout.write("\r\x1b[K" + line[: max(20, width - 1)])
                else:
                    sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except OSError:  # stdout went away (closed pipe): keep serving, stop printing
                return
