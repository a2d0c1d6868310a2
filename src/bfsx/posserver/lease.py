"""Budget leases: the arithmetic both sides of the position server share (docs/ARCHITECTURE.md).

bitFlyer's limits are account-wide (one key's private bucket, the order bucket, the small-order
bucket) or host-wide (the per-IP public bucket), while each bot only sees its own requests and the
header readings of its own replies. Advice computed from those readings lags; N bots that each see
"120 left" can spend 120 each. A lease makes the position server the single authority instead:

    "you may make ``calls`` more requests of kind K until ``until``" (absolute, never a delta)

:class:`LeasePool` is one bucket's book of leases. It is pure (no clock, no I/O): every method takes
``now_s`` and a :class:`PoolView` (what the server knows about the bucket at that moment), so the
sizing rule is unit-tested deterministically.

Sizing rule, per grant to bot ``b`` (all integers, floors)::

    pool    = remaining - reserve                      # never the reserve: the server's own
    pace    = pool · min(1, burst · ttl / horizon)     # spread the pool over the time it lasts
    share_b = water-fill(pace, wants of the live bots)[b] - what b consumed in the last ttl
              (when that is less than one useful quantum, e.g. an order and its cancel: a quantum,
              to ⌊pace / quantum⌋ bots per term in turn)
    avail_b = pool - Σ_{i≠b} outstanding_i             # the safety bound
    calls_b = max(0, min(share_b, avail_b))

``outstanding_i`` is the whole of bot i's current (unexpired) lease, not what is left of it: the
bot's ``remaining`` reading is from the snapshot its query carried, so every call it makes after
that snapshot is charged to the lease and nothing is counted twice short of a newer report (which
only over-counts). Hence at every grant ``Σ outstanding ≤ pool ≤ truth - reserve``: the bots
together can never spend the reserve, whatever their timing, and the server's own corrections
always find it. Expired leases are zero on both sides (the bot measures expiry from when it *sent*
its query, so its lease ends no later than the server's view of it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

Kind = Literal["private", "orders", "small_orders", "ip"]
#: The lease kinds, named as the simulator's ``limits_refused`` counters.
KINDS: Final[tuple[Kind, ...]] = ("private", "orders", "small_orders", "ip")
#: Version of the lease bodies (``v`` in LEASE_QUERY / LEASE_GRANT).
LEASE_VERSION: Final = 1
#: How long a lease is valid. Short, so a bot that goes quiet frees its share soon.
DEFAULT_TTL_S: Final = 5.0
#: How much faster than an even spread over the horizon the bots together may spend.
DEFAULT_BURST: Final = 3.0
#: Calls the server keeps for its own correcting orders, per kind (its polls come on top).
CORRECTION_RESERVE: Final[Mapping[Kind, int]] = {"private": 10, "orders": 4, "small_orders": 3, "ip": 10}
#: A bot asks at least this much, so it can always cancel, settle and poll a little.
MIN_WANT: Final[Mapping[Kind, int]] = {"private": 4, "orders": 1, "small_orders": 1, "ip": 1}
#: The smallest grant that is of use: a new order needs itself and its cancel in the private lease.
QUANTUM: Final[Mapping[Kind, int]] = {"private": 2, "orders": 1, "small_orders": 1, "ip": 1}
#: A bot's fallback divides by this many other bots when it never heard the server's count.
UNKNOWN_BOTS: Final = 9


@dataclass(frozen=True, slots=True)
class PoolView:
    """One bucket as the server sees it now.

    ``remaining``: account-wide (or host-wide) calls left, a lower bound of the truth (every bot's
    reading minus what the others sent since their own, the minimum wins). ``horizon_s``: seconds
    until spent capacity comes back (the fixed window's reset, or the sliding window's length).
    ``reserve``: what only the server may spend (its corrections and its own polls until then).
    """

    remaining: int
    horizon_s: float
    reserve: int

    @property
    def pool(self) -> int:
        return max(0, self.remaining - self.reserve)


@dataclass(frozen=True, slots=True)
class Lease:
    """A grant: ``calls`` more requests until ``until_s`` (the pool's clock)."""

    calls: int
    until_s: float

    def live(self, now_s: float) -> bool:
        return now_s < self.until_s


def water_fill(total: int, wants: Mapping[str, int | None]) -> dict[str, int]:
    """Max-min fair split of ``total`` among ``wants`` (``None`` = no cap): nobody gets more than
    it wants, the rest is shared equally, and what a modest bot leaves goes to the others."""
    out = {b: 0 for b in wants}
    left = max(0, total)
    open_ = list(wants)
    while open_ and left > 0:
        even = left // len(open_)
        capped = [b for b in open_ if wants[b] is not None and (wants[b] or 0) - out[b] <= even]
        if not capped:
            if even == 0:
                # Fewer calls than bots: one each in a stable order (never a fraction).
                for b in sorted(open_)[:left]:
                    out[b] += 1
                return out
            for b in open_:
                out[b] += even
            left -= even * len(open_)
            continue
        for b in capped:
            give = max(0, (wants[b] or 0) - out[b])
            out[b] += give
            left -= give
            open_.remove(b)
    return out


@dataclass(slots=True)
class _Bot:
    want: int | None = None
    lease: Lease | None = None
    consumed: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    seen_s: float = 0.0


class LeasePool:
    """The leases of one bucket (see the module docstring for the rule). Pure: no clock, no I/O."""

    def __init__(self, kind: Kind, *, ttl_s: float = DEFAULT_TTL_S, burst: float = DEFAULT_BURST) -> None:
        if ttl_s <= 0 or burst <= 0:
            raise ValueError("LeasePool: ttl_s and burst must be > 0")
        self.kind: Kind = kind
        self.ttl_s = ttl_s
        self.burst = burst
        self._bots: dict[str, _Bot] = {}

    # ------------------------------------------------------------------ bookkeeping
    def lease(self, bot: str, now_s: float) -> Lease | None:
        """``bot``'s lease if it is still live."""
        b = self._bots.get(bot)
        return b.lease if b is not None and b.lease is not None and b.lease.live(now_s) else None

    def outstanding(self, now_s: float, *, without: str | None = None) -> int:
        """Calls the bots may still make under live leases (at most: whole leases are counted)."""
        return sum(b.lease.calls for name, b in self._bots.items()
                   if name != without and b.lease is not None and b.lease.live(now_s))

    def prune(self, now_s: float, live: Iterable[str]) -> None:
        """Forget bots that are not live and hold no live lease (bounded memory)."""
        keep = set(live)
        for name in [n for n, b in self._bots.items()
                     if n not in keep and (b.lease is None or not b.lease.live(now_s))]:
            del self._bots[name]

    def _consumed(self, b: _Bot, now_s: float) -> int:
        edge = now_s - self.ttl_s
        while b.consumed and b.consumed[0][0] <= edge:
            b.consumed.popleft()
        return sum(n for _, n in b.consumed)

    # ------------------------------------------------------------------ sizing
    def pace(self, view: PoolView) -> int:
        """What all bots together may be granted per lease term."""
        pool = view.pool
        if view.horizon_s <= self.ttl_s:
            return pool
        return math.floor(pool * min(1.0, self.burst * self.ttl_s / view.horizon_s))

    def size(self, bot: str, want: int | None, view: PoolView, live: Iterable[str], now_s: float,
             floor: int = 0) -> int:
        """How many calls ``bot`` would be granted now (nothing is recorded). ``floor``: at least
        this many if the pool has them, whatever the share (the calls a settle request needs)."""
        wants: dict[str, int | None] = {}
        for name in set(live) | {bot}:
            b = self._bots.get(name)
            wants[name] = want if name == bot else (b.want if b is not None else None)
        pace = self.pace(view)
        split = water_fill(pace, wants)
        share = split[bot]
        quantum = QUANTUM[self.kind]
        if share < quantum and (want is None or want >= quantum) and pace >= quantum:
            # Too many bots for an even split to be of use (each would get less than one order's
            # worth): whole quanta instead, to a few bots per term in turn, so none starves.
            order = sorted(wants)
            turn = int(now_s // self.ttl_s) % len(order)
            rotated = order[turn:] + order[:turn]
            n_chosen = pace // quantum
            if bot in rotated[:n_chosen]:
                share = quantum
            else:  # what is left after the quanta: one call each to the next bots in turn
                share = 1 if rotated.index(bot) - n_chosen < pace - n_chosen * quantum else 0
        own = self._bots.get(bot)
        if own is not None:
            share -= self._consumed(own, now_s)
        avail = view.pool - self.outstanding(now_s, without=bot)
        return max(0, min(max(share, floor), avail))

    def grant(self, bot: str, want: int | None, used: int, view: PoolView, live: Iterable[str],
              now_s: float, floor: int = 0) -> Lease:
        """Record ``used`` (calls ``bot`` made under its previous lease) and grant its new lease,
        which replaces the previous one."""
        b = self._bots.setdefault(bot, _Bot())
        b.seen_s = now_s
        if used > 0:
            b.consumed.append((now_s, used))
        calls = self.size(bot, want, view, live, now_s, floor)
        b.want = want
        b.lease = Lease(calls, now_s + self.ttl_s)
        return b.lease

    def free(self, view: PoolView, now_s: float) -> int:
        """The part of the pool no live lease holds (what a bot's fallback share is cut from)."""
        return max(0, view.pool - self.outstanding(now_s))


def fallback_share(base: int, bots: int) -> int:
    """A bot that lost the server spends at most ``base / (bots + 1)`` of what it last knew was
    free: with ``bots`` bots each doing so, ``bots / (bots + 1)`` of it is spent at most, so the
    account is never emptied by the fallback, and never handed out whole to one bot."""
    return max(0, base) // (max(0, bots) + 1)
