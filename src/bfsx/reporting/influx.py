"""InfluxDB 1.x points for Grafana: per-bot and per-market samples at every check.

The position server calls :meth:`InfluxWriter.write_bots` / :meth:`InfluxWriter.write_markets`
from its event loop; they only append to a bounded buffer. A background thread (the ``influxdb``
client is blocking ``requests``) flushes batches, creates the database when missing, and backs off
while the server is unreachable. When the buffer is full the oldest points are dropped and counted:
an outage loses the oldest history, never the loop's time or memory.

Schema (documented in docs/influxdb.md):

- ``bfsx_bot``    tags ``bot``, ``market``; fields ``position``, ``profit``, ``api_remaining`` (int)
- ``bfsx_market`` tags ``market``; fields ``position``, ``profit``, ``price``,
  ``exchange_position``, ``diff`` (= exchange_position - position)
- ``bfsx_account`` no tags; fields ``collateral``, ``open_pnl``, ``require_collateral``,
  ``keep_rate`` (absent while flat), ``pnl_today`` (absent until known), ``bots_pnl``, ``pnl_gap``
  (= pnl_today - bots_pnl), at every margin poll
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError

from bfsx.aio import backoff_delay
from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

__all__ = ["ACCOUNT_MEASUREMENT", "BOT_MEASUREMENT", "MARKET_MEASUREMENT", "InfluxWriter", "account_point",
           "bot_point", "market_point"]

log = logging.getLogger("bfsx.posserver.influx")  # name kept: log lines unchanged by the move

BOT_MEASUREMENT: Final = "bfsx_bot"
MARKET_MEASUREMENT: Final = "bfsx_market"
ACCOUNT_MEASUREMENT: Final = "bfsx_account"

Point = dict[str, Any]


def _put(fields: dict[str, float | int], name: str, value: float | None) -> None:
    # InfluxDB rejects NaN/inf, and a field's type is fixed by its first write: floats stay float.
    if value is not None and math.isfinite(value):
        fields[name] = float(value)


def bot_point(sample: BotSample) -> Point:
    """The ``bfsx_bot`` point of one bot sample (time in ms)."""
    fields: dict[str, float | int] = {}
    _put(fields, "position", sample.position)
    _put(fields, "profit", sample.profit)
    if sample.api_remaining is not None:
        fields["api_remaining"] = int(sample.api_remaining)
    return {
        "measurement": BOT_MEASUREMENT,
        "tags": {"bot": sample.bot, "market": sample.market},
        "time": round(sample.ts * 1000),
        "fields": fields,
    }


def market_point(market: str, sample: MarketSample) -> Point:
    """The ``bfsx_market`` point of one market sample (time in ms)."""
    fields: dict[str, float | int] = {}
    _put(fields, "position", sample.position)
    _put(fields, "profit", sample.profit)
    _put(fields, "price", sample.price)
    if sample.exchange_position is not None:
        _put(fields, "exchange_position", sample.exchange_position)
        _put(fields, "diff", sample.exchange_position - sample.position)
    return {
        "measurement": MARKET_MEASUREMENT,
        "tags": {"market": market},
        "time": round(sample.ts * 1000),
        "fields": fields,
    }


def account_point(sample: AccountSample) -> Point:
    """The ``bfsx_account`` point of one margin poll (time in ms)."""
    fields: dict[str, float | int] = {}
    _put(fields, "collateral", sample.collateral)
    _put(fields, "open_pnl", sample.open_pnl)
    _put(fields, "require_collateral", sample.require_collateral)
    _put(fields, "keep_rate", sample.keep_rate)
    _put(fields, "pnl_today", sample.pnl_today)
    _put(fields, "bots_pnl", sample.bots_pnl)
    if sample.pnl_today is not None:
        _put(fields, "pnl_gap", sample.pnl_today - sample.bots_pnl)
    return {"measurement": ACCOUNT_MEASUREMENT, "tags": {}, "time": round(sample.ts * 1000), "fields": fields}


class InfluxWriter:
    """Buffers points and writes them to InfluxDB 1.x from a background thread.

    The thread starts with the writer. ``max_buffer`` bounds the points waiting to be written (a
    batch in flight is held separately, at most ``batch_size``); :attr:`dropped` counts the oldest
    points discarded to respect it. Call :meth:`close` (or ``await`` :meth:`aclose`) at shutdown to
    flush what is left.
    """

    def __init__(
        self,
        host: str,
        port: int,
        database: str = "bfsx",
        *,
        max_buffer: int = 10_000,
        batch_size: int = 5_000,
        flush_interval: float = 1.0,
        timeout: float = 5.0,
        max_backoff: float = 30.0,
        username: str = "root",
        password: str = "root",
    ) -> None:
        self.host, self.port, self.database = host, port, database
        self._client = InfluxDBClient(
            host=host,
            port=port,
            username=username,
            password=password,
            database=database,
            timeout=timeout,
            retries=1,  # 1 = one attempt: the flusher does its own backoff (0 would retry forever)
        )
        self._max_buffer = max(1, max_buffer)
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        # A lock, not the loop's single-thread rule: this deque is the hand-off between the event
        # loop (producer) and the flusher thread, and held only for appends and pops.
        self._lock = threading.Lock()
        self._buffer: deque[Point] = deque()
        self._stop = threading.Event()
        self._database_ready = False
        self.dropped = 0
        self.written = 0
        self.failures = 0  # consecutive failed flushes
        self.connected: bool | None = None  # None until the first flush attempt
        self._thread = threading.Thread(target=self._run, name=f"bfsx-influx-{host}:{port}", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Points waiting to be written (not counting a batch in flight)."""
        return len(self._buffer)

    # ------------------------------------------------------------------ producer side (the loop)

    def write_bots(self, samples: Sequence[BotSample]) -> None:
        """Queue one ``bfsx_bot`` point per sample. Never blocks on the network."""
        self._enqueue([bot_point(s) for s in samples])

    def write_markets(self, samples_by_market: Mapping[str, Sequence[MarketSample]]) -> None:
        """Queue one ``bfsx_market`` point per sample (``{market: [sample, ...]}``). Never blocks."""
        self._enqueue([market_point(m, s) for m, samples in samples_by_market.items() for s in samples])

    def write_account(self, samples: Sequence[AccountSample]) -> None:
        """Queue one ``bfsx_account`` point per margin sample. Never blocks."""
        self._enqueue([account_point(s) for s in samples])

    def _enqueue(self, points: list[Point]) -> None:
        if not points or self._stop.is_set():
            return
        with self._lock:
            self._buffer.extend(points)
            self._trim()

    def _trim(self) -> None:
        excess = len(self._buffer) - self._max_buffer
        if excess > 0:
            for _ in range(excess):
                self._buffer.popleft()
            self.dropped += excess

    # ------------------------------------------------------------------ flusher thread

    def _take(self) -> list[Point]:
        with self._lock:
            n = min(self._batch_size, len(self._buffer))
            return [self._buffer.popleft() for _ in range(n)]

    def _put_back(self, batch: list[Point]) -> None:
        with self._lock:
            self._buffer.extendleft(reversed(batch))  # back in front, oldest first
            self._trim()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval):
            delay = self._flush()
            if delay:
                self._stop.wait(delay)
        self._flush()  # last chance at close; a dead server just fails once

    def _flush(self) -> float:
        """Write everything buffered; returns a backoff delay after a failure, else 0."""
        while batch := self._take():
            try:
                if not self._database_ready:
                    self._client.create_database(self.database)  # idempotent in 1.x
                    self._database_ready = True
                self._client.write_points(batch, time_precision="ms")
            except InfluxDBClientError as exc:
                if exc.code == 404:  # database dropped under us: create it again, keep the points
                    self._database_ready = False
                    self._put_back(batch)
                    return self._failed(f"database missing ({exc.code})")
                # A 4xx is about the points (e.g. a field type conflict): retrying cannot help.
                with self._lock:
                    self.dropped += len(batch)
                log.warning(
                    "InfluxDB %s:%s refused %d points: %s", self.host, self.port, len(batch), str(exc)[:200]
                )
            except Exception as exc:  # requests' ConnectionError / Timeout, 5xx: keep and retry later
                self._database_ready = False
                self._put_back(batch)
                return self._failed(type(exc).__name__)
            else:
                self.written += len(batch)
                if self.connected is not True:
                    if self.connected is False:
                        log.info(
                            "InfluxDB %s:%s reachable again (%d points dropped so far)",
                            self.host,
                            self.port,
                            self.dropped,
                        )
                    self.connected = True
                self.failures = 0
        return 0.0

    def _failed(self, reason: str) -> float:
        self.failures += 1
        if self.connected is not False:
            log.warning(
                "InfluxDB %s:%s unreachable (%s); buffering up to %d points",
                self.host,
                self.port,
                reason,
                self._max_buffer,
            )
            self.connected = False
        return backoff_delay(self.failures, self._flush_interval, self._max_backoff, jitter=False)

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 10.0) -> None:
        """Stop the flusher after a last flush attempt (blocks up to ``timeout`` seconds)."""
        self._stop.set()
        self._thread.join(timeout)
        self._client.close()

    async def aclose(self, timeout: float = 10.0) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)
