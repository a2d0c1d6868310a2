"""The recording file format (docs/recording.md), shared by the writer and the reader.

Owns the names and numbers of the format and nothing that does I/O: the format name and version,
the file naming (``<PRODUCT>/<YYYY-MM-DD>[.<part>].jsonl.zst``, the day in JST), the JST day of a
receive time, the marker kinds, and the record types a reader yields (:class:`Frame`, :class:`Gap`,
:class:`Drop`, :class:`Marker`).

One line of a file is one JSON object:

* a frame: ``{"t": <receive time, ns since the epoch>, "ch": <channel>, "msg": <message>}``, the
  message exactly as bitFlyer sent it in ``params.message``;
* a marker: ``{"t": <ns>, "mark": <kind>, ...}`` with the kinds in :data:`MARKS`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bfsx.bitflyer.timestamps import JST as _JST

FORMAT = "bfsx-recording"
VERSION = 1
SUFFIX = ".jsonl.zst"

JST = _JST  # bitFlyer's day (and every bfsx log and chart) is Japan's: UTC+9, no daylight saving
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
_JST_OFFSET_NS = 9 * 3600 * NS_PER_S

MARK_OPEN = "open"  # first line of every file
MARK_CLOSE = "close"  # last line of a file closed cleanly (stop or daily rotation)
MARK_DISCONNECT = "disconnect"  # the socket closed: nothing is recorded until the next "gap"
MARK_GAP = "gap"  # the socket is back: frames from "from_ns" to "to_ns" were never received
MARK_DROP = "drop"  # frames received but not written (the write queue was full)
MARK_TRUNCATED = "truncated"  # synthesized by the reader: the file ends without a "close" line
MARKS = (MARK_OPEN, MARK_CLOSE, MARK_DISCONNECT, MARK_GAP, MARK_DROP, MARK_TRUNCATED)

OPEN_START = "start"  # an "open" line's "reason": the recorder (re)started: the time before is a gap
OPEN_ROTATE = "rotate"  # the previous day's file closed at midnight JST: no gap
GAP_RESTART = "restart"  # a synthesized gap's "reason": between two recorder sessions

_NAME_RX = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?" + re.escape(SUFFIX) + "$")


def jst_day(t_ns: int) -> dt.date:
    """The JST calendar day of a receive time (ns since the epoch)."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=(t_ns + _JST_OFFSET_NS) // NS_PER_DAY)


def day_bounds_ns(day: dt.date) -> tuple[int, int]:
    """``[start, end)`` of a JST day in ns since the epoch."""
    start = (day - dt.date(1970, 1, 1)).days * NS_PER_DAY - _JST_OFFSET_NS
    return start, start + NS_PER_DAY


def file_name(day: dt.date, part: int = 0) -> str:
    """``2026-12-01.jsonl.zst`` for a day's first file, ``2026-12-01.1.jsonl.zst`` for the next."""
    return f"{day.isoformat()}{f'.{part}' if part else ''}{SUFFIX}"


def parse_file_name(name: str) -> tuple[dt.date, int] | None:
    """``(day, part)`` of a recording file name, ``None`` for any other name."""
    m = _NAME_RX.match(name)
    if m is None:
        return None
    try:
        day = dt.date.fromisoformat(m.group(1))
    except ValueError:
        return None
    return day, int(m.group(2) or 0)


def recording_files(folder: str | Path) -> list[Path]:
    """The recording files of one product folder, oldest first (by day, then part)."""
    found: list[tuple[dt.date, int, Path]] = []
    for p in Path(folder).iterdir():
        key = parse_file_name(p.name)
        if key is not None and p.is_file():
            found.append((*key, p))
    return [p for _, _, p in sorted(found)]


@dataclass(frozen=True, slots=True)
class Frame:
    """One channel message as received: ``recv_ns`` (local wall clock, ns), channel, message."""

    recv_ns: int
    channel: str
    message: Any


@dataclass(frozen=True, slots=True)
class Gap:
    """Nothing was received from ``from_ns`` (the last frame before, or the disconnect) to ``to_ns``
    (the first frame after, or the resubscription): the book must be rebuilt from the next
    snapshot. ``code`` is the websocket close code (1012: maintenance) when one was seen."""

    recv_ns: int
    from_ns: int
    to_ns: int
    code: int | None
    reason: str

    @property
    def seconds(self) -> float:
        return (self.to_ns - self.from_ns) / NS_PER_S


@dataclass(frozen=True, slots=True)
class Drop:
    """``frames`` frames received from ``from_ns`` to ``to_ns`` were not written (slow disk): a
    hole in the data like a gap, although the connection stayed up."""

    recv_ns: int
    frames: int
    from_ns: int
    to_ns: int


@dataclass(frozen=True, slots=True)
class Marker:
    """Any other marker line: ``open``, ``close``, ``disconnect``, ``truncated``, with its fields."""

    recv_ns: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


Record = Frame | Gap | Drop | Marker


def marker_line(t_ns: int, kind: str, **fields: Any) -> bytes:
    """One marker line, newline included: ``{"t": t_ns, "mark": kind, **fields}``."""
    return orjson.dumps({"t": t_ns, "mark": kind, **fields}) + b"\n"
