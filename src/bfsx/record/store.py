"""Where recorded lines go: the day files on disk, and the bounded queue in front of them.

:class:`DayFiles` owns the files: one per product per JST day
(``<out>/<PRODUCT>/<YYYY-MM-DD>[.<part>].jsonl.zst``), each one zstd frame written as a stream whose
compressor is flushed to a complete block every ``flush_s`` seconds, so a crash loses at most the
last unflushed block and a reader decodes everything before it. A session never appends to a file
it did not open: a day that already has a file gets the next part (``2026-12-01.1.jsonl.zst``).
Rotation happens at the first line of a new JST day; retention deletes the product's files older
than ``retention_days`` days whenever a file is opened. All of it is blocking I/O, so it runs only
on the writer thread.

:class:`Store` owns the hand-over from the event loop to that thread: :meth:`Store.put` never
blocks and never waits for the disk. The queue is bounded in lines and in bytes; when it is full the
frame is dropped and counted, and once there is room again a ``drop`` marker saying how many frames
(and which receive times) went missing is queued before the product's next line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from bfsx.record import format as fmt

log = logging.getLogger(__name__)

DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_QUEUE_LINES = 200_000
DEFAULT_FLUSH_S = 1.0
DEFAULT_BLOCK_BYTES = 1024 * 1024  # flush a block early when this much is buffered
_BATCH_LINES = 10_000  # lines written between two looks at the flush clock
DEFAULT_LEVEL = 3  # zstd level: ~100 MB/s per core, within a few % of level 9's size on this data


class Sink(Protocol):
    """What the writer thread writes to (tests wrap :class:`DayFiles` to make it slow)."""

    def write(self, product: str, t_ns: int, line: bytes) -> None:
        """Append one line (newline included) to the product's file of the JST day of ``t_ns``,
        opening (or rotating to) that file first; an empty ``line`` only does the opening."""

    def flush(self) -> None:
        """Make everything written so far decodable from the files (a complete compressed block)."""

    def close(self, t_ns: int) -> None:
        """Write the ``close`` markers, finish the files and close them."""

    def paths(self) -> dict[str, Path]:
        """The file each product is writing now."""


@dataclass
class _OpenFile:
    path: Path
    day: dt.date
    end_ns: int
    fh: IO[bytes]
    cobj: Any  # zstandard.ZstdCompressionObj
    buf: bytearray
    lines: int = 0
    raw_bytes: int = 0


class DayFiles:
    """The recording files of one session (see the module docstring). Not thread-safe: one
    writer thread calls it. ``header``: extra fields of every ``open`` line (the source URL);
    ``channels``: per product, the channels its file holds (written in its ``open`` line)."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        header: dict[str, Any] | None = None,
        channels: dict[str, list[str]] | None = None,
        retention_days: int = 0,
        level: int = DEFAULT_LEVEL,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.header = dict(header or {})
        self.channels = dict(channels or {})
        self.retention_days = retention_days
        self.block_bytes = block_bytes
        self.level = level
        self._open: dict[str, _OpenFile] = {}
        self.files_opened = 0
        self.files_deleted = 0
        self.bytes_written = 0  # compressed bytes, all files of this session
        self.raw_bytes = 0  # the same, uncompressed

    # ---- the Sink protocol -----------------------------------------------------------------

    def write(self, product: str, t_ns: int, line: bytes) -> None:
        f = self._open.get(product)
        if f is None or t_ns >= f.end_ns:
            f = self._rotate(product, t_ns, f)
        if line:  # an empty line only opens the file (Store.touch)
            self._append(f, line)

    def flush(self) -> None:
        for f in self._open.values():
            self._flush(f)

    def close(self, t_ns: int) -> None:
        for product in list(self._open):
            self._finish(self._open.pop(product), t_ns, "stop")

    def paths(self) -> dict[str, Path]:
        return {p: f.path for p, f in self._open.items()}

    # ---- files -----------------------------------------------------------------------------

    def _append(self, f: _OpenFile, line: bytes) -> None:
        f.buf += line
        f.lines += 1
        if len(f.buf) >= self.block_bytes:
            self._flush(f)

    def _flush(self, f: _OpenFile) -> None:
        if not f.buf:
            return
        data = f.cobj.compress(bytes(f.buf)) + f.cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        f.raw_bytes += len(f.buf)
        self.raw_bytes += len(f.buf)
        f.buf.clear()
        f.fh.write(data)
        f.fh.flush()
        self.bytes_written += len(data)

    def _finish(self, f: _OpenFile, t_ns: int, reason: str) -> None:
        self._append(f, fmt.marker_line(t_ns, fmt.MARK_CLOSE, reason=reason, lines=f.lines))
        self._flush(f)
        tail = f.cobj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        f.fh.write(tail)
        self.bytes_written += len(tail)
        f.fh.flush()
        try:
            os.fsync(f.fh.fileno())
        finally:
            f.fh.close()

    def _rotate(self, product: str, t_ns: int, old: _OpenFile | None) -> _OpenFile:
        if old is not None:
            self._finish(old, t_ns, "rotate")
        day = fmt.jst_day(t_ns)
        folder = self.out_dir / product
        folder.mkdir(parents=True, exist_ok=True)
        part = 0
        while True:
            path = folder / fmt.file_name(day, part)
            try:
                fh = path.open("xb")  # exclusive: never append to (or clobber) another session's file
            except FileExistsError:
                part += 1
            else:
                break
        f = _OpenFile(path, day, fmt.day_bounds_ns(day)[1], fh, self._compressor(), bytearray())
        self._open[product] = f
        self.files_opened += 1
        open_line = fmt.marker_line(
            t_ns, fmt.MARK_OPEN, format=fmt.FORMAT, version=fmt.VERSION,
            reason=fmt.OPEN_ROTATE if old is not None else fmt.OPEN_START,
            product=product, day=day.isoformat(), tz="+09:00", channels=self.channels.get(product, []),
            **self.header,
        )
        self._append(f, open_line)
        self._flush(f)  # a file that exists says what it is
        log.info("recording %s to %s", product, path)
        self._expire(folder, day)
        return f

    def _compressor(self) -> Any:
        # One ZstdCompressor per file: a compressor holds one stream's state, so two files sharing
        # one would interleave their streams (and corrupt both).
        return zstandard.ZstdCompressor(level=self.level, write_checksum=True).compressobj()

    def _expire(self, folder: Path, today: dt.date) -> None:
        """Delete this product's files of days before the last ``retention_days`` (0 = keep all)."""
        if self.retention_days <= 0:
            return
        oldest_kept = today - dt.timedelta(days=self.retention_days - 1)
        for p in fmt.recording_files(folder):
            key = fmt.parse_file_name(p.name)
            if key is not None and key[0] < oldest_kept:
                try:
                    p.unlink()
                except OSError as e:
                    log.warning("retention: cannot delete %s: %s", p, e.strerror or e)
                else:
                    self.files_deleted += 1
                    log.info("retention: deleted %s (older than %d days)", p, self.retention_days)


