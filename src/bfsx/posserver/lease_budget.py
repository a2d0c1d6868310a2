"""API budgets that know about leases: the per-IP bucket (:class:`HostBudget`, the server's own)
and a bot's lease on top of its own header view (:class:`LeasedBudget`).

A :class:`LeasedBudget` is what a bot's ``RestClient`` is fed with when a position server is
configured. Its rule, per request kind (private, orders, small orders, per-IP public):

* under a live lease: at most the lease's calls since the snapshot its query carried;
* without one (server unreachable, lease expired, never granted): a fallback share of what was
  last known free, ``free / (bots + 1)`` (:func:`bfsx.posserver.lease.fallback_share`), per
  bucket horizon — never the whole account;
* always also the bot's own header view (:class:`~bfsx.bitflyer.budget.ApiBudget`): a reading
  lower than the lease wins.

A request beyond that is not sent: :meth:`LeasedBudget.on_request` raises :class:`LeaseExhausted`
(an :class:`~bfsx.bitflyer.errors.ApiError` the callers already handle; nothing reached the
exchange). New orders are refused earlier, by :meth:`LeasedBudget.can_order`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bfsx.bitflyer import endpoints, limits
from bfsx.bitflyer.budget import ApiBudget, _Bucket
from bfsx.bitflyer.endpoints import PRIVATE_PREFIX, SMALL_ORDER_PATHS
from bfsx.bitflyer.errors import ApiError
from bfsx.posserver.lease import KINDS, MIN_WANT, UNKNOWN_BOTS, Kind, fallback_share

#: Private calls a new order needs in its lease: itself and, later, its cancel.
ORDER_PRIVATE_CALLS = 2
#: A kind's lease counts as running low (ask for more now) once this fraction of it is used.
ASK_AT_FRACTION = 0.5
#: A refused request asks for more at once only this long after the latest grant: a share does not
#: grow within a term, so asking sooner would only load the server.
REFUSED_REASK_S = 1.0


CANCEL_PATHS = frozenset({endpoints.CANCEL_CHILD_ORDER, endpoints.CANCEL_ALL_CHILD_ORDERS})


class LeaseExhausted(ApiError):
    """Not sent: this bot's lease (or fallback share) of a rate limit is used up."""

    def __init__(self, kind: Kind, path: str = "") -> None:
        super().__init__(0, f"API lease of {kind!r} used up: request not sent", 0, path)
        self.kind: Kind = kind


@dataclass(frozen=True, slots=True)
class IpReading:
    """The per-IP public bucket as one process sees it (wire: LEASE_QUERY ``ip``)."""

    remaining: int
    since: int
    reset: float
    measured: bool

    def to_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "since": self.since, "reset": self.reset, "measured": self.measured}


class HostBudget(ApiBudget):
    """An :class:`ApiBudget` that also tracks the per-IP public bucket (the ``X-RateLimit-*``
    headers of public replies), so the position server can lease it per host."""

    def __init__(self, *, ip_limit: int = limits.IP_LIMIT, **kw: Any) -> None:
        super().__init__(**kw)
        self.public = _Bucket(ip_limit, kw.get("window", limits.WINDOW_SECONDS))
        self._public_seq = 0

    def _count_public(self, path: str, now: float) -> int:
        self._public_seq += 1
        self.public.request(self._public_seq, now)
        return -self._public_seq  # negative: a public request's id (private ones are positive)

    def on_request(self, path: str, *, order_size: float | None = None, now: float | None = None) -> int:
        if path.startswith(PRIVATE_PREFIX):
            return super().on_request(path, order_size=order_size, now=now)
        return self._count_public(path, time.time() if now is None else now)

    def on_headers(self, headers: Mapping[str, str], now: float | None = None, *, private: bool = True,
                   request_seq: int | None = None) -> None:
        if private:
            super().on_headers(headers, now, private=True, request_seq=request_seq)
            return
        r = limits.read_private(headers)  # on a public reply, X-RateLimit-* is the IP's bucket
        if r is not None:
            seq = -request_seq if request_seq is not None and request_seq < 0 else self._public_seq
            self.public.reading(r, time.time() if now is None else now, seq)

    def ip_reading(self, now: float | None = None) -> IpReading:
        t = time.time() if now is None else now
        b = self.public
        return IpReading(b.remaining(t), b.since, b.reset, b.reading_at > 0)

    @property
    def small_sent(self) -> int:
        """Small orders counted since this budget was made (monotonic)."""
        return self._small_sent


