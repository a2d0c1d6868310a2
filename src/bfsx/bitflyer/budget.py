"""The API budget: how many requests and orders the account may still send.

bitFlyer limits (docs/bitflyer.md#rate-limits): a private bucket (500 / 5 min per key), an order bucket
(300 / 5 min for sendchildorder + sendparentorder + cancelallchildorders), and a small-order bucket
(orders of size ≤ 0.1: 100 / min, lowered to 10 / min for an hour after a breach). Every private
reply states what is left in the ``X-RateLimit-*`` / ``X-OrderRequest-RateLimit-*`` headers; between
two replies we count locally, so the estimate is "last reading minus what we sent since".

Both header buckets are fixed windows started by the first request (the reply says when the window
resets). When a window has expired without a newer reading, the bucket starts a local window of its
own at the next request, exactly as the exchange would.

One :class:`ApiBudget` per account view: a bot keeps its own (fed by its ``RestClient``) and the
position server combines the bots' :class:`BudgetSnapshot` readings into an account-wide one
(:meth:`ApiBudget.combine`), which each bot then honours via :meth:`ApiBudget.apply_account`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from bfsx import clock
from bfsx.bitflyer import endpoints, limits

Advice = Literal["trade", "slow", "pause"]

#: Two readings whose reset times differ by at most this much describe the same window (the
#: exchange computes ``Reset`` per reply, so it may jitter by a second).
SAME_WINDOW_SLACK = 2.0


class _Bucket:
    """One fixed-window bucket: the last header reading plus the requests sent since it.

    Requests carry a sequence number shared by all buckets of one budget; a reply's reading covers
    the requests up to its own, so those sent later (still in flight) stay counted.
    """

    __slots__ = ("base", "limit", "pending", "reading_at", "reading_seq", "reset", "sent", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.base = limit  # remaining according to the last reading (or a fresh local window)
        self.reset = 0.0  # unix seconds when the window ends; 0 = no window yet
        self.reading_at = 0.0  # when ``base`` came from a header (0 = local estimate only)
        self.reading_seq = 0
        self.sent = 0  # requests ever counted here
        # Sequence numbers of requests not covered by a reading yet. Bounded: within one window no
        # more than ``limit`` requests can be accepted, and a window roll clears it.
        self.pending: deque[int] = deque(maxlen=4 * limit)

    @property
    def since(self) -> int:
        return len(self.pending)

    def _roll(self, now: float) -> None:
        if self.reset and now >= self.reset:
            # Window over: the next request opens a new one with the full limit.
            self.base, self.reset, self.reading_at = self.limit, 0.0, 0.0
            self.pending.clear()

    def request(self, seq: int, now: float) -> None:
        self._roll(now)
        if not self.reset:
            self.reset = now + self.window
        self.pending.append(seq)
        self.sent += 1

    def reading(self, r: limits.LimitReading, now: float, request_seq: int) -> None:
        if request_seq < self.reading_seq:
            return  # an older reply overtaken by a newer one
        self.reading_seq = request_seq
        self.base = r.remaining
        self.reset = float(r.reset) if r.reset else now + r.period
        self.reading_at = now
        pending = self.pending
        while pending and pending[0] <= request_seq:
            pending.popleft()

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.base - len(self.pending))


def _finite(value: Any) -> float:
    """A time from a peer's message: ``float("nan")`` / ``"inf"`` parse, but no budget can rest on them."""
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {value!r}")
    return x


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """The budget readings at one moment: what a bot reports to the position server, and what the
    position server answers with (the account-wide view). Plain numbers, so it travels as JSON."""

    at: float  # unix seconds of the snapshot
    private_remaining: int  # estimate: header reading minus requests sent since
    private_since: int  # requests sent since the reading
    private_reset: float  # unix seconds the private window ends (0 = unknown)
    private_measured: bool  # True: the figure comes from a header reading; False: local count only
    order_remaining: int
    order_since: int
    order_reset: float
    order_measured: bool
    small_orders_last_minute: int
    small_order_limit: int  # 100, or 10 during the penalty hour
    penalty_until: float
    paused_until: float
    advice: Advice = "trade"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetSnapshot:
        """Inverse of :meth:`to_dict`; raises ``KeyError`` / ``ValueError`` / ``TypeError`` on a bad dict."""
        advice = str(d.get("advice", "trade"))
        if advice not in ("trade", "slow", "pause"):
            raise ValueError(f"bad advice {advice!r}")
        return cls(
            at=_finite(d["at"]),
            private_remaining=int(d["private_remaining"]),
            private_since=int(d["private_since"]),
            private_reset=_finite(d["private_reset"]),
            private_measured=bool(d["private_measured"]),
            order_remaining=int(d["order_remaining"]),
            order_since=int(d["order_since"]),
            order_reset=_finite(d["order_reset"]),
            order_measured=bool(d["order_measured"]),
            small_orders_last_minute=int(d["small_orders_last_minute"]),
            small_order_limit=int(d["small_order_limit"]),
            penalty_until=_finite(d["penalty_until"]),
            paused_until=_finite(d["paused_until"]),
            advice=advice,  # type: ignore[arg-type]
        )


