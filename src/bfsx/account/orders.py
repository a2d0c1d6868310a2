"""This bot's orders, keyed by ``child_order_acceptance_id``, driven by ``child_order_events``.

The runtime POSTs an order without holding any lock, then calls :meth:`OrderTracker.accepted` with
the acceptance id from the reply. Events that arrive before that (they can beat the HTTP reply:
docs/bitflyer.md#child-order-events) are *parked* by acceptance id and applied when the id is
registered; ids that never become known (other bots on the same account) age out after a TTL. Only
ids this bot registered ever produce a :class:`Fill`, so another bot's executions never move this
position.

Each execution is counted once: a bounded set of recent exec ids here, and the journal's unique
``exec_id`` behind it (across restarts). After a reconnect, :meth:`OrderTracker.reconcile` applies
``getchildorders`` rows and private ``getexecutions`` rows (REST ``id`` == WS ``exec_id``).

Gap detection. bitFlyer delivers events in order per connection and loses them only while
disconnected, so ``getexecutions(after=last_exec_id)`` fills a reconnect gap. An event lost *while
connected* (or a fill dropped just before a CANCEL) hides below that cursor, so the tracker also
keeps every terminal order whose fills are not proven complete in :attr:`unsettled_orders`; a
``getchildorders`` row for it settles it, or reveals executed size this bot never counted, listed by
:meth:`OrderTracker.missing_fills` for a targeted ``getexecutions(child_order_acceptance_id=...)``.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Set
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from bfsx import clock as bfsx_clock
from bfsx.bitflyer import states, timestamps
from bfsx.bitflyer.messages import ChildOrder, ChildOrderEvent, PrivateExecution, Side

log = logging.getLogger(__name__)

# Sizes are multiples of 1e-8; anything closer than this is equal.
_EPS = 1e-9


class OrderState(StrEnum):
    """Life of an order as this bot sees it."""

    PENDING = "PENDING"  # sent (or accepted), no ORDER event yet
    ACTIVE = "ACTIVE"  # on the book, nothing filled
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"  # ORDER_FAILED / REJECTED, an API error, or an unknown POST outcome
    REFUSED = "REFUSED"  # refused locally, never sent (see ``reason``)


OPEN_STATES = frozenset({OrderState.PENDING, OrderState.ACTIVE, OrderState.PARTIALLY_FILLED})


def _add(a: float, b: float) -> float:
    """Float sum without binary drift (0.1 + 0.2 == 0.3 here)."""
    return float(Decimal(repr(a)) + Decimal(repr(b)))


@dataclass(slots=True)
class Order:
    """One order of this bot. Numbers are floats as on the wire; ``price`` None is a market order."""

    product: str
    side: Side
    size: float
    price: float | None = None
    order_type: str = "LIMIT"
    acceptance_id: str | None = None
    child_order_id: str | None = None
    filled_size: float = 0.0
    average_price: float = 0.0
    state: OrderState = OrderState.PENDING
    created: float = field(default_factory=lambda: bfsx_clock.time())
    updated: float = 0.0
    reason: str = ""

    @classmethod
    def new(cls, product: str, side: Side | str, size: float, price: float | None = None) -> Order:
        """A not-yet-sent order (state PENDING); LIMIT when ``price`` is given, else MARKET."""
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, not {side!r}")
        now = bfsx_clock.time()
        return cls(
            product=product, side=side, size=size, price=price,
            order_type="MARKET" if price is None else "LIMIT", created=now, updated=now,
        )

    @property
    def outstanding(self) -> float:
        """Size not filled yet (0 once the order is done, whatever filled)."""
        if self.state not in OPEN_STATES:
            return 0.0
        return max(0.0, _add(self.size, -self.filled_size))

    @property
    def is_open(self) -> bool:
        """Sent and possibly still on the book (PENDING, ACTIVE, PARTIALLY_FILLED)."""
        return self.state in OPEN_STATES

    @property
    def is_done(self) -> bool:
        """In a final state: FILLED, CANCELLED, EXPIRED, FAILED or REFUSED."""
        return self.state not in OPEN_STATES

    def refuse(self, reason: str) -> None:
        """Mark as refused locally (never sent); a result for the strategy, not an exception."""
        self.state = OrderState.REFUSED
        self.reason = reason
        self.updated = bfsx_clock.time()

    def fail(self, reason: str) -> None:
        """Mark as failed (rejected by the exchange, or a POST whose outcome is unknown)."""
        self.state = OrderState.FAILED
        self.reason = reason
        self.updated = bfsx_clock.time()

    def _add_fill(self, price: float, size: float) -> None:
        prev = Decimal(repr(self.filled_size))
        new = prev + Decimal(repr(size))
        if new > 0:
            avg = (Decimal(repr(self.average_price)) * prev + Decimal(repr(price)) * Decimal(repr(size))) / new
            self.average_price = float(avg)
        self.filled_size = float(new)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of this bot's orders.

    ``commission`` is as the exchange reports it: quote currency (JPY) on FX, **base currency** on
    spot (see :mod:`bfsx.account.position`). ``sfd`` is signed as reported (negative = paid).
    ``time`` is the exchange's execution time (epoch seconds): it decides the JST day of the PnL.
    """

    exec_id: int
    acceptance_id: str
    side: Side
    price: float
    size: float
    commission: float = 0.0
    sfd: float = 0.0
    time: float = 0.0
    product: str = ""
    child_order_id: str = ""