class Store:
    """The bounded queue from the event loop to one writer thread over a :class:`Sink`.

    Loop side: :meth:`put` (frames: dropped and counted when the queue is full),
    :meth:`put_marker` (markers: never dropped; there are few), :meth:`aclose`. Thread side: drain
    the queue into the sink, flush it every ``flush_s`` seconds, close it at the end.

    Counters (read from the loop): ``queued`` (lines accepted), ``dropped`` (frames refused),
    ``drop_markers``, ``written`` (lines the sink took), ``write_errors``, ``queue_bytes`` and
    ``max_queue_bytes_seen`` (high-water mark).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_queue_lines: int = DEFAULT_QUEUE_LINES,
        flush_s: float = DEFAULT_FLUSH_S,
        close_timeout_s: float = 60.0,
    ) -> None:
        self.sink = sink
        self.close_timeout_s = close_timeout_s
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_lines = max_queue_lines
        self.flush_s = flush_s
        self._q: deque[tuple[str, int, bytes]] = deque()
        self._wake = threading.Event()
        self._closing_at: int | None = None  # set by the loop: the close time; the thread finishes
        self._thread: threading.Thread | None = None
        self._closed = False
        # Each counter is written by one thread only (in_ by the loop, out_ by the writer).
        self._in_bytes = 0
        self._out_bytes = 0
        self._pending_drops: dict[str, list[int]] = {}  # product -> [frames, first_ns, last_ns]
        self.queued = 0
        self.dropped = 0
        self.drop_markers = 0
        self.written = 0
        self.write_errors = 0
        self.max_queue_bytes_seen = 0
        self._paths: dict[str, Path] = {}

    # ---- loop side -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bfsx-record-writer", daemon=True)
            self._thread.start()

    @property
    def queue_bytes(self) -> int:
        return self._in_bytes - self._out_bytes

    @property
    def queue_lines(self) -> int:
        return len(self._q)

    def put(self, product: str, t_ns: int, line: bytes) -> bool:
        """Queue one frame line; False (and counted) when the queue is full. Never blocks."""
        q = self._q
        size = len(line)
        if len(q) >= self.max_queue_lines or self._in_bytes - self._out_bytes + size > self.max_queue_bytes:
            self.dropped += 1
            pending = self._pending_drops.get(product)
            if pending is None:
                self._pending_drops[product] = [1, t_ns, t_ns]
            else:
                pending[0] += 1
                pending[2] = t_ns
            return False
        if self._pending_drops:
            self._flush_drops(product, t_ns)
        self._push(product, t_ns, line)
        return True

    def touch(self, product: str, t_ns: int) -> None:
        """Have the product's file opened now (its ``open`` line at ``t_ns``), not at its first line:
        the ``open`` line then says when the session started, even for a quiet market."""
        self._push(product, t_ns, b"")

    def put_marker(self, product: str, t_ns: int, line: bytes) -> None:
        """Queue one marker line; markers go past the bound (there are few, and they must be there)."""
        if self._pending_drops:
            self._flush_drops(product, t_ns)
        self._push(product, t_ns, line)

    def _push(self, product: str, t_ns: int, line: bytes) -> None:
        was_empty = not self._q
        self._q.append((product, t_ns, line))
        self._in_bytes += len(line)
        self.queued += 1
        queued = self._in_bytes - self._out_bytes
        if queued > self.max_queue_bytes_seen:
            self.max_queue_bytes_seen = queued
        if was_empty:
            self._wake.set()

    def _flush_drops(self, product: str, t_ns: int) -> None:
        pending = self._pending_drops.pop(product, None)
        if pending is not None:
            frames, first, last = pending
            self.drop_markers += 1
            self._push(product, t_ns, fmt.marker_line(t_ns, fmt.MARK_DROP, frames=frames, from_ns=first, to_ns=last))

    def paths(self) -> dict[str, Path]:
        """The file each product is writing now (as of the writer's last batch)."""
        return dict(self._paths)

    async def aclose(self, t_ns: int | None = None) -> None:
        """Queue the outstanding drop markers, let the thread write everything and close the
        files (``close`` markers at ``t_ns``), and wait for it off the loop — at most
        ``close_timeout_s``: a disk that hangs must not hang the exit (what is still queued is lost,
        and said so in the log)."""
        if self._closed:
            return
        self._closed = True
        t = time.time_ns() if t_ns is None else t_ns
        for product in list(self._pending_drops):
            self._flush_drops(product, t)
        self._closing_at = t
        self._wake.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, self.close_timeout_s)
            if thread.is_alive():
                log.error("recording writer still busy after %.0fs: %d queued lines lost", self.close_timeout_s,
                          len(self._q))
            self._thread = None
        else:  # never started: write synchronously (tests, or a stop before start)
            self._drain()
            self.sink.close(t)

    # ---- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_s
        while True:
            self._wake.wait(max(0.0, min(next_flush - time.monotonic(), 0.5)))
            self._wake.clear()
            self._drain(_BATCH_LINES)
            if self._q:
                self._wake.set()  # more to do: come straight back after the flush check
            now = time.monotonic()
            if now >= next_flush:
                self._guard(self.sink.flush)
                next_flush = now + self.flush_s
            closing = self._closing_at
            if closing is not None and not self._q:
                self._guard(self.sink.close, closing)
                self._paths = {}
                return

    def _drain(self, limit: int | None = None) -> None:
        q = self._q
        write = self.sink.write
        n = 0
        while q and (limit is None or n < limit):
            n += 1
            product, t_ns, line = q.popleft()
            try:
                write(product, t_ns, line)
            except Exception:
                self._failed()
            else:
                if line:
                    self.written += 1
            self._out_bytes += len(line)
        self._paths = self.sink.paths()

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.write_errors += 1
        n = self.write_errors
        if n <= 10 or n % 1000 == 0:
            log.exception("recording write failed (%d errors so far)", n)