class ApiBudget:
    """Tracks the private, order and small-order budgets of one account view.

    Feed it with :meth:`on_request` before every request and :meth:`on_headers` with every reply
    (``RestClient`` does both), and :meth:`on_over_limit` when the exchange says -1.
    Ask :meth:`can_order` before sending an order; cancels are always allowed.
    All ``now`` arguments are wall-clock unix seconds (header reset times are unix seconds).
    """

    def __init__(
        self,
        *,
        private_limit: int = limits.PRIVATE_LIMIT,
        order_limit: int = limits.ORDER_LIMIT,
        window: float = limits.WINDOW_SECONDS,
        small_order_size: float = limits.SMALL_ORDER_SIZE,
        small_order_limit: int = limits.SMALL_ORDER_LIMIT,
        small_order_penalty_limit: int = limits.SMALL_ORDER_PENALTY_LIMIT,
        small_order_window: float = 60.0,
        penalty_seconds: float = limits.SMALL_ORDER_PENALTY_SECONDS,
        reserve: int = 20,
        order_reserve: int = 10,
        small_order_reserve: int = 2,
        pause_seconds: float = 60.0,
        slow_below: float = 0.25,
        account_ttl: float = 60.0,
    ) -> None:
        """``reserve`` / ``order_reserve``: requests kept back for cancels and resyncs; at or below
        them new orders are refused. ``slow_below``: fraction of a limit under which :meth:`advice`
        says "slow". ``pause_seconds``: how long trading pauses after a -1 (over limit) reply.
        ``account_ttl``: an account-wide view not refreshed for this long is dropped."""
        self.private = _Bucket(private_limit, window)
        self.orders = _Bucket(order_limit, window)
        self.small_order_size = small_order_size
        self.small_order_limit = small_order_limit
        self.small_order_penalty_limit = small_order_penalty_limit
        self.small_order_window = small_order_window
        self.penalty_seconds = penalty_seconds
        self.reserve = reserve
        self.order_reserve = order_reserve
        self.small_order_reserve = small_order_reserve
        self.pause_seconds = pause_seconds
        self.slow_below = slow_below
        self.account_ttl = account_ttl
        # Times of small orders in the last window; bounded: more than the limit + 1 is never needed
        # to decide, and the oldest fall out of the window anyway.
        self._small: deque[float] = deque(maxlen=small_order_limit + 1)
        self.penalty_until = 0.0
        self.paused_until = 0.0
        self.over_limit_count = 0
        self._account: BudgetSnapshot | None = None
        self._account_at = 0.0
        self._account_private_sent = 0
        self._account_order_sent = 0
        self._account_small_sent = 0
        self._small_sent = 0
        self._seq = 0

    # ---- feeding ---------------------------------------------------------------------------

    def on_request(self, path: str, *, order_size: float | None = None, now: float | None = None) -> int:
        """Count a request about to be sent. ``order_size``: size of a new order (sendchildorder /
        sendparentorder) for the small-order bucket. Returns the request's sequence number, to hand
        back to :meth:`on_headers` with its reply (0 for a public request, which is not counted)."""
        if not path.startswith(endpoints.PRIVATE_PREFIX):
            return 0
        t = clock.time() if now is None else now
        self._seq += 1
        seq = self._seq
        self.private.request(seq, t)
        if path in endpoints.ORDER_PATHS:
            self.orders.request(seq, t)
        if order_size is not None and path in endpoints.SMALL_ORDER_PATHS and order_size <= self.small_order_size:
            self._small_request(t)
        return seq

    def _small_request(self, now: float) -> None:
        self._prune_small(now)
        self._small.append(now)
        self._small_sent += 1
        # The exchange blocks and then lowers the limit for an hour once the per-minute count is
        # exceeded; mirror that so we stop before the exchange has to tell us.
        if len(self._small) > self._small_limit(now):
            self.penalty_until = now + self.penalty_seconds

    def on_headers(
        self,
        headers: Mapping[str, str],
        now: float | None = None,
        *,
        private: bool = True,
        request_seq: int | None = None,
    ) -> None:
        """Read the rate-limit headers of a reply. ``private=False`` for public replies, whose
        ``X-RateLimit-*`` describe the IP bucket, not the key's (ignored here). ``request_seq``: the
        value :meth:`on_request` returned for this request, so requests still in flight stay counted."""
        if not private:
            return
        t = clock.time() if now is None else now
        seq = self._seq if request_seq is None else request_seq
        r = limits.read_private(headers)
        if r is not None:
            self.private.reading(r, t, seq)
        o = limits.read_orders(headers)
        if o is not None:
            self.orders.reading(o, t, seq)

    def on_over_limit(self, now: float | None = None) -> None:
        """The exchange answered -1 (over the limit): pause new orders for ``pause_seconds``."""
        t = clock.time() if now is None else now
        self.over_limit_count += 1
        self.paused_until = max(self.paused_until, t + self.pause_seconds)

    def apply_account(self, snapshot: BudgetSnapshot, now: float | None = None) -> None:
        """Honour an account-wide view (from the position server): from now on the remaining counts
        are the lower of our own and the account's minus what we sent since receiving it."""
        self._account = snapshot
        self._account_at = clock.time() if now is None else now
        self._account_private_sent = self.private.sent
        self._account_order_sent = self.orders.sent
        self._account_small_sent = self._small_sent
        if snapshot.paused_until > self.paused_until:
            self.paused_until = snapshot.paused_until
        if snapshot.penalty_until > self.penalty_until:
            self.penalty_until = snapshot.penalty_until

    # ---- readings --------------------------------------------------------------------------

    def _prune_small(self, now: float) -> None:
        edge = now - self.small_order_window
        small = self._small
        while small and small[0] <= edge:
            small.popleft()

    def _small_limit(self, now: float) -> int:
        return self.small_order_penalty_limit if now < self.penalty_until else self.small_order_limit

    def _account_view(self, now: float) -> BudgetSnapshot | None:
        a = self._account
        if a is None or now - self._account_at > self.account_ttl:
            return None  # the position server went quiet: our own readings are all we have
        return a

    def private_left(self, now: float | None = None) -> int:
        """Private requests left (the lower of our own and the applied account-wide view)."""
        t = clock.time() if now is None else now
        left = self.private.remaining(t)
        a = self._account_view(t)
        if a is not None and not (a.private_reset and t >= a.private_reset):
            left = min(left, a.private_remaining - (self.private.sent - self._account_private_sent))
        return max(0, left)

    def order_left(self, now: float | None = None) -> int:
        """Order requests left (the lower of our own and the applied account-wide view)."""
        t = clock.time() if now is None else now
        left = self.orders.remaining(t)
        a = self._account_view(t)
        if a is not None and not (a.order_reset and t >= a.order_reset):
            left = min(left, a.order_remaining - (self.orders.sent - self._account_order_sent))
        return max(0, left)

    def small_orders(self, now: float | None = None) -> int:
        """Small orders counted in the last minute (account-wide when an account view is applied)."""
        t = clock.time() if now is None else now
        self._prune_small(t)
        n = len(self._small)
        a = self._account_view(t)
        if a is not None and t - self._account_at < self.small_order_window:
            n = max(n, a.small_orders_last_minute + (self._small_sent - self._account_small_sent))
        return n

    @property
    def private_remaining(self) -> int:
        """Private requests left in the current window (estimate)."""
        return self.private_left()

    @property
    def order_remaining(self) -> int:
        """Order requests left in the current window (estimate)."""
        return self.order_left()

    @property
    def small_orders_last_minute(self) -> int:
        return self.small_orders()

    def paused(self, now: float | None = None) -> bool:
        t = clock.time() if now is None else now
        return t < self.paused_until

    def can_order(self, size: float, now: float | None = None) -> bool:
        """True when a new order of ``size`` fits: not paused, both buckets above their reserve and,
        for a small order, the per-minute count (or the penalty count) not exceeded."""
        return self.order_refusal(size, now) is None

    def order_refusal(self, size: float, now: float | None = None) -> str | None:
        """Why a new order of ``size`` does not fit (the bucket that is short), or None."""
        t = clock.time() if now is None else now
        if t < self.paused_until:
            return f"over-limit pause, {self.paused_until - t:.0f} s left"
        left = self.private_left(t)
        if left <= self.reserve:
            return f"private calls: {left} left, {self.reserve} kept for cancels"
        left = self.order_left(t)
        if left <= self.order_reserve:
            return f"order calls: {left} left, {self.order_reserve} kept"
        if size <= self.small_order_size:
            limit = self._small_limit(t)
            # Keep a small margin below the full limit, except where the limit itself is tiny.
            margin = self.small_order_reserve if limit > 4 * self.small_order_reserve else 0
            if self.small_orders(t) + 1 > limit - margin:
                return f"small orders: {self.small_orders(t)} in the last minute, limit {limit - margin}"
        return None

    def can_cancel(self) -> bool:
        """Cancels are always allowed: they reduce risk, and the reserve exists for them."""
        return True

    def advice(self, now: float | None = None) -> Advice:
        """"pause" when no new order may be sent, "slow" when a bucket is below ``slow_below`` of its
        limit (or in the small-order penalty hour), else "trade"."""
        t = clock.time() if now is None else now
        p, o = self.private_left(t), self.order_left(t)
        if t < self.paused_until or p <= self.reserve or o <= self.order_reserve:
            return "pause"
        if (
            p < self.private.limit * self.slow_below
            or o < self.orders.limit * self.slow_below
            or t < self.penalty_until
            or self.small_orders(t) >= self._small_limit(t) * (1 - self.slow_below)
        ):
            return "slow"
        return "trade"

    def snapshot(self, now: float | None = None) -> BudgetSnapshot:
        """The current readings (own view, not including an applied account view)."""
        t = clock.time() if now is None else now
        self._prune_small(t)
        return BudgetSnapshot(
            at=t,
            private_remaining=self.private.remaining(t),
            private_since=self.private.since,
            private_reset=self.private.reset,
            private_measured=self.private.reading_at > 0,
            order_remaining=self.orders.remaining(t),
            order_since=self.orders.since,
            order_reset=self.orders.reset,
            order_measured=self.orders.reading_at > 0,
            small_orders_last_minute=len(self._small),
            small_order_limit=self._small_limit(t),
            penalty_until=self.penalty_until,
            paused_until=self.paused_until,
            advice=self.advice(t),
        )

    # ---- account-wide ----------------------------------------------------------------------

    @staticmethod
    def _combine_bucket(
        readings: list[tuple[int, int, float, bool]], limit: int, now: float
    ) -> tuple[int, int, float, bool]:
        """``readings``: (remaining, since, reset, measured) per bot. See :meth:`combine`."""
        total_since = sum(r[1] for r in readings)
        live = [r for r in readings if r[2] and now < r[2]]
        # A header reading knows about every bot's requests; a local-only window does not (it
        # starts at this bot's first request, not the account's), so it is used only when no bot
        # holds a reading.
        measured = [r for r in live if r[3]]
        pool = measured or live
        if not pool:
            return max(0, limit - total_since), total_since, 0.0, False
        newest = max(r[2] for r in pool)
        same = [r for r in pool if newest - r[2] <= SAME_WINDOW_SLACK]
        # A bot's ``since`` requests were sent after its reading; whatever window they fell in,
        # charging them to the current one errs on the safe side.
        estimates = [rem - (total_since - since) for rem, since, _, _ in same]
        return max(0, min(estimates)), total_since, newest, bool(measured)

    @classmethod
    def combine(
        cls, snapshots: Iterable[BudgetSnapshot], now: float | None = None, *,
        private_limit: int = limits.PRIVATE_LIMIT, order_limit: int = limits.ORDER_LIMIT,
        small_order_limit: int = limits.SMALL_ORDER_LIMIT,
        small_order_penalty_limit: int = limits.SMALL_ORDER_PENALTY_LIMIT,
        small_order_window: float = 60.0,
    ) -> BudgetSnapshot:
        """The account-wide budget of several bots sharing one account (one API key's buckets).

        Each bot's header reading says what the exchange had left when that bot's reply was built;
        that figure already includes every request any bot sent before it. What it cannot include
        is what was sent after it: the reading bot's own ``since`` (already subtracted in its
        ``*_remaining``) and the other bots' requests since *their* readings. So for each bot ``j``
        whose reading is of the current window::

            estimate_j = remaining_j - Σ_{i≠j} since_i

        and the account-wide remaining is ``min_j estimate_j``. The newest reading's estimate is a
        lower bound of the truth (each other bot's ``since`` counts from its own, older reading, so
        it over-counts and never under-counts) and the minimum is at most that. So N bots that each
        see e.g. 120 left cannot each spend 100: every bot's spending is charged to every other
        bot's figure. Requests sent after a snapshot was taken are unknown here; each bot charges
        its own on top when it applies the result (:meth:`apply_account`).

        Readings of an expired window are dropped; readings whose reset times differ by at most
        ``SAME_WINDOW_SLACK`` seconds are the same window, the newest window wins; header readings
        win over local-only estimates. Small orders are counted per bot, so the account's count is
        their sum (the small-order limit is account-wide, all boards combined); pause and penalty:
        the latest of any bot.
        """
        snaps = list(snapshots)
        t = clock.time() if now is None else now
        p_rem, p_since, p_reset, p_meas = cls._combine_bucket(
            [(s.private_remaining, s.private_since, s.private_reset, s.private_measured) for s in snaps],
            private_limit, t,
        )
        o_rem, o_since, o_reset, o_meas = cls._combine_bucket(
            [(s.order_remaining, s.order_since, s.order_reset, s.order_measured) for s in snaps], order_limit, t
        )
        small = sum(s.small_orders_last_minute for s in snaps if t - s.at < small_order_window)
        penalty = max((s.penalty_until for s in snaps), default=0.0)
        paused = max((s.paused_until for s in snaps), default=0.0)
        small_limit = small_order_penalty_limit if t < penalty else small_order_limit
        combined = BudgetSnapshot(
            at=t, private_remaining=p_rem, private_since=p_since, private_reset=p_reset,
            private_measured=p_meas, order_remaining=o_rem, order_since=o_since, order_reset=o_reset,
            order_measured=o_meas, small_orders_last_minute=small, small_order_limit=small_limit,
            penalty_until=penalty, paused_until=paused,
        )
        # Advice on the combined figures, with the default thresholds of a fresh budget.
        view = cls(private_limit=private_limit, order_limit=order_limit, small_order_limit=small_order_limit,
                   small_order_penalty_limit=small_order_penalty_limit)
        view.apply_account(combined, t)
        return replace(combined, advice=view.advice(t))
