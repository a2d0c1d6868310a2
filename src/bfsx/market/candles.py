"""N-second OHLCV candles built from public prints (what ``Strategy.candles`` serves).

A print belongs to bucket ``floor(epoch(exec_date) / timescale)``; a candle's ``time`` is the
bucket's start in unix seconds (UTC). Seconds without a trade are carried forward (OHLC = previous
close, volumes 0, count 0) so a strategy always sees an unbroken series. The candle still filling
is :attr:`CandleBuilder.current` (unconfirmed); a candle is *confirmed* when a print of a later
bucket arrives, or when :meth:`CandleBuilder.advance` is told that its time is over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from math import floor

from bfsx.bitflyer import timestamps
from bfsx.bitflyer.messages import Execution


@dataclass(slots=True)
class Candle:
    """One bucket of prints. ``time`` is the bucket start (unix seconds, UTC)."""

    time: float
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    count: int = 0


CandleCallback = Callable[[list[Candle]], object]


@lru_cache(maxsize=16)
def _minute_epoch(minute: str) -> int:
    return int(datetime.fromisoformat(minute).replace(tzinfo=UTC).timestamp())


def taker_volumes(batch: Sequence[Execution]) -> tuple[float, float, float]:
    """Taker buy, taker sell and total volume of one executions message (Itayose prints, side "",
    count only in the total)."""
    buy = sell = volume = 0.0
    for e in batch:
        size = e["size"]
        volume += size
        side = e["side"]
        if side == "BUY":
            buy += size
        elif side == "SELL":
            sell += size
    return buy, sell, volume


def epoch_second(stamp: str) -> int:
    """Unix seconds of an exec_date's whole second (``2026-09-23T03:31:27[.fff…][Z]``, UTC).

    The minute is parsed once (cached) and the seconds added; a stamp of another shape falls back
    to the lenient :func:`bfsx.bitflyer.timestamps.parse`.
    """
    try:
        if stamp[16] == ":" and stamp[10] == "T":
            return _minute_epoch(stamp[:16]) + int(stamp[17:19])
    except (IndexError, ValueError):
        pass
    return int(timestamps.parse(stamp).timestamp())


def _fraction(stamp: str) -> float:
    """The sub-second part of an exec_date (``.0873222Z`` → 0.0873222); 0.0 when absent."""
    if len(stamp) > 20 and stamp[19] == ".":
        return float("0" + stamp[19:].rstrip("Z"))
    return 0.0


class CandleBuilder:
    """``timescale``-second candles from prints; keeps the last ``maxlen`` confirmed candles.

    ``callbacks`` are called with :attr:`candles` (oldest first) each time a candle is confirmed.
    Prints older than the current bucket (out of order) are not folded into confirmed candles;
    they are counted in :attr:`late`.
    """

    __slots__ = ("_bucket", "_candles", "_last_bucket", "_last_key", "_last_sec", "_whole", "callbacks", "current",
                 "late", "timescale")

    def __init__(self, timescale: float, maxlen: int, callback: CandleCallback | None = None) -> None:
        if timescale <= 0:
            raise ValueError("CandleBuilder: timescale must be > 0 seconds")
        if maxlen <= 0:
            raise ValueError("CandleBuilder: maxlen must be > 0")
        self.timescale = float(timescale)
        # whole-second timescales bucket on the integer second alone: no fraction parsing
        self._whole = int(timescale) if float(timescale).is_integer() else 0
        self._candles: deque[Candle] = deque(maxlen=maxlen)
        #: The unconfirmed candle of the bucket being filled (None before the first print).
        self.current: Candle | None = None
        self._bucket = -1
        self._last_key = "\x00"  # prefixes no stamp: the first print is always parsed
        self._last_sec = 0
        self._last_bucket = -1
        self.late = 0
        self.callbacks: list[CandleCallback] = [callback] if callback is not None else []

    # ------------------------------------------------------------------ input
    def apply(self, batch: Sequence[Execution]) -> None:
        """Fold one executions message (prints in id order) into the candles."""
        if not batch:
            return
        self.fold(batch, *taker_volumes(batch))

    def fold(self, batch: Sequence[Execution], buy: float, sell: float, volume: float) -> None:
        """:meth:`apply` with the batch's taker buy / sell / total volume already summed.

        The feed sums them once (:class:`~bfsx.market.executions.Executions`) for every builder.
        A batch is usually one taker order, all in one bucket: then the candle is updated once
        for the whole batch.
        """
        if not batch:
            return
        first = batch[0]
        last = batch[-1]
        stamp = first["exec_date"]
        if self._whole and stamp.startswith(self._last_key):
            bucket = self._last_bucket  # same second as the last print: no parsing, no call
        else:
            bucket = self._bucket_of(stamp)
        if last is not first and last["exec_date"] != stamp and self._bucket_of(last["exec_date"]) != bucket:
            self._fold_each(batch)
            return
        cur = self.current
        if bucket != self._bucket or cur is None:
            if bucket < self._bucket:
                self.late += len(batch)
                return
            self._roll(bucket)
            cur = self.current
            assert cur is not None
        high = low = first["price"]
        if last is not first:
            for e in batch:  # a plain loop beats map/max/min at the usual 1-10 prints
                price = e["price"]
                if price > high:
                    high = price
                elif price < low:
                    low = price
        if cur.count:
            if high > cur.high:
                cur.high = high
            if low < cur.low:
                cur.low = low
        else:  # first prints of the bucket (it may be a carried-forward placeholder)
            cur.open = first["price"]
            cur.high = high
            cur.low = low
        cur.close = last["price"]
        cur.volume += volume
        cur.buy_volume += buy
        cur.sell_volume += sell
        cur.count += len(batch)

    def _bucket_of(self, stamp: str) -> int:
        if self._whole:
            if not stamp.startswith(self._last_key):  # consecutive prints usually share the second
                self._last_key = stamp[:19]
                self._last_sec = epoch_second(stamp)
                self._last_bucket = self._last_sec // self._whole
            return self._last_bucket
        if not stamp.startswith(self._last_key):
            self._last_key = stamp[:19]
            self._last_sec = epoch_second(stamp)
        return floor((self._last_sec + _fraction(stamp)) / self.timescale)

    def _fold_each(self, batch: Sequence[Execution]) -> None:
        """Print by print, for a batch that spans buckets."""
        for e in batch:
            bucket = self._bucket_of(e["exec_date"])
            cur = self.current
            if bucket != self._bucket or cur is None:
                if bucket < self._bucket:
                    self.late += 1
                    continue
                self._roll(bucket)
                cur = self.current
                assert cur is not None
            price = e["price"]
            if cur.count:
                if price > cur.high:
                    cur.high = price
                elif price < cur.low:
                    cur.low = price
            else:
                cur.open = cur.high = cur.low = price
            cur.close = price
            size = e["size"]
            cur.volume += size
            side = e["side"]
            if side == "BUY":
                cur.buy_volume += size
            elif side == "SELL":
                cur.sell_volume += size
            cur.count += 1

    def advance(self, now: float) -> None:
        """Confirm every candle whose bucket ended at or before ``now`` (unix seconds).

        Lets empty seconds come out while the market is quiet. Pass the local clock minus an
        allowance for feed latency: a print that arrives for an already confirmed bucket is late.
        """
        cur = self.current
        if cur is None:
            return
        bucket = floor(now / self.timescale)
        if bucket > self._bucket:
            self._roll(bucket)

    def _roll(self, bucket: int) -> None:
        """Confirm the current candle, carry forward empty buckets, open ``bucket``."""
        cur = self.current
        ts = self.timescale
        if cur is None:
            self.current = Candle(bucket * ts, 0.0, 0.0, 0.0, 0.0)
            self._bucket = bucket
            return
        confirmed = [cur]
        close = cur.close
        first_empty = self._bucket + 1
        maxlen = self._candles.maxlen or 1
        # a long gap only needs the empties that still fit in the history
        first_empty = max(first_empty, bucket - maxlen)
        confirmed.extend(Candle(b * ts, close, close, close, close) for b in range(first_empty, bucket))
        self.current = Candle(bucket * ts, close, close, close, close)
        self._bucket = bucket
        candles = self._candles
        callbacks = self.callbacks
        for candle in confirmed:
            candles.append(candle)
            if callbacks:
                snapshot = list(candles)
                for cb in callbacks:
                    cb(snapshot)

    # ------------------------------------------------------------------ output
    @property
    def candles(self) -> list[Candle]:
        """Confirmed candles, oldest first (at most ``maxlen``)."""
        return list(self._candles)

    @property
    def last(self) -> Candle | None:
        """The newest confirmed candle."""
        return self._candles[-1] if self._candles else None

    @property
    def maxlen(self) -> int:
        return self._candles.maxlen or 0

    def __len__(self) -> int:
        return len(self._candles)
