"""Helpers of the recorder tests (imported as ``record.helpers``): a sink that can be made slow,
and the records of a recording folder picked by type."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from bfsx.record import DayFiles, Recorder, read_recordings
from bfsx.record.format import Drop, Frame, Gap, Marker, Record

FX = "FX_BTC_JPY"

MakeRecorder = Callable[..., Recorder]


class SlowSink:
    """A :class:`DayFiles` whose writes sleep ``delay_s`` while ``slow`` is set: a slow disk."""

    def __init__(self, inner: DayFiles, delay_s: float = 0.05) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.slow = threading.Event()
        self.writes = 0

    def write(self, product: str, t_ns: int, line: bytes) -> None:
        if self.slow.is_set():
            time.sleep(self.delay_s)
        self.writes += 1
        self.inner.write(product, t_ns, line)

    def flush(self) -> None:
        self.inner.flush()

    def close(self, t_ns: int) -> None:
        self.inner.close(t_ns)

    def paths(self) -> dict[str, Path]:
        return self.inner.paths()


def records(folder: Path) -> list[Record]:
    """Every record of one product folder, files chained oldest first."""
    return list(read_recordings(folder))


def frames(recs: list[Record], prefix: str = "") -> list[Frame]:
    return [r for r in recs if isinstance(r, Frame) and r.channel.startswith(prefix)]


def marks(recs: list[Record], kind: str) -> list[Marker]:
    return [r for r in recs if isinstance(r, Marker) and r.kind == kind]


def gaps(recs: list[Record]) -> list[Gap]:
    return [r for r in recs if isinstance(r, Gap)]


def drops(recs: list[Record]) -> list[Drop]:
    return [r for r in recs if isinstance(r, Drop)]
