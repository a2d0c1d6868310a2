"""Reading recordings back: what the tests, ``bfsx backtest`` and ``bfsx sim --replay`` replay.

Owns the decoding of the format in :mod:`bfsx.record.format`: zstd stream → lines → records. A file
that ends without its ``close`` line (the recorder was killed, or is still writing it) yields
everything up to its last complete line, then a ``truncated`` :class:`Marker`. Reading a chain of
files (:func:`read_recordings`), a recorder restart between two files becomes a :class:`Gap`
(reason ``restart``) from the last record of one file to the ``open`` line of the next.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from bfsx.record import format as fmt
from bfsx.record.format import Drop, Frame, Gap, Marker, Record

_CHUNK = 1 << 20


def _lines(path: Path) -> Iterator[bytes]:
    """Complete lines of a recording file; a partial last line (cut by a crash) is left out."""
    with path.open("rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        rest = b""
        while True:
            try:
                chunk = reader.read(_CHUNK)
            except zstandard.ZstdError:
                return  # a damaged tail: what came before stands
            if not chunk:
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines


def _record(obj: dict[str, Any]) -> Record:
    t: int = obj["t"]
    ch = obj.get("ch")
    if ch is not None:
        return Frame(t, ch, obj.get("msg"))
    kind = obj.get("mark", "")
    if kind == fmt.MARK_GAP:
        return Gap(t, obj["from_ns"], obj["to_ns"], obj.get("code"), obj.get("reason", ""))
    if kind == fmt.MARK_DROP:
        return Drop(t, obj["frames"], obj["from_ns"], obj["to_ns"])
    return Marker(t, kind, {k: v for k, v in obj.items() if k not in ("t", "mark")})


def read_recording(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Every record of one file in the order written: :class:`Frame` for each channel message,
    :class:`Gap`, :class:`Drop` and :class:`Marker` (``open``, ``disconnect``, ``close``; a
    synthesized ``truncated`` when the file has no ``close`` line). Undecodable lines are skipped.
    """
    p = Path(path)
    loads = orjson.loads
    last_t: int | None = None
    closed = False
    for line in _lines(p):
        if not line:
            continue
        try:
            obj = loads(line)
            rec = _record(obj)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        last_t = rec.recv_ns
        closed = type(rec) is Marker and rec.kind == fmt.MARK_CLOSE
        yield rec
    if not closed:
        yield Marker(last_t or 0, fmt.MARK_TRUNCATED, {"path": str(p)})


def read_recordings(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> Iterator[Record]:
    """The records of several files in the order given, or of a product folder (its files oldest
    first). Between two files, an ``open`` line with reason ``start`` (a new recorder session)
    after earlier records is preceded by a synthesized :class:`Gap` with reason ``restart``."""
    if isinstance(paths, str | os.PathLike):
        folder = Path(paths)
        files: list[Path] = fmt.recording_files(folder) if folder.is_dir() else [folder]
    else:
        files = [Path(p) for p in paths]
    last_t: int | None = None
    for path in files:
        for rec in read_recording(path):
            if (
                last_t is not None and type(rec) is Marker and rec.kind == fmt.MARK_OPEN
                and rec.data.get("reason") == fmt.OPEN_START
            ):
                yield Gap(rec.recv_ns, last_t, rec.recv_ns, None, fmt.GAP_RESTART)
            if type(rec) is not Marker or rec.kind != fmt.MARK_TRUNCATED:
                last_t = rec.recv_ns
            yield rec
