"""The reconciler: how a bot's own fills reach its position, and how lost events are healed.

:class:`Reconciler` owns the path ``child_order_events`` → :class:`~bfsx.account.orders.OrderTracker`
→ :class:`~bfsx.account.journal.Journal` (written before acting) → :class:`~bfsx.account.position.Position`
→ ``on_new_fills`` (strategy callbacks, position-server report), and every look at the exchange that
settles what events did not: the resync after a (re)connect, the order audit (orders whose events
look lost), the periodic settle, and the lookup of orders whose POST outcome is unknown (intents).
It writes the journal and the position; order state stays the tracker's.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bfsx import clock
from bfsx.account.drift import SELF_HEAL_SECONDS
from bfsx.account.orders import Fill, IntentState, Order, OrderIntent, OrderTracker
from bfsx.bitflyer.errors import BitflyerError
from bfsx.bitflyer.rest import paged

if TYPE_CHECKING:
    from bfsx.account.journal import Journal
    from bfsx.account.position import Position
    from bfsx.bitflyer.messages import ChildOrder, PrivateExecution
    from bfsx.bitflyer.rest import RestClient

ORDER_AUDIT_INTERVAL = 2.0  # how often to look for orders whose events look lost (no API call if none)
ORDER_AUDIT_AFTER = 4.0  # seconds without the expected event before asking the exchange
RESYNC_MAX_PAGES = 20  # getchildorders pages of 500 a resync may read (10,000 orders back)
ORDER_ROW_DELAY = 0.1  # order-state rows without a fill are written at most this late, many per commit
SETTLE_INTERVAL = SELF_HEAL_SECONDS  # open and unsettled orders are looked up at least this often (lost events)...
SETTLE_BACKLOG = 500  # ...and at once when this many finished ones wait (the tracker keeps 2,000)
CANCEL_REPEAT_AFTER = 3.0  # a cancel accepted this recently is not sent again (its CANCEL event is on the way)
INTENT_WINDOW = 60.0  # an order POST may still be accepted this long after it was sent (queued on a busy exchange)
INTENT_RETRY = 5.0  # seconds between lookups of orders whose outcome is unknown
INTENT_LOOKUP_PAGES = 4  # getchildorders pages of 500 such a lookup may read (orders are capped at 300 / 5 min)
INTENT_LOOKUPS_PER_ROUND = 10  # intents looked up per round: a bounded number of requests
_PAGE = 500


class Reconciler:
    """Applies this bot's fills exactly once and settles what lost events hid (see the module)."""

    def __init__(
        self,
        *,
        product: str,
        rest: RestClient,
        tracker: OrderTracker,
        journal: Journal,
        position: Position,
        on_new_fills: Callable[[list[Fill]], None],
        log: logging.Logger,
    ) -> None:
        self.product = product
        self.rest = rest
        self.tracker = tracker
        self.journal = journal
        self.position = position
        self.log = log
        self._on_new_fills = on_new_fills
        self.fills_applied = 0
        self.fills_recovered = 0  # of which found by a resync (their events were lost)
        self.last_activity = 0.0  # monotonic time of this bot's latest order or fill
        self._last_settled = clock.monotonic()
        self._intents_next = 0.0  # monotonic time of the next lookup round for intents
        self._resolving = False

    def touch(self) -> None:
        """This bot just traded (an order went out): the drift check waits for quiet."""
        self.last_activity = clock.monotonic()

    # ----------------------------------------------------------------- private events
    def on_child_events(self, events: list[dict[str, Any]]) -> None:
        """A ``child_order_events`` frame: one journal transaction for its fills and order rows."""
        changed: dict[int, Order] = {}
        fills: list[Fill] = []
        for ev in events:
            if type(ev) is not dict or ev.get("product_code") != self.product:
                continue  # not raising here: the fills of this frame's earlier events are counted below
            fill, order = self.tracker.apply_event(ev)  # type: ignore[arg-type]
            if order is not None:
                changed[id(order)] = order
            if fill is not None:
                fills.append(fill)
        if fills:
            self.journal_and_count(fills, changed.values())
        elif changed and self.journal.defer_orders(changed.values()):
            # A state change without a fill costs no commit of its own (see Journal.defer_orders).
            asyncio.get_running_loop().call_later(ORDER_ROW_DELAY, self._flush_journal)

    def _flush_journal(self) -> None:
        try:
            self.journal.flush()
        except sqlite3.Error as e:
            self.log.error("journal: writing order rows failed (%s); the next resync settles them", e)

    def journal_and_count(self, fills: list[Fill], orders: Iterable[Order], intent_id: str | None = None) -> int:
        """Journal fills and order rows in one transaction, then count the fills that are new (the
        journal's exec_id key dedupes replays and resyncs), then hand them on once, however many
        there were. Journal first: a crash after the commit loses nothing, and a crash before it
        loses nothing counted. One row per order, after its fills."""
        new = self.journal.record_batch(fills, orders, intent_id)
        for fill in new:
            self.position.apply_fill(fill)
        if new:
            self.fills_applied += len(new)
            self.last_activity = clock.monotonic()
            self._on_new_fills(new)
        return len(new)

    # ----------------------------------------------------------------- resync
    async def resync(self) -> None:
        """Fill any gap after a (re)connect or at start: the states of our unsettled orders and every
        fill since our last exec id, de-duplicated by exec id. Orders of unknown outcome are looked
        up first, so the fills of one found on the exchange are counted by this same resync."""
        if self.tracker.intents:
            await self.resolve_intents()
        try:
            unsettled = {o.acceptance_id for o in self.tracker.unsettled_orders if o.acceptance_id}
            rows = await self._child_order_rows(unsettled)
            execs = await self._executions_since(self.tracker.last_exec_id)
        except BitflyerError as e:
            self.log.warning("resync failed (%s); retrying on the next reconnect", e)
            return
        recovered = self._reconcile(rows, execs)
        try:
            for acc in self.tracker.missing_fills():
                own = await self.rest.get_my_executions(self.product, count=_PAGE, acceptance_id=acc)
                recovered += self._reconcile([], own)
        except BitflyerError as e:
            self.log.warning("resync of missing fills failed (%s)", e)
        self._last_settled = clock.monotonic()
        if recovered:
            self.fills_recovered += recovered
            self.log.warning("resync recovered %d missed fill(s); position %s", recovered, self.position.size)

    async def _child_order_rows(self, wanted: set[str]) -> list[ChildOrder]:
        """getchildorders rows for the ``wanted`` acceptance ids: one targeted lookup each when they
        are few, else pages of 500 until every wanted id was seen. One page of 500 is not enough:
        after many lost events the unsettled orders reach further back, and an order never looked
        up keeps its missed fills hidden (bounded)."""
        rows: list[ChildOrder] = []
        if len(wanted) <= 3:  # a page of 500 rows is one request too
            for acc in wanted:
                rows.extend(await self.rest.get_child_orders(self.product, acceptance_id=acc))
            return rows
        left = set(wanted)

        async def fetch(before: int | None) -> list[ChildOrder]:
            return await self.rest.get_child_orders(self.product, count=_PAGE, before=before)

        async for page in paged(fetch, count=_PAGE, max_pages=RESYNC_MAX_PAGES):
            rows.extend(page)
            left.difference_update(r.get("child_order_acceptance_id") for r in page)
            if not left:
                break
        return rows

    async def _executions_since(self, after: int | None) -> list[PrivateExecution]:
        """Private executions newer than ``after`` (all pages back to it, bounded; one page when
        there is no cursor yet)."""
        out: list[PrivateExecution] = []

        async def fetch(before: int | None) -> list[PrivateExecution]:
            return await self.rest.get_my_executions(self.product, count=_PAGE, before=before, after=after)

        async for page in paged(fetch, count=_PAGE, max_pages=20 if after is not None else 1):
            out.extend(page)
        return out

    def _reconcile(self, rows: list[Any], execs: list[Any]) -> int:
        fills, changed = self.tracker.reconcile(rows, execs)
        self.journal_and_count(fills, changed)
        return len(fills)

    # ----------------------------------------------------------------- orders of unknown outcome
    def restore_intents(self) -> int:
        """Load the intents a previous run left OPEN (killed inside a reply window)."""
        for intent in self.journal.open_intents(self.product):
            self.tracker.add_intent(intent)
        return len(self.tracker.intents)

    async def resolve_intents(self) -> None:
        """Look up the orders whose POST outcome is unknown: journaled as intents before they were
        sent and left OPEN by a kill -9 before the reply was journaled (``restore_intents`` loads
        them), or by a reply lost beyond the REST client's own lookup. One match: the order is this
        bot's, it is registered and journaled, and the resync counts its fills. No match in a lookup
        made after the window: not placed. Several matches: not adopted, never a guess (the drift
        check deals with what is left). A failed lookup changes nothing: the next round tries again."""
        if self._resolving or not self.tracker.intents:
            return
        self._resolving = True
        try:
            for intent in self.tracker.intents[:INTENT_LOOKUPS_PER_ROUND]:
                await self._resolve_intent(intent)
        finally:
            self._resolving = False
            self._intents_next = clock.monotonic() + INTENT_RETRY

    async def _resolve_intent(self, intent: OrderIntent) -> None:
        rest, tracker = self.rest, self.tracker
        what = f"{intent.side} {intent.size} @ {intent.price or 'MARKET'}"
        sent, busy = tracker.sends, tracker.in_flight
        looked_at = clock.time()
        try:
            lookup = await rest.find_lost_order(
                intent.product, intent.side, intent.size, intent.price, sent_at=intent.sent_at,
                until=intent.sent_at + INTENT_WINDOW, known_ids=tracker.known_ids(),
                count=_PAGE, max_pages=INTENT_LOOKUP_PAGES,
            )
        except BitflyerError as e:
            self.log.warning("lookup of order %s (outcome unknown) failed: %s; trying again later", what, e)
            return
        if not tracker.holds_intent(intent):
            return
        found = lookup.candidates
        if found and (busy or tracker.sends != sent):
            return  # an order of this run whose id is not known yet may be the match: look again
        if len(found) == 1:
            self._adopt(intent, found[0])
            self.log.warning("order %s of unknown outcome found on the exchange: %s (adopted)", what, found[0])
        elif found:
            self._close_intent(intent, IntentState.UNKNOWN)
            self.log.error("order %s of unknown outcome: %d matching orders (%s); none adopted",
                           what, len(found), ", ".join(found))
        elif looked_at > intent.sent_at + INTENT_WINDOW + rest.lookup_clock_slack:
            if lookup.complete:
                self._close_intent(intent, IntentState.NOT_PLACED)
                self.log.info("order %s of unknown outcome was not placed", what)
            else:
                self._close_intent(intent, IntentState.UNKNOWN)
                self.log.error("order %s of unknown outcome: sent before the orders the lookup can read", what)

    def _adopt(self, intent: OrderIntent, acc: str) -> None:
        order = Order(
            product=intent.product, side=intent.side, size=intent.size, price=intent.price,
            order_type=intent.order_type, acceptance_id=acc, created=intent.sent_at, updated=clock.time(),
        )
        fills = self.tracker.accepted(order)  # its events parked since the restart apply now
        self.tracker.drop_intent(intent.intent_id)
        self.journal_and_count(fills, (order,), intent.intent_id)

    def _close_intent(self, intent: OrderIntent, state: IntentState) -> None:
        self.tracker.drop_intent(intent.intent_id)
        self.journal.close_intent(intent.intent_id, state)

    # ----------------------------------------------------------------- audit and settle
    async def audit_loop(self, stopping: Callable[[], bool]) -> None:
        """Settle orders whose private events were lost (and count their fills) without waiting for
        a reconnect: the bot's position stays right, so no correcting order is needed."""
        while not stopping():
            await asyncio.sleep(ORDER_AUDIT_INTERVAL)
            now = clock.monotonic()
            if self.tracker.intents and now >= self._intents_next:
                await self.resolve_intents()
            stuck = self.tracker.stuck_orders(ORDER_AUDIT_AFTER, CANCEL_REPEAT_AFTER)
            if stuck or self.tracker.missing_fills() or self.settle_due(now):
                await self.resync()

    def settle_due(self, now: float) -> bool:
        """A fill event lost while connected leaves a resting order ACTIVE with nothing suspect
        about it, and orders that ended by CANCEL or EXPIRE stay unsettled until a getchildorders
        row proves their fills complete. Without a reconnect nothing would look: the fill would stay
        missing, and the tracker's bounded set would fill (a market maker cancels thousands), warn
        on every further order and drop the oldest unverified. So resync every SETTLE_INTERVAL while
        any order is open or unsettled (a page of rows and the executions since the cursor: two
        requests a minute), and at once when SETTLE_BACKLOG finished orders wait."""
        unsettled = len(self.tracker.unsettled_orders)
        if not unsettled:
            return False
        finished = unsettled - len(self.tracker.open_orders)
        return finished >= SETTLE_BACKLOG or now - self._last_settled >= SETTLE_INTERVAL

    async def final_word(self, timeout_s: float) -> list[str]:
        """At stop: once orders were cancelled, wait up to ``timeout_s`` for their events, then ask
        the exchange about any still open. Returns the acceptance ids still open after that."""
        deadline = clock.monotonic() + timeout_s
        while self.tracker.open_orders and clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.tracker.open_orders:
            # Events may be lost: ask the exchange for the final word on each order.
            await self.resync()
        return [o.acceptance_id or "?" for o in self.tracker.open_orders]