@dataclass(slots=True)
class _Allowance:
    """How many calls of one kind may still be made: ``calls`` counted from ``mark`` (the kind's
    counter when it was set), usable until ``until_m`` (monotonic)."""

    calls: int
    mark: int
    until_m: float
    granted: int  # the lease's size (to tell when half of it is used)


class LeasedBudget(HostBudget):
    """A bot's budget under a position server's leases (see the module docstring).

    ``on_low``: called (at most once per grant and kind) when a lease is half used or a request
    had to be refused, so the client asks for more at once. ``clock``: monotonic seconds.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.on_low: Callable[[], None] | None = None
        self._lease: dict[Kind, _Allowance] = {}
        self._fallback: dict[Kind, _Allowance] = {}
        self.granted_at_m = 0.0  # monotonic time of the query of the newest grant (0: never)
        self.free: dict[Kind, int] = {}  # last grant's free pool per kind
        self.bots: int | None = None  # live bots in the last grant
        self.fallback_horizon_s: dict[Kind, float] = {
            "private": float(self.private.window), "orders": float(self.orders.window),
            "small_orders": float(self.small_order_window), "ip": float(self.public.window),
        }
        # Demand: times of calls made or refused, per kind (what the next query asks for).
        self._demand: dict[Kind, deque[float]] = {k: deque(maxlen=4096) for k in KINDS}
        self._low_told: set[Kind] = set()
        self.refused: dict[Kind, int] = dict.fromkeys(KINDS, 0)

    # ------------------------------------------------------------------ counters
    def counter(self, kind: Kind) -> int:
        """Calls of ``kind`` ever counted by this budget."""
        if kind == "private":
            return self.private.sent
        if kind == "orders":
            return self.orders.sent
        if kind == "small_orders":
            return self._small_sent
        return self.public.sent

    def marks(self) -> dict[Kind, int]:
        """Every kind's counter now: taken with the snapshot a lease query carries."""
        return {k: self.counter(k) for k in KINDS}

    # ------------------------------------------------------------------ leases
    def apply_lease(self, calls: Mapping[str, int], *, valid_for_s: float, query_m: float,
                    marks: Mapping[Kind, int], free: Mapping[str, int], bots: int) -> None:
        """A grant arrived for the query sent at ``query_m`` (monotonic) with counters ``marks``:
        each kind's calls are counted from that mark and end ``valid_for_s`` after ``query_m``
        (the query was sent before the server stamped the grant, so this ends no later than the
        server's own view of it, whatever the two clocks say)."""
        if query_m < self.granted_at_m:
            return  # an older query's answer overtaken by a newer one
        until = query_m + max(0.0, valid_for_s)
        self._lease = {k: _Allowance(max(0, int(calls.get(k, 0))), marks.get(k, self.counter(k)), until,
                                     max(0, int(calls.get(k, 0)))) for k in KINDS}
        self.granted_at_m = query_m
        self.free = {k: max(0, int(free.get(k, 0))) for k in KINDS}
        self.bots = max(1, bots)
        self._fallback.clear()  # a later loss of the server starts a fresh fallback from this grant
        self._low_told.clear()

    def used_under_lease(self) -> dict[Kind, int]:
        """Calls made under the current (or last) lease, per kind (the next query's ``used``)."""
        return {k: max(0, self.counter(k) - a.mark) for k, a in self._lease.items()}

    def lease_live(self, now_m: float | None = None) -> bool:
        t = self.clock() if now_m is None else now_m
        return bool(self._lease) and t < next(iter(self._lease.values())).until_m

    def _own_left(self, kind: Kind, now: float) -> int:
        """The bot's own header view of a kind (no lease): what bitFlyer said minus what we sent."""
        if kind == "private":
            return self.private_left(now)
        if kind == "orders":
            return self.order_left(now)
        if kind == "small_orders":
            return max(0, self._small_limit(now) - self.small_orders(now))
        return self.public.remaining(now)

    def _fallback_for(self, kind: Kind, now_m: float, now: float) -> _Allowance:
        a = self._fallback.get(kind)
        if a is None or now_m >= a.until_m:
            if a is None and self.granted_at_m > 0:
                base = self.free.get(kind, 0)  # what the server last knew nobody held
            else:
                base = self._own_left(kind, now)  # never granted, or a new horizon: own readings
            bots = self.bots if self.bots is not None else UNKNOWN_BOTS
            share = fallback_share(base, bots)
            a = self._fallback[kind] = _Allowance(share, self.counter(kind),
                                                  now_m + self.fallback_horizon_s[kind], share)
        return a

    def allowance(self, kind: Kind, now_m: float | None = None, now: float | None = None) -> int:
        """Calls of ``kind`` that may still be made now: the lease (or the fallback share), and
        never more than the bot's own header view."""
        tm = self.clock() if now_m is None else now_m
        t = time.time() if now is None else now
        a = self._lease.get(kind)
        if a is None or tm >= a.until_m:
            a = self._fallback_for(kind, tm, t)
        left = a.calls - (self.counter(kind) - a.mark)
        return max(0, min(left, self._own_left(kind, t)))

    def in_fallback(self, now_m: float | None = None) -> bool:
        """True when no live lease governs this bot (server unreachable, expired, never granted)."""
        return not self.lease_live(now_m)

    def want(self, kind: Kind, window_s: float, now_m: float | None = None) -> int:
        """What to ask for the next ``window_s``: 1.5 × the calls made or refused in the last one."""
        tm = self.clock() if now_m is None else now_m
        d = self._demand[kind]
        while d and d[0] <= tm - window_s:
            d.popleft()
        return MIN_WANT[kind] + math.ceil(1.5 * len(d))

    def _note(self, kinds: tuple[Kind, ...], now_m: float) -> None:
        for k in kinds:
            self._demand[k].append(now_m)

    def _check_low(self, kind: Kind, now_m: float) -> None:
        a = self._lease.get(kind)
        if a is None or kind in self._low_told or now_m >= a.until_m:
            return
        used = self.counter(kind) - a.mark
        if used >= a.granted * ASK_AT_FRACTION:
            self._low_told.add(kind)
            self._tell_low()

    def _tell_low(self) -> None:
        if self.on_low is not None:
            self.on_low()

    def _tell_refused(self, now_m: float) -> None:
        if now_m - self.granted_at_m >= REFUSED_REASK_S:
            self._tell_low()

    # ------------------------------------------------------------------ feeding (RestClient)
    @staticmethod
    def kinds_of(path: str, order_size: float | None, small_order_size: float) -> tuple[Kind, ...]:
        """The buckets one request counts in."""
        if not path.startswith(PRIVATE_PREFIX):
            return ("ip",)
        kinds: tuple[Kind, ...] = ("private",)
        if path in endpoints.ORDER_PATHS:
            kinds += ("orders",)
        if order_size is not None and path in SMALL_ORDER_PATHS and order_size <= small_order_size:
            kinds += ("small_orders",)
        return kinds

    def on_request(self, path: str, *, order_size: float | None = None, now: float | None = None) -> int:
        """Count a request about to be sent, or raise :class:`LeaseExhausted` (then it is not sent)."""
        tm = self.clock()
        t = time.time() if now is None else now
        kinds = self.kinds_of(path, order_size, self.small_order_size)
        self._note(kinds, tm)
        # A cancel reduces exposure: an order left on the book (a bot stopping while its server is
        # gone, its lease used up) is worse than a call beyond the lease. It still must fit what
        # the bot's own header readings say is left, so the exchange's limit itself is never crossed.
        cancel = path in CANCEL_PATHS and super().private_left(t) > 0
        for k in kinds:
            if not cancel and self.allowance(k, tm, t) < 1:
                self.refused[k] += 1
                self._tell_refused(tm)
                raise LeaseExhausted(k, path)
        seq = super().on_request(path, order_size=order_size, now=t)
        for k in kinds:
            self._check_low(k, tm)
        return seq

    def order_refusal(self, size: float, now: float | None = None) -> str | None:
        """A new order fits the bot's own view (:meth:`ApiBudget.order_refusal`) and its lease: room
        for the order and its cancel in the private lease, one order call, one small order if small."""
        t = time.time() if now is None else now
        why = super().order_refusal(size, t)
        if why is not None:
            return why
        tm = self.clock()
        need: list[tuple[Kind, int]] = [("private", ORDER_PRIVATE_CALLS), ("orders", 1)]
        if size <= self.small_order_size:
            need.append(("small_orders", 1))
        short = [k for k, n in need if self.allowance(k, tm, t) < n]
        if short:
            # A refusal is demand the lease did not cover: count it, and ask for more now.
            self._note(tuple(k for k, _ in need), tm)
            self._tell_refused(tm)
            return f"lease from the position server: no {' / '.join(short)} calls left (more asked for)"
        return None
