"""``bfsx record [TRADE_YAML] [--products P ...] [--out DIR]``: the command around the recorder.

Owns what the user sees: which config is used (TRADE_YAML, else ./trade.yaml when present, else
bitFlyer's public endpoint; only ``ws_endpoint``, ``product`` and ``ws_silence_timeout`` are read, no
key is needed), the argument checks (one line, exit 2, via :class:`~bfsx.errors.UserError`), the
status line on stdout every ``status_s`` seconds, and SIGINT/SIGTERM: flush, close the files, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bfsx import aio
from bfsx.bitflyer.products import PRODUCTS, get_product
from bfsx.config.base import DEFAULT_TRADE_YAML, DEFAULT_WS_ENDPOINT
from bfsx.errors import UserError
from bfsx.logs import DATE_FORMAT, LOG_FORMAT, RedactingFormatter
from bfsx.record.recorder import Recorder, channels_of
from bfsx.record.store import DEFAULT_FLUSH_S, DayFiles, Store

DEFAULT_OUT = "recordings"
DEFAULT_RETENTION_DAYS = 30
DEFAULT_STATUS_S = 10.0
DEFAULT_QUEUE_MB = 64.0
DEFAULT_PRODUCT = "FX_BTC_JPY"

log = logging.getLogger(__name__)


def resolve_products(given: Sequence[str] | None, default: str) -> list[str]:
    """The products to record, upper-cased and de-duplicated; unknown codes are a UserError."""
    out: list[str] = []
    for raw in given or [default]:
        for code in raw.split(","):
            code = code.strip()
            if not code:
                continue
            spec = get_product(code)
            if spec is None:
                raise UserError(f"unknown product '{code}'; known: {', '.join(sorted(PRODUCTS))}")
            if spec.code not in out:
                out.append(spec.code)
    if not out:
        raise UserError("--products: give at least one product code, e.g. FX_BTC_JPY")
    return out


def _source(trade_yaml: str | None) -> tuple[str, str, float, str]:
    """(ws_endpoint, default product, silence timeout s, where they came from)."""
    path = trade_yaml
    if path is None and Path(DEFAULT_TRADE_YAML).is_file():
        path = DEFAULT_TRADE_YAML
    if path is None:
        return DEFAULT_WS_ENDPOINT, DEFAULT_PRODUCT, 60.0, "bitFlyer (no trade.yaml)"
    from bfsx.config import load_trade_config

    cfg = load_trade_config(path)  # ConfigError is a UserError: one line naming the file and key
    return cfg.ws_endpoint, cfg.product, cfg.ws_silence_timeout, path


def _positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a number > 0, got {value:g}")


def _prepare_out(out: str) -> Path:
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out '{folder}': cannot create it: {e.strerror or e}") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out '{folder}': not a writable folder")
    return folder


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


class _StatusLine:
    """The periodic status line: frames/s since the last line, drops, gaps, current files."""

    def __init__(self, rec: Recorder, out: Path) -> None:
        self.rec = rec
        self.out = out
        self._frames = rec.frames
        self._t = time.monotonic()

    def line(self) -> str:
        now = time.monotonic()
        st = self.rec.status()
        rate = (st["frames"] - self._frames) / max(1e-6, now - self._t)
        self._frames, self._t = st["frames"], now
        files = []
        for path in st["files"].values():
            p = Path(path)
            with contextlib.suppress(OSError):
                files.append(f"{p.relative_to(self.out) if p.is_relative_to(self.out) else p} {_mb(p.stat().st_size)}")
        state = "connected" if st["connected"] else "DISCONNECTED" if self.rec.client.connects else "connecting"
        errors = f" | {st['write_errors']} write errors" if st["write_errors"] else ""
        return (
            f"{st['frames']:,} frames ({rate:,.0f}/s) | dropped {st['dropped']:,} | gaps {st['gaps']} | {state} | "
            f"queue {_mb(st['queue_bytes'])}{errors} | {', '.join(files) or 'no file yet'}"
        )

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                print(self.line(), flush=True)
            except OSError:  # stdout went away: keep recording, stop printing
                return


def _setup_logging() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


async def _record(rec: Recorder, out: Path, status_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await rec.start()
    status = _StatusLine(rec, out)
    view = asyncio.create_task(status.run(status_s))
    try:
        await stop.wait()
    finally:
        view.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await view
        await rec.stop()
    st = rec.status()
    print(f"stopped: {st['frames']:,} frames, {st['dropped']:,} dropped, {st['gaps']} gaps, "
          f"{rec.store.written:,} lines written to {out}", flush=True)
    return 0


def run_record(
    trade_yaml: str | None,
    products: Sequence[str] | None,
    out: str = DEFAULT_OUT,
    *,
    ws_endpoint: str | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    status_s: float = DEFAULT_STATUS_S,
    flush_s: float = DEFAULT_FLUSH_S,
    queue_mb: float = DEFAULT_QUEUE_MB,
) -> int:
    """``bfsx record``: record until SIGINT/SIGTERM (exit 0). Bad arguments raise ``UserError``."""
    if trade_yaml is not None and not Path(trade_yaml).is_file():
        raise UserError(f"{trade_yaml}: file not found")
    ws_url, default_product, silence_s, where = _source(trade_yaml)
    if ws_endpoint is not None:
        ws_url, where = ws_endpoint, "--ws-endpoint"
    if not ws_url.startswith(("ws://", "wss://")):
        raise UserError(f"ws_endpoint must be a ws:// or wss:// URL, got '{ws_url}'")
    codes = resolve_products(products, default_product)
    if retention_days < 0:
        raise UserError(f"--retention-days must be 0 (keep everything) or more, got {retention_days}")
    _positive("--status-seconds", status_s)
    _positive("--flush-seconds", flush_s)
    _positive("--queue-mb", queue_mb)
    folder = _prepare_out(out)
    sink = DayFiles(
        folder,
        header={"source": ws_url, "recorder": "bfsx record"},
        channels={p: channels_of([p]) for p in codes},
        retention_days=retention_days,
    )
    store = Store(sink, max_queue_bytes=int(queue_mb * 1e6), flush_s=flush_s)
    rec = Recorder(ws_url, codes, store, silence_s=silence_s)
    keep = f"keeping {retention_days} days" if retention_days else "keeping everything"
    print(f"recording {', '.join(codes)} from {ws_url} ({where}) into {folder} (JST days, {keep})", flush=True)
    handler = _setup_logging()
    try:
        return aio.run(_record(rec, folder, status_s))
    finally:
        logging.getLogger().removeHandler(handler)