class IntentState(StrEnum):
    """Outcome of an order intent."""

    OPEN = "OPEN"  # about to be sent, or sent with no known outcome yet
    PLACED = "PLACED"  # the exchange accepted it: ``acceptance_id`` is the order
    FAILED = "FAILED"  # the exchange refused it (an error reply)
    NOT_PLACED = "NOT_PLACED"  # no reply, and no matching order by the end of the lookup window
    UNKNOWN = "UNKNOWN"  # the lookup could not tell (several matching orders): not adopted


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order POST as journaled before it is sent: what a lookup needs to find the order it became."""

    intent_id: str
    product: str
    side: Side
    order_type: str
    size: float
    price: float | None
    sent_at: float

    @classmethod
    def new(cls, product: str, side: Side, size: float, price: float | None) -> OrderIntent:
        """A fresh intent (random local id, sent now); LIMIT when ``price`` is given, else MARKET."""
        return cls(uuid.uuid4().hex, product, side, "MARKET" if price is None else "LIMIT", size, price, bfsx_clock.time())


class _Parked:
    __slots__ = ("events", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.events: list[ChildOrderEvent] = []


class _KnownIds(Set[str]):
    """Zero-copy view of every acceptance id the tracker knows (open and recently done)."""

    __slots__ = ("_t",)

    def __init__(self, tracker: OrderTracker) -> None:
        self._t = tracker

    def __contains__(self, key: object) -> bool:
        return key in self._t._open or key in self._t._done

    def __iter__(self) -> Iterator[str]:
        yield from list(self._t._open)
        yield from list(self._t._done)

    def __len__(self) -> int:
        return len(self._t._open) + len(self._t._done)


class OrderTracker:
    """Orders of one bot on one product, keyed by acceptance id. Single-threaded (the loop's).

    Bounds: ``max_done`` finished orders remembered (late events for older ones are treated as
    foreign), ``max_unsettled`` finished orders awaiting REST proof, ``max_seen`` recent exec ids
    (the journal dedupes beyond that), ``max_parked_events`` parked events in all, each id parked at
    most ``park_ttl`` seconds.
    """

    def __init__(
        self,
        product: str,
        *,
        park_ttl: float = 60.0,
        max_parked_events: int = 10_000,
        max_done: int = 10_000,
        max_unsettled: int = 2_000,
        max_seen: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.product = product
        self.park_ttl = park_ttl
        self.max_parked_events = max_parked_events
        self.max_done = max_done
        self.max_unsettled = max_unsettled
        self._clock = clock if clock is not None else bfsx_clock.monotonic  # the runtime's clock
        self._open: dict[str, Order] = {}
        self._done: OrderedDict[str, Order] = OrderedDict()
        self._unsettled: OrderedDict[str, Order] = OrderedDict()
        self._missing: dict[str, float] = {}  # acceptance id -> executed size the exchange reports
        self._parked: OrderedDict[str, _Parked] = OrderedDict()
        self._parked_events = 0
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque(maxlen=max_seen)
        self._known = _KnownIds(self)
        # Before and between events: POSTs whose reply is not seen yet, POSTs of unknown outcome
        # (intents), and cancels asked for / accepted. Held here so one object owns every state an
        # order of this bot can be in.
        self._in_flight = 0
        self.sends = 0
        """Order POSTs this run sent (replied or not): a lookup compares it before and after."""
        self._intents: dict[str, OrderIntent] = {}
        self._cancel_asked: dict[str, float] = {}  # acceptance id -> clock time of the first request
        self._cancel_sent: dict[str, float] = {}  # acceptance id -> clock time of the latest accepted cancel
        self.last_exec_id: int | None = None
        """Highest exec id among this bot's counted fills: the ``getexecutions(after=...)`` cursor."""
        # Counters for logs and consoles.
        self.duplicates = 0
        self.foreign_dropped = 0
        self.parked_applied = 0

    # ------------------------------------------------------------------ views
    @property
    def open_orders(self) -> list[Order]:
        """Orders that may still be on the book (a fresh list, oldest first)."""
        return list(self._open.values())

    @property
    def unsettled_orders(self) -> list[Order]:
        """What a resync should look up with ``getchildorders``: the open orders, and finished
        orders whose fills are not proven complete (ended by CANCEL / EXPIRE, or FILLED with a fill
        missing). A matching row settles them."""
        return [*self._open.values(), *self._unsettled.values()]

    def missing_fills(self) -> list[str]:
        """Acceptance ids whose ``getchildorders`` row shows more executed size than this bot
        counted: fetch ``getexecutions(child_order_acceptance_id=...)`` for each and reconcile."""
        return list(self._missing)

    def outstanding(self, side: str) -> float:
        """Unfilled size of this bot's open orders on ``side`` (no list is built: the refusal gate
        asks on every order)."""
        return sum(o.outstanding for o in self._open.values() if o.side == side)

    def get(self, acceptance_id: str) -> Order | None:
        """The order with this acceptance id, open or recently done."""
        return self._open.get(acceptance_id) or self._done.get(acceptance_id)

    def known_ids(self) -> Set[str]:
        """Every acceptance id this tracker knows, as a live zero-copy view (for the REST client's
        lost-reply lookup, so another in-flight order of this bot is not mistaken for the lost one)."""
        return self._known

    @property
    def parked(self) -> int:
        """Acceptance ids with parked events (not registered yet, or another bot's)."""
        return len(self._parked)

    # ------------------------------------------------------------------ sent, reply not yet seen
    def sending(self) -> None:
        """An order POST is about to go out (a strategy order or a correction)."""
        self.sends += 1
        self._in_flight += 1

    def reply_seen(self) -> None:
        """The POST announced by :meth:`sending` ended (accepted, refused or failed)."""
        self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        """Order POSTs sent whose reply is not seen yet."""
        return self._in_flight

    # ------------------------------------------------------------------ intents (outcome unknown)
    def add_intent(self, intent: OrderIntent) -> None:
        """An order POST whose outcome is unknown (no reply, a gateway error, a restart)."""
        self._intents[intent.intent_id] = intent

    def holds_intent(self, intent: OrderIntent) -> bool:
        """True while this very intent is still waiting for its outcome."""
        return self._intents.get(intent.intent_id) is intent

    def drop_intent(self, intent_id: str) -> None:
        """The intent's outcome is known (adopted, not placed, or given up as ambiguous)."""
        self._intents.pop(intent_id, None)

    @property
    def intents(self) -> list[OrderIntent]:
        """Order POSTs of unknown outcome, oldest first (a fresh list)."""
        return list(self._intents.values())

    # ------------------------------------------------------------------ pending cancels
    def cancel_recently_sent(self, acceptance_id: str, repeat_after: float) -> bool:
        """True when a cancel of this order was accepted less than ``repeat_after`` s ago: its CANCEL
        event is on the way, so another request would only spend budget."""
        sent = self._cancel_sent.get(acceptance_id)
        return sent is not None and self._clock() - sent < repeat_after

    def cancel_accepted(self, acceptance_id: str) -> None:
        """The exchange accepted a cancel of this order (its CANCEL event is still to come)."""
        if len(self._cancel_asked) >= 10_000:  # bounded; pruned by stuck_orders
            return
        now = self._clock()
        self._cancel_asked.setdefault(acceptance_id, now)
        self._cancel_sent[acceptance_id] = now

    def stuck_orders(self, audit_after: float, repeat_after: float) -> list[str]:
        """Open orders whose events look lost: no ORDER event ``audit_after`` s after acceptance, or
        still open that long after a cancel was accepted. A resting order with no news is not
        suspect. Also forgets cancels of orders that ended and cancel sends older than
        ``repeat_after``, so both maps stay bounded."""
        now = self._clock()
        wall = bfsx_clock.time()
        stuck = []
        for o in self._open.values():
            acc = o.acceptance_id
            if not acc:
                continue
            asked = self._cancel_asked.get(acc)
            if (asked is not None and now - asked > audit_after) or (
                o.state == OrderState.PENDING and wall - o.created > audit_after
            ):
                stuck.append(acc)
        for acc in [a for a in self._cancel_asked if a not in self._open]:
            del self._cancel_asked[acc]
        for acc in [a for a, at in self._cancel_sent.items() if now - at >= repeat_after]:
            del self._cancel_sent[acc]
        return stuck

    # ------------------------------------------------------------------ registration
    def accepted(self, order: Order) -> list[Fill]:
        """Register ``order`` under its acceptance id (the HTTP reply arrived) and apply any events
        parked for it; returns the new fills among them, in event order."""
        acc = order.acceptance_id
        if not acc:
            raise ValueError("accepted(): the order has no acceptance_id")
        if acc in self._open or acc in self._done:
            return []
        if order.state in OPEN_STATES:
            self._open[acc] = order
        else:
            self._remember_done(order)
        parked = self._parked.pop(acc, None)
        if parked is None:
            return []
        self._parked_events -= len(parked.events)
        fills = []
        for ev in parked.events:
            self.parked_applied += 1
            fill, _ = self._apply(order, ev)
            if fill is not None:
                fills.append(fill)
        return fills

    def restore(self, orders: Iterable[Order], fills: Iterable[Fill], kv: dict[str, str] | None = None) -> None:
        """Rebuild from the journal after a restart: the open ``orders`` and every journaled fill
        (marks them seen; an order's filled size and average are recomputed from its fills, which
        the journal wrote before the order row could lag)."""
        per_order: dict[str, list[Fill]] = {}
        for f in fills:
            self._mark_seen(f.exec_id)
            per_order.setdefault(f.acceptance_id, []).append(f)
        if kv and kv.get("last_exec_id"):
            self._bump_cursor(int(kv["last_exec_id"]))
        for order in orders:
            acc = order.acceptance_id
            if not acc:
                continue
            own = per_order.get(acc)
            if own:
                order.filled_size = 0.0
                order.average_price = 0.0
                for f in own:
                    order._add_fill(f.price, f.size)
            if order.state in OPEN_STATES:
                self._open[acc] = order
            else:
                self._remember_done(order)
                self._unsettle(order)

    # ------------------------------------------------------------------ realtime events
    def apply_event(self, ev: ChildOrderEvent) -> tuple[Fill | None, Order | None]:
        """Apply one ``child_order_events`` element. Returns ``(fill, changed)``: the new fill if
        this is an execution not counted before, and the order if it changed (to journal).
        Events for ids not registered yet are parked and return ``(None, None)``."""
        if not _well_formed(ev) or ev.get("product_code", self.product) != self.product:
            return None, None  # a malformed event changes nothing (it is not even parked)
        acc = ev.get("child_order_acceptance_id")
        if not acc:
            return None, None
        order = self._open.get(acc)
        if order is None:
            order = self._done.get(acc)
            if order is None:
                self._park(acc, ev)
                return None, None
        return self._apply(order, ev)

    def _apply(self, order: Order, ev: ChildOrderEvent) -> tuple[Fill | None, Order | None]:
        kind = ev.get("event_type")
        was_open = order.state in OPEN_STATES
        if kind == "EXECUTION":
            exec_id = int(ev["exec_id"])
            if exec_id in self._seen:
                self.duplicates += 1
                return None, None
            fill = Fill(
                exec_id=exec_id,
                acceptance_id=order.acceptance_id or "",
                side=ev.get("side", order.side),
                price=float(ev.get("price", 0.0)),
                size=float(ev.get("size", 0.0)),
                commission=float(ev.get("commission", 0.0) or 0.0),
                sfd=float(ev.get("sfd", 0.0) or 0.0),
                time=timestamps.parse_epoch(ev.get("event_date")),
                product=self.product,
                child_order_id=ev.get("child_order_id", "") or order.child_order_id or "",
            )
            self._count(order, fill)
            if was_open:
                outstanding = ev.get("outstanding_size")
                done = order.filled_size >= order.size - _EPS or (outstanding is not None and outstanding <= _EPS)
                order.state = OrderState.FILLED if done else OrderState.PARTIALLY_FILLED
            # A FILLED order whose fills fall short of its size (outstanding 0 but an EXECUTION
            # was lost) stays unsettled: see _after.
            self._after(order, was_open)
            self._check_missing(order)
            return fill, order
        if kind == "ORDER":
            if ev.get("child_order_id"):
                order.child_order_id = ev["child_order_id"]
            if "child_order_type" in ev:
                order.order_type = ev["child_order_type"]
            if order.state is OrderState.PENDING:
                order.state = OrderState.ACTIVE
            order.updated = bfsx_clock.time()
            return None, order
        if kind == "ORDER_FAILED":
            if not was_open:
                return None, None
            order.state = OrderState.FAILED
            order.reason = str(ev.get("reason") or "ORDER_FAILED")
            self._after(order, was_open)
            return None, order
        if kind in ("CANCEL", "EXPIRE"):
            if not was_open:
                return None, None
            order.state = OrderState.CANCELLED if kind == "CANCEL" else OrderState.EXPIRED
            self._after(order, was_open)
            return None, order
        # CANCEL_FAILED (the order filled or ended first; its own events tell) or unknown types.
        return None, None

    # ------------------------------------------------------------------ resync
    def reconcile(
        self, child_orders: Iterable[ChildOrder], executions: Iterable[PrivateExecution]
    ) -> tuple[list[Fill], list[Order]]:
        """Apply REST rows after a reconnect: private ``getexecutions`` rows not counted yet (by exec
        id, oldest first) and ``getchildorders`` rows (state changes), for THIS bot's orders only.
        Returns ``(new fills, changed orders)``; journal the orders, then apply the fills."""
        fills: list[Fill] = []
        changed: dict[str, Order] = {}
        for row in sorted(executions, key=lambda r: int(r["id"])):
            acc = row.get("child_order_acceptance_id")
            order = self.get(acc) if acc else None
            if order is None or not acc:
                continue  # another bot's, or an order this bot never registered
            exec_id = int(row["id"])
            if exec_id in self._seen:
                self.duplicates += 1
                continue
            fill = Fill(
                exec_id=exec_id, acceptance_id=acc, side=row.get("side", order.side),
                price=float(row["price"]), size=float(row["size"]),
                commission=float(row.get("commission", 0.0) or 0.0), sfd=0.0,
                time=timestamps.parse_epoch(row.get("exec_date")), product=self.product,
                child_order_id=row.get("child_order_id", "") or order.child_order_id or "",
            )
            was_open = order.state in OPEN_STATES
            self._count(order, fill)
            if was_open:
                full = order.filled_size >= order.size - _EPS
                order.state = OrderState.FILLED if full else OrderState.PARTIALLY_FILLED
            self._after(order, was_open)
            self._check_missing(order)
            fills.append(fill)
            changed[acc] = order
        for crow in child_orders:
            acc = crow.get("child_order_acceptance_id")
            order = self.get(acc) if acc else None
            if order is None or not acc:
                continue
            before = order.state
            if crow.get("child_order_id"):
                order.child_order_id = crow["child_order_id"]
            executed = float(crow.get("executed_size", 0.0) or 0.0)
            rest_state = crow.get("child_order_state")
            outcome = states.rest_outcome(rest_state)
            target = OrderState(outcome) if outcome is not None else None
            was_open = order.state in OPEN_STATES
            if target is not None:
                if was_open:
                    order.state = target
                    if target is OrderState.FAILED and not order.reason:
                        order.reason = "REJECTED"
                self._after(order, was_open)
            elif rest_state == states.CHILD_ORDER_ACTIVE and order.state is OrderState.PENDING:
                order.state = OrderState.PARTIALLY_FILLED if order.filled_size > _EPS else OrderState.ACTIVE
            if order.filled_size < executed - _EPS:
                self._missing[acc] = executed
                self._unsettle(order)
            else:
                self._missing.pop(acc, None)
                if order.state not in OPEN_STATES and target is not None:
                    self._unsettled.pop(acc, None)  # the exchange's final word matches our count
            if order.state is not before:
                order.updated = bfsx_clock.time()
                changed[acc] = order
        return fills, list(changed.values())

    # ------------------------------------------------------------------ internals
    def _count(self, order: Order, fill: Fill) -> None:
        self._mark_seen(fill.exec_id)
        self._bump_cursor(fill.exec_id)
        order._add_fill(fill.price, fill.size)
        order.updated = bfsx_clock.time()

    def _check_missing(self, order: Order) -> None:
        acc = order.acceptance_id or ""
        want = self._missing.get(acc)
        if want is not None and order.filled_size >= want - _EPS:
            del self._missing[acc]
            if order.state not in OPEN_STATES:
                self._unsettled.pop(acc, None)

    def _after(self, order: Order, was_open: bool) -> None:
        """Bookkeeping after a state change: move a finished order out of the open set."""
        order.updated = bfsx_clock.time()
        if not was_open or order.state in OPEN_STATES:
            return
        acc = order.acceptance_id or ""
        self._open.pop(acc, None)
        self._remember_done(order)
        complete = order.state is OrderState.FILLED and order.filled_size >= order.size - _EPS
        if not complete and order.state is not OrderState.FAILED:
            self._unsettle(order)

    def _remember_done(self, order: Order) -> None:
        acc = order.acceptance_id or ""
        self._done[acc] = order
        self._done.move_to_end(acc)
        while len(self._done) > self.max_done:
            old, _ = self._done.popitem(last=False)
            self._unsettled.pop(old, None)
            self._missing.pop(old, None)

    def _unsettle(self, order: Order) -> None:
        acc = order.acceptance_id or ""
        if acc in self._open:
            return  # open orders are always looked up
        self._unsettled[acc] = order
        while len(self._unsettled) > self.max_unsettled:
            old, _ = self._unsettled.popitem(last=False)
            log.warning("order %s left unverified (more than %d unsettled orders)", old, self.max_unsettled)

    def _mark_seen(self, exec_id: int) -> None:
        if exec_id in self._seen:
            return
        if len(self._seen_order) == self._seen_order.maxlen:
            self._seen.discard(self._seen_order[0])
        self._seen_order.append(exec_id)
        self._seen.add(exec_id)

    def _bump_cursor(self, exec_id: int) -> None:
        if self.last_exec_id is None or exec_id > self.last_exec_id:
            self.last_exec_id = exec_id

    def _park(self, acc: str, ev: ChildOrderEvent) -> None:
        now = self._clock()
        self._expire_parked(now)
        parked = self._parked.get(acc)
        if parked is None:
            parked = self._parked[acc] = _Parked(now)
        parked.events.append(ev)
        self._parked_events += 1
        while self._parked_events > self.max_parked_events and self._parked:
            _, old = self._parked.popitem(last=False)
            self._parked_events -= len(old.events)
            self.foreign_dropped += len(old.events)

    def _expire_parked(self, now: float) -> None:
        # Insertion order is first-park order, so expired ids are at the front.
        while self._parked:
            acc, first = next(iter(self._parked.items()))
            if now - first.since < self.park_ttl:
                return
            del self._parked[acc]
            self._parked_events -= len(first.events)
            self.foreign_dropped += len(first.events)


_MAX_EXEC_ID = 2**63 - 1  # the journal's SQLite INTEGER


def _finite(v: object, *, positive: bool = False) -> bool:
    """A JSON number (not a bool), finite; > 0 with ``positive``."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return (0 < v < math.inf) if positive else (-math.inf < v < math.inf)


def _well_formed(ev: object) -> bool:
    """True when a ``child_order_events`` element has the types :meth:`OrderTracker.apply_event`
    relies on: a string acceptance id, and for an EXECUTION an integer exec id, a positive finite
    price and size, BUY / SELL, finite commission / sfd / outstanding size. Anything else is
    dropped before it can touch an order, a fill or the parked events."""
    if type(ev) is not dict:
        return False
    if type(ev.get("child_order_acceptance_id", "")) is not str:
        return False
    if ev.get("child_order_id") is not None and type(ev["child_order_id"]) is not str:
        return False
    if "child_order_type" in ev and type(ev["child_order_type"]) is not str:
        return False
    if ev.get("event_type") != "EXECUTION":
        return True
    exec_id = ev.get("exec_id")
    return (
        type(exec_id) is int and 0 <= exec_id <= _MAX_EXEC_ID
        and _finite(ev.get("price"), positive=True) and _finite(ev.get("size"), positive=True)
        and ev.get("side", "BUY") in ("BUY", "SELL")
        and all(ev.get(k) is None or _finite(ev[k]) for k in ("commission", "sfd", "outstanding_size"))
    )

