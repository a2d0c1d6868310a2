"""The latest ``lightning_ticker_`` message (or REST getticker reply)."""

from __future__ import annotations

import math

from bfsx import clock
from bfsx.bitflyer.messages import Ticker

_INF = math.inf


class TickerState:
    """Holds the newest ticker; fields read as 0.0 / "" until the first one arrives."""

    __slots__ = ("count", "received_at", "ticker")

    def __init__(self) -> None:
        #: The newest ticker as received (None before the first).
        self.ticker: Ticker | None = None
        #: ``clock.monotonic()`` when it arrived (0.0 before the first).
        self.received_at = 0.0
        self.count = 0

    def apply(self, msg: Ticker) -> None:
        """Replace the ticker with a newer one (a message that is not an object is ignored)."""
        if type(msg) is not dict:
            return
        self.ticker = msg
        self.received_at = clock.monotonic()
        self.count += 1

    def _get(self, key: str) -> float:
        v = self.ticker.get(key) if self.ticker is not None else None
        if isinstance(v, bool) or not isinstance(v, int | float):
            return 0.0  # absent, or not a number on the wire
        return float(v) if -_INF < v < _INF else 0.0

    @property
    def ltp(self) -> float:
        return self._get("ltp")

    @property
    def best_bid(self) -> float:
        return self._get("best_bid")

    @property
    def best_ask(self) -> float:
        return self._get("best_ask")

    @property
    def volume(self) -> float:
        return self._get("volume")

    @property
    def state(self) -> str:
        """Board state on the ticker ("RUNNING", "PREOPEN"...); "" before the first ticker."""
        v = self.ticker.get("state") if self.ticker is not None else None
        return v if type(v) is str else ""

    @property
    def timestamp(self) -> str:
        v = self.ticker.get("timestamp") if self.ticker is not None else None
        return v if type(v) is str else ""

    def age(self, now: float | None = None) -> float:
        """Seconds since the last ticker (infinity before the first)."""
        if self.ticker is None:
            return float("inf")
        return (clock.monotonic() if now is None else now) - self.received_at
