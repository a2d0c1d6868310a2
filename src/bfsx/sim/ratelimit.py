"""API limits of the simulator (docs/bitflyer.md#rate-limits), as fixed windows started by the first request.

Buckets: per IP (public calls), per key (private calls), per key for order calls, and per key for
small orders (size <= 0.1) with a reduced limit for a penalty period after a breach. Every refusal
is counted per key and bucket in :class:`RefusalCounts` (``limits_refused`` in ``/_sim/state``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Literal

from bfsx.bitflyer.limits import LimitReading
from bfsx.sim.config import LimitsConfig

Bucket = Literal["private", "orders", "small_orders", "ip"]
BUCKETS: tuple[Bucket, ...] = ("private", "orders", "small_orders", "ip")
ANONYMOUS_PREFIX = "_ip:"
ANONYMOUS_OVERFLOW = "_ip:other"


class RefusalCounts:
    """How many requests each bucket refused with -1, per API key: ``limits_refused`` of
    ``/_sim/state``.

    Counts are cumulative since the simulator started: a window roll gives the budget back but
    does not undo a refusal a client already received. Every configured account key is present
    from the start (all zeros), so a reader can tell "never refused" from "unknown key". A public
    call refused on the IP bucket without a known key is counted under ``"_ip:<address>"``; those
    entries are bounded (``max_anonymous``), later addresses share ``"_ip:other"``.
    """

    __slots__ = ("_anonymous", "_counts", "_max_anonymous")

    def __init__(self, api_keys: Iterable[str] = (), max_anonymous: int = 1024) -> None:
        self._counts: dict[str, dict[str, int]] = {k: dict.fromkeys(BUCKETS, 0) for k in api_keys}
        self._max_anonymous = max_anonymous
        self._anonymous = 0

    def __contains__(self, api_key: object) -> bool:
        return api_key in self._counts

    def add(self, who: str, bucket: Bucket) -> None:
        """Count one refusal of ``bucket`` for ``who`` (an API key or an ``_ip:`` entry)."""
        row = self._counts.get(who)
        if row is None:
            row = self._counts[who] = dict.fromkeys(BUCKETS, 0)
        row[bucket] += 1

    def add_anonymous(self, addr: str) -> None:
        """Count one IP-bucket refusal of a public call that named no known key."""
        who = ANONYMOUS_PREFIX + addr
        if who not in self._counts:
            if self._anonymous >= self._max_anonymous:
                who = ANONYMOUS_OVERFLOW  # bounded: a flood of addresses cannot grow the state
            else:
                self._anonymous += 1
        self.add(who, "ip")

    def count(self, who: str, bucket: Bucket) -> int:
        """Refusals of ``bucket`` for ``who`` so far (0 when never refused)."""
        row = self._counts.get(who)
        return 0 if row is None else row[bucket]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{who: {"private": n, "orders": n, "small_orders": n, "ip": n}}`` (a copy)."""
        return {who: dict(row) for who, row in self._counts.items()}


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
    """All buckets and the count of what they refused (:attr:`refused`).

    ``clock`` is monotonic time, ``wallclock`` unix time (for the Reset header), ``api_keys`` the
    configured accounts (listed in :attr:`refused` from the start).
    """

    def __init__(
        self,
        cfg: LimitsConfig,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        api_keys: Iterable[str] = (),
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.wallclock = wallclock
        self._ips: dict[str, Window] = {}
        self._keys: dict[str, KeyLimits] = {}
        self.refused = RefusalCounts(api_keys)

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

    def hit_ip(self, addr: str, api_key: str | None = None, now: float | None = None) -> bool:
        """Count a public call from ``addr`` in its IP bucket; False when over the limit.

        A refusal is counted for ``api_key`` when the request named a configured account key (the
        bucket is per IP, but the key tells a test whose traffic tripped it), else for the address.
        """
        if self.ip(addr).hit(self.clock() if now is None else now):
            return True
        if api_key is not None and api_key in self.refused:
            self.refused.add(api_key, "ip")
        else:
            self.refused.add_anonymous(addr)
        return False

    def hit_private(self, api_key: str, now: float | None = None) -> bool:
        """Count a private call of ``api_key``; False (and counted as refused) when over the limit."""
        if self.key(api_key).private.hit(self.clock() if now is None else now):
            return True
        self.refused.add(api_key, "private")
        return False

    def hit_orders(self, api_key: str, now: float | None = None) -> bool:
        """Count an order call of ``api_key``; False (and counted as refused) when over the limit."""
        if self.key(api_key).orders.hit(self.clock() if now is None else now):
            return True
        self.refused.add(api_key, "orders")
        return False

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
        self.refused.add(api_key, "small_orders")
        return False
