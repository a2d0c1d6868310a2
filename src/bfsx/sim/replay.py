"""``bfsx sim --replay FILE [--speed X]``: a recording made by ``bfsx record`` as the simulator's
upstream (docs/simulator.md#paper-trading-on-a-live-feed).

:class:`ReplayFeed` owns the reading (:func:`bfsx.record.reader.read_recordings`, several files or
product folders merged by receive time) and the pacing: each frame is handed to the
:class:`~bfsx.sim.upstream.UpstreamMarket` when its receive time, counted from the first frame and
divided by ``speed``, has come. A gap, a drop or a disconnect in the recording makes the market
unknown until the next snapshot, as a live upstream dropping does; the end of the recording makes
it unknown for good (the simulator keeps serving: accounts and orders stay readable).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bfsx.errors import UserError
from bfsx.record import format as fmt
from bfsx.record.format import Drop, Frame, Gap, Marker, Record
from bfsx.record.reader import read_recordings
from bfsx.sim.upstream import UpstreamMarket

MAX_SPEED = 1e6
_YIELD_EVERY = 200  # frames handled between two yields to the loop when behind (REST stays served)


def check_speed(speed: float) -> float:
    """``speed`` if it is a finite number in (0, 1e6], else a one-line :class:`UserError`."""
    if not (math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise UserError(f"--speed must be a number > 0 and <= {MAX_SPEED:g} (1 = real time), got {speed:g}")
    return speed


def check_paths(paths: Sequence[str]) -> list[Path]:
    """The recording files or product folders to replay (a folder of product folders, as
    ``bfsx record --out`` makes, stands for all of them), or a one-line :class:`UserError` naming
    the first one that is missing or holds no recording."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"--replay: {raw}: no such file or folder")
        found = [p]
        if p.is_dir() and not fmt.recording_files(p):
            # `bfsx record --out DIR` writes DIR/<PRODUCT>/...: take every product folder in it
            found = sorted(d for d in p.iterdir() if d.is_dir() and fmt.recording_files(d))
            if not found:
                raise UserError(f"--replay: {raw}: no recording files ({fmt.SUFFIX}) in this folder or its product folders")
        for one in found:
            first = next(iter(read_recordings(one)), None)
            if first is None or (type(first) is Marker and first.kind == fmt.MARK_TRUNCATED):
                raise UserError(f"--replay: {one}: not a bfsx recording (no records could be read)")
        out.extend(found)
    return out


def merged(paths: Sequence[Path]) -> Iterator[Record]:
    """The records of every path, merged by receive time (each path's own order kept)."""
    if len(paths) == 1:
        return read_recordings(paths[0])
    return heapq.merge(*(read_recordings(p) for p in paths), key=lambda r: r.recv_ns)


class ReplayFeed:
    """Feeds ``market`` from recordings at ``speed`` times real time. Counters: ``frames`` (handed
    over), ``gaps`` (gaps, drops and disconnects met); ``done`` is set at the end."""

    def __init__(self, market: UpstreamMarket, paths: Sequence[Path], speed: float = 1.0,
                 last_shown_s: float = 0.0) -> None:
        """``last_shown_s``: how long the recording's last book stays shown before the end withdraws
        it (the simulator passes two diff intervals: else a last frame and the end could share one
        published diff, and no client would see the recording's final book)."""
        self.market = market
        self.paths = list(paths)
        self.speed = check_speed(speed)
        self.last_shown_s = last_shown_s
        self.frames = 0
        self.gaps = 0
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-replay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        market = self.market
        handlers: dict[str, Callable[[Any], None] | None] = {}
        first_ns: int | None = None
        started = time.monotonic()
        since_yield = 0
        market.on_connected()
        try:
            for rec in merged(self.paths):
                if first_ns is None:
                    first_ns = rec.recv_ns
                due = started + (rec.recv_ns - first_ns) / fmt.NS_PER_S / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    since_yield = 0
                else:
                    since_yield += 1
                    if since_yield >= _YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                if type(rec) is Frame:
                    handler = handlers.get(rec.channel)
                    if handler is None and rec.channel not in handlers:
                        handler = handlers[rec.channel] = market.handler(rec.channel)
                    if handler is not None:
                        self.frames += 1
                        handler(rec.message)
                elif type(rec) is Gap or type(rec) is Drop:
                    self.gaps += 1
                    market.lose("a gap in the recording")
                elif type(rec) is Marker and rec.kind in (fmt.MARK_DISCONNECT, fmt.MARK_TRUNCATED):
                    if rec.kind == fmt.MARK_DISCONNECT:
                        self.gaps += 1
                    market.lose("a disconnect in the recording" if rec.kind == fmt.MARK_DISCONNECT else "the end of a file")
        except asyncio.CancelledError:
            market.connected = False
            raise
        if self.last_shown_s > 0:
            await asyncio.sleep(self.last_shown_s)
        market.connected = False
        market.lose("the replay has ended")
        market.say(f"replay finished: {self.frames} frames, {self.gaps} gaps")
        self.done.set()
