"""API limits of the simulator (bitflyer-api.md §3), as fixed windows started by the first request.

Buckets: per IP (public calls), per key (private calls), per key for order calls, and per key for
small orders (size <= 0.1) with a reduced limit for a penalty period after a breach.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bfsx.bitflyer.limits import LimitReading
from bfsx.sim.config import LimitsConfig


class Window:
    """A fixed window: opens with the first hit, resets ``seconds`` later."""

    __slots__ = ("count", "limit", "seconds", "start")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.start: float | None = None
        self.count = 0

    def _roll(self, now: float) -> None:
        if self.start is None or now >= self.start + self.seconds:
            self.start = now
            self.count = 0

    def hit(self, now: float, limit: int | None = None) -> bool:
        """Count one request; False when it is over the limit (it is then not counted)."""
        self._roll(now)
        if self.count >= (self.limit if limit is None else limit):
            return False
        self.count += 1
        return True

    def reading(self, now: float, wall: float) -> LimitReading:
        self._roll(now)
        assert self.start is not None
        # seconds - elapsed, not (start + seconds) - now: the sum rounds, and a fresh window would
        # then read 300.00000000000006 s left, i.e. a Period header of 301
        left = max(0.0, self.seconds - (now - self.start))
        return LimitReading(
            remaining=max(0, self.limit - self.count),
            period=math.ceil(left),
            reset=math.ceil(wall + left),
        )


class KeyLimits:
    """The buckets of one API key."""

    def __init__(self, cfg: LimitsConfig) -> None:
        self.private = Window(cfg.private, cfg.window_seconds)
        self.orders = Window(cfg.orders, cfg.window_seconds)
        self.small = Window(cfg.small_orders, cfg.small_window_seconds)
        self.penalty_until = -math.inf


class RateLimiter:
    """All buckets. ``clock`` is monotonic time, ``wallclock`` unix time (for the Reset header)."""

    def __init__(
        self,
        cfg: LimitsConfig,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.wallclock = wallclock
        self._ips: dict[str, Window] = {}
        self._keys: dict[str, KeyLimits] = {}

    def ip(self, addr: str) -> Window:
        w = self._ips.get(addr)
        if w is None:
            if len(self._ips) > 10_000:  # bounded: forget idle clients
                self._ips.clear()
            w = self._ips[addr] = Window(self.cfg.ip, self.cfg.window_seconds)
        return w

    def key(self, api_key: str) -> KeyLimits:
        k = self._keys.get(api_key)
        if k is None:
            k = self._keys[api_key] = KeyLimits(self.cfg)
        return k

    def small_order(self, api_key: str, size: float) -> bool:
        """Count an order of ``size`` BTC in the small-order bucket; False when over the limit.

        A breach lowers the limit to ``small_penalty_orders`` for ``small_penalty_seconds``.
        """
        if size > self.cfg.small_order_size:
            return True
        k = self.key(api_key)
        now = self.clock()
        penalised = now < k.penalty_until
        limit = self.cfg.small_penalty_orders if penalised else self.cfg.small_orders
        if k.small.hit(now, limit):
            return True
        if not penalised:
            k.penalty_until = now + self.cfg.small_penalty_seconds
        return False
