"""The bot runtime: wires client, market data, account and strategy, and owns the bot's lifecycle.

One asyncio loop owns every piece of state. The hot path is: realtime frame → ``MarketFeed``
(book / executions / candles) → strategy callback → ``send_order`` → REST POST. Private events go
``child_order_events`` → ``OrderTracker`` → ``Journal`` (written before acting) → ``Position`` →
position-server report → ``on_fill`` callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import inspect
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from bfsx import aio
from bfsx.account.drift import SELF_HEAL_SECONDS, DriftCheck
from bfsx.account.journal import IntentState, Journal, OrderIntent
from bfsx.account.orders import Fill, Order, OrderState, OrderTracker
from bfsx.account.position import Position
from bfsx.bitflyer import channels
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.errors import ApiError, BitflyerError
from bfsx.bitflyer.messages import Side
from bfsx.bitflyer.products import ProductSpec, product_spec
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bitflyer.rest import OrderNotPlaced, RestClient
from bfsx.bitflyer.states import can_order
from bfsx.bot.strategy import Strategy
from bfsx.config import (
    TRADE_LIVE_KEYS,
    ConfigWatcher,
    StrategyConfig,
    TradeConfig,
    changed_keys,
    load_run,
    load_strategy_config,
    load_trade_config,
)
from bfsx.errors import UserError
from bfsx.logs import setup_logging
from bfsx.market.candles import CandleBuilder
from bfsx.market.feed import MarketFeed
from bfsx.market.health import HealthPoller

Callback = Callable[..., Awaitable[None] | None]
_SIZE_STEP = Decimal("0.00000001")
QUIET_SECONDS = 5.0  # no drift correction while this bot traded this recently
STOP_CANCEL_TIMEOUT = 10.0
JOURNAL_KEEP_DAYS = 7
CHART_SAMPLE_SECONDS = 10.0
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


class _Listener:
    """Calls a strategy callback; an async one runs as a task, at most one at a time per callback.

    While it runs, newer events only remember the latest argument (bounded: never a queue of tasks)
    and the callback runs once more with it when the current call ends.
    """

    __slots__ = ("_cb", "_is_async", "_log", "_pending", "_running", "_tasks")

    def __init__(self, cb: Callback, log: logging.Logger, tasks: set[asyncio.Task[None]]) -> None:
        self._cb = cb
        self._is_async = inspect.iscoroutinefunction(cb)
        self._log = log
        self._running = False
        self._pending: tuple[Any, ...] | None = None
        self._tasks = tasks

    def __call__(self, *args: Any) -> None:
        if not self._is_async:
            try:
                self._cb(*args)
            except Exception:
                self._log.exception("strategy callback %s failed", getattr(self._cb, "__name__", self._cb))
            return
        if self._running:
            self._pending = args
            return
        self._running = True
        task = asyncio.get_running_loop().create_task(self._run(args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, args: tuple[Any, ...]) -> None:
        try:
            while True:
                try:
                    await self._cb(*args)  # type: ignore[misc]
                except Exception:
                    self._log.exception("strategy callback %s failed", getattr(self._cb, "__name__", self._cb))
                if self._pending is None:
                    return
                args, self._pending = self._pending, None
        finally:
            self._running = False


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plain or ``async def`` function and return its result."""
    result: Any = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def load_strategy_class(path: str | Path) -> type[Strategy]:
    """Import a strategy file and return its :class:`Strategy` subclass (``MyStrategy`` preferred)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"strategy file not found: {p}")
    spec = importlib.util.spec_from_file_location(f"bfsx_user_strategy_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import strategy file {p}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report it in one line
        raise UserError(f"{p}: {type(e).__name__}: {e}") from None
    found = [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy and v.__module__ == module.__name__
    ]
    if not found:
        raise UserError(f"{p}: no class derived from bfsx.Strategy (define `class MyStrategy(bfsx.Strategy)`)")
    for cls in found:
        if cls.__name__ == "MyStrategy":
            return cls
    if len(found) > 1:
        raise UserError(f"{p}: several Strategy classes ({', '.join(c.__name__ for c in found)}); name one MyStrategy")
    return found[0]


class BotRuntime:
    """Runs one strategy on one product against the endpoints of a :class:`TradeConfig`."""

    def __init__(
        self,
        trade: TradeConfig,
        strategy_config: StrategyConfig,
        strategy: Strategy,
        *,
        trade_path: str | None = None,
        strategy_py_path: str | None = None,
        strategy_yaml_path: str | None = None,
    ) -> None:
        self.trade = trade
        self.strategy_config = strategy_config
        self.strategy = strategy
        self.product = trade.product
        self.spec: ProductSpec = product_spec(trade.product)
        self.bot_name = trade.bot_name
        self.log = logging.getLogger(f"bfsx.bot.{self.bot_name}")
        self._trade_path = trade_path
        self._strategy_py_path = strategy_py_path
        self._strategy_yaml_path = strategy_yaml_path

        key, secret = trade.api_key(), trade.api_secret()
        self.budget = ApiBudget(reserve=trade.api_reserve, pause_seconds=trade.over_limit_pause)
        self.rest = RestClient(trade.endpoint, key, secret, budget=self.budget)
        silence = trade.ws_silence_timeout
        self.realtime = RealtimeClient(
            trade.ws_endpoint, key, secret,
            silence_timeout={channels.executions(self.product): silence} if silence else None,
        )
        sub = strategy_config.subscribe
        self.feed = MarketFeed(self.product, self.realtime, board=sub.board, executions=sub.executions, ticker=sub.ticker)
        self.health = HealthPoller(self.rest, self.product, interval=trade.health_interval)
        self.tracker = OrderTracker(self.product)
        self.position = Position()
        folder = Path(trade.log_folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(folder / "journal.db")
        self.drift = DriftCheck(
            min_size=self.spec.min_size,
            consecutive=trade.adjust_consecutive,
            max_order=Decimal(str(trade.adjust_max_size)),
        )
        self.posclient: Any = None
        if trade.pos_server:
            from bfsx.posserver.client import PosServerClient

            host, port = trade.pos_server
            self.posclient = PosServerClient(
                host, int(port), trade.pos_server_secret_value(), self.bot_name, self.product,
                report_interval=trade.pos_server_report_interval, query_interval=trade.pos_server_query_interval,
                on_budget=self._on_account_budget,
            )

        self.charts: Any = None  # BotChartReporter when the strategy yaml names a discord_webhook
        if strategy_config.discord_webhook_value():
            from bfsx.reporting.discord import BotChartReporter, ReportSettings

            self.charts = BotChartReporter(self.bot_name, ReportSettings.from_strategy_config(strategy_config))

        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, list[_Listener]] = {"executions": [], "board": [], "fill": []}
        self._timers: list[tuple[float, Callback, float | None]] = []
        self._stopping = False
        self._stop = asyncio.Event()
        self._inflight = 0
        self._last_activity = 0.0
        self._watchers: list[ConfigWatcher[Any]] = []
        self.fills_applied = 0
        self.fills_recovered = 0  # of which found by a resync (their events were lost)
        self._min_size = float(self.spec.min_size)
        self._last_settled = time.monotonic()
        self._cancel_requested: dict[str, float] = {}  # acceptance id -> monotonic time of the request
        self._cancel_sent: dict[str, float] = {}  # acceptance id -> monotonic time of the latest accepted cancel
        self._intents: dict[str, OrderIntent] = {}  # order POSTs of unknown outcome (OPEN in the journal)
        self._intents_next = 0.0  # monotonic time of the next lookup round for them
        self._resolving = False

    # ----------------------------------------------------------------- registration (Strategy API)
    def add_timer(self, interval: float, cb: Callback, basetime: float | None) -> None:
        if interval <= 0:
            raise ValueError("every(): interval must be > 0")
        self._timers.append((interval, cb, basetime))

    def add_candles(self, timescale: float, num: int, cb: Callback | None) -> CandleBuilder:
        listener = _Listener(cb, self.log, self._tasks) if cb is not None else None
        builder = CandleBuilder(timescale, num, listener)
        self.feed.candle_builders.append(builder)
        return builder

    def add_listener(self, kind: str, cb: Callback) -> None:
        listener = _Listener(cb, self.log, self._tasks)
        self._listeners[kind].append(listener)
        if kind == "executions":
            self.feed.on_executions.append(listener)
        elif kind == "board":
            self.feed.on_board.append(listener)

    # ----------------------------------------------------------------- state
    def realized_today(self) -> float:
        return self.position.realized_today()

    def unrealized(self) -> float:
        price = self.feed.executions.ltp or self.feed.book.mid_price
        return self.position.unrealized(price) if price else 0.0

    def status_line(self) -> str:
        """One line of what a botter glances at: position, today's PnL, orders, fills, budget, health."""
        pos = self.position
        size = pos.size
        at = f" @ {pos.average_price:,.0f}" if size else ""
        realized = self.realized_today()
        profit = realized + self.unrealized()
        recovered = f" ({self.fills_recovered} recovered)" if self.fills_recovered else ""
        return (f"status: position {size:+.8g}{at} | profit today {profit:+,.0f} JPY (realized {realized:+,.0f}) | "
                f"open orders {len(self.tracker.open_orders)} | fills {self.fills_applied}{recovered} | "
                f"API {self.budget.private_remaining} | health {self.health.health}")

    def api_remaining(self) -> int:
        """Private calls left: our own budget, which honours the account-wide view when a position
        server answers (``ApiBudget.apply_account``)."""
        return self.budget.private_remaining

    def _on_account_budget(self, reply: Any) -> None:
        if reply.budget is not None:
            self.budget.apply_account(reply.budget)

    # ----------------------------------------------------------------- orders
    def _refusal(self, side: Side, size: float, price: float | None = None, *, closing: bool = False) -> str | None:
        """Why a new order must not be sent now, or None. Cancels never come through here."""
        if self._stopping and not closing:
            return "bot is stopping"
        if size < self._min_size:
            return f"size {size} below the minimum {self.spec.min_size}"
        if price is not None and not price > 0:  # e.g. best_bid read before the book existed
            return f"invalid price {price}"
        if not self.realtime.connected.is_set():
            return "realtime not connected (own fills would go unseen)"
        if not can_order(self.health.health, self.health.state, self.trade.trade_health):
            return f"exchange health {self.health.health} / {self.health.state}"
        if not closing:
            if self.strategy_config.close_position and not self._reduces(side, size):
                return "close-only mode (close_position: true)"
            if self.strategy_config.in_no_trade():
                return "no-trade window"
        shared = self.posclient.account_budget if self.posclient is not None else None
        if shared is not None and shared.advice == "pause":
            return "account-wide API budget: pause"
        if not self.budget.can_order(size):
            return f"API budget (private remaining {self.budget.private_remaining})"
        return None

    def _reduces(self, side: Side, size: float) -> bool:
        pos = self.position.size
        return (pos > 0 and side == "SELL" and size <= pos + 1e-12) or (pos < 0 and side == "BUY" and size <= -pos + 1e-12)

    async def send_order(self, side: Side, size: float, price: float | None, *, closing: bool = False, **opts: Any) -> Order:
        if round(size, 8) != size:  # the hot path skips Decimal when the size is on the grid already
            size = float(Decimal(repr(size)).quantize(_SIZE_STEP, rounding=ROUND_DOWN))
        order = Order.new(self.product, side, size, price)
        reason = self._refusal(side, size, price, closing=closing)
        if reason is not None:
            order.refuse(reason)
            self.log.info("order refused locally: %s %s @ %s: %s", side, size, price or "MARKET", reason)
            return order
        intent = OrderIntent.new(self.product, side, size, price)
        # Journaled before the POST: if the process dies before the reply is journaled, the restart
        # finds this intent OPEN and looks the order up, so the fills of an accepted order are not lost.
        self.journal.record_intent(intent)
        self._inflight += 1
        self._last_activity = time.monotonic()
        tif = opts.get("time_in_force", "GTC")
        mte = opts.get("minute_to_expire", self.strategy_config.minute_to_expire)
        try:
            acc = await self.rest.send_child_order(
                self.product, side, size, price, time_in_force=tif, minute_to_expire=mte,
                known_ids=self.tracker.known_ids(),
            )
        except OrderNotPlaced as e:
            self.journal.close_intent(intent.intent_id, IntentState.NOT_PLACED)
            order.fail(f"not placed: {e}")
            self.log.warning("order not placed: %s %s @ %s: %s", side, size, price or "MARKET", e)
            return order
        except ApiError as e:
            if e.status == 0 and e.http_status >= 500:  # a gateway's error page: the order may be live
                self._intents[intent.intent_id] = intent
            else:
                self.journal.close_intent(intent.intent_id, IntentState.FAILED)
            order.fail(f"{e.status}: {e.message}")
            self.log.warning("order rejected: %s %s @ %s: %s", side, size, price or "MARKET", e.message)
            return order
        except BitflyerError as e:
            self._intents[intent.intent_id] = intent  # looked up again until its outcome is known
            order.fail(f"unknown outcome: {e}")
            self.log.error("order outcome unknown: %s %s @ %s: %s", side, size, price or "MARKET", e)
            return order
        except BaseException:
            self._intents[intent.intent_id] = intent  # cancelled mid-POST: the order may be live
            raise
        finally:
            self._inflight -= 1
        order.acceptance_id = acc
        fills = self.tracker.accepted(order)
        self._journal_and_count(fills, (order,), intent.intent_id)  # after parked events moved it on
        return order

    async def cancel_order(self, order_or_id: Order | str) -> bool:
        acc = order_or_id if isinstance(order_or_id, str) else order_or_id.acceptance_id
        if not acc:
            return False
        sent = self._cancel_sent.get(acc)
        if sent is not None and time.monotonic() - sent < CANCEL_REPEAT_AFTER:
            return True  # accepted moments ago: its CANCEL event is on the way (the order audit checks)
        try:
            await self.rest.cancel_child_order(self.product, acceptance_id=acc)
        except BitflyerError as e:
            self.log.warning("cancel %s failed: %s", acc, e)
            return False
        now = time.monotonic()
        if len(self._cancel_requested) < 10_000:  # bounded; pruned by the order audit
            self._cancel_requested.setdefault(acc, now)
            self._cancel_sent[acc] = now
        return True

    async def cancel_all(self) -> int:
        open_ids = [o.acceptance_id for o in self.tracker.open_orders if o.acceptance_id]
        results = await asyncio.gather(*(self.cancel_order(a) for a in open_ids))
        return sum(1 for r in results if r)

    async def close_position(self) -> Order | None:
        pos = self.position.size
        if abs(pos) < float(self.spec.min_size):
            return None
        return await self.send_order("SELL" if pos > 0 else "BUY", abs(pos), None, closing=True)

    # ----------------------------------------------------------------- orders of unknown outcome
    async def _resolve_intents(self) -> None:
        """Look up the orders whose POST outcome is unknown: journaled as intents before they were
        sent and left OPEN by a kill -9 before the reply was journaled (``restore`` loads them), or
        by a reply lost beyond the REST client's own lookup. One match: the order is this bot's, it
        is registered and journaled, and the resync counts its fills. No match in a lookup made
        after the window: not placed. Several matches: not adopted, never a guess (the drift check
        deals with what is left). A failed lookup changes nothing: the next round tries again."""
        if self._resolving or not self._intents:
            return
        self._resolving = True
        try:
            for intent in list(self._intents.values())[:INTENT_LOOKUPS_PER_ROUND]:
                await self._resolve_intent(intent)
        finally:
            self._resolving = False
            self._intents_next = time.monotonic() + INTENT_RETRY

    async def _resolve_intent(self, intent: OrderIntent) -> None:
        rest = self.rest
        what = f"{intent.side} {intent.size} @ {intent.price or 'MARKET'}"
        sent, busy = rest.orders_sent, rest.orders_in_flight
        looked_at = time.time()
        try:
            lookup = await rest.find_lost_order(
                intent.product, intent.side, intent.size, intent.price, sent_at=intent.sent_at,
                until=intent.sent_at + INTENT_WINDOW, known_ids=self.tracker.known_ids(),
                count=500, max_pages=INTENT_LOOKUP_PAGES,
            )
        except BitflyerError as e:
            self.log.warning("lookup of order %s (outcome unknown) failed: %s; trying again later", what, e)
            return
        if self._intents.get(intent.intent_id) is not intent:
            return
        found = lookup.candidates
        if found and (busy or rest.orders_sent != sent):
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
            order_type=intent.order_type, acceptance_id=acc, created=intent.sent_at, updated=time.time(),
        )
        fills = self.tracker.accepted(order)  # its events parked since the restart apply now
        del self._intents[intent.intent_id]
        self._journal_and_count(fills, (order,), intent.intent_id)

    def _close_intent(self, intent: OrderIntent, state: IntentState) -> None:
        self._intents.pop(intent.intent_id, None)
        self.journal.close_intent(intent.intent_id, state)

    # ----------------------------------------------------------------- private events
    def _on_child_events(self, events: list[dict[str, Any]]) -> None:
        changed: dict[int, Order] = {}
        fills: list[Fill] = []
        for ev in events:
            if ev.get("product_code") != self.product:
                continue
            fill, order = self.tracker.apply_event(ev)  # type: ignore[arg-type]
            if order is not None:
                changed[id(order)] = order
            if fill is not None:
                fills.append(fill)
        if fills:
            self._journal_and_count(fills, changed.values())
        elif changed and self.journal.defer_orders(changed.values()):
            # A state change without a fill costs no commit of its own (see Journal.defer_orders).
            asyncio.get_running_loop().call_later(ORDER_ROW_DELAY, self._flush_journal)

    def _flush_journal(self) -> None:
        try:
            self.journal.flush()
        except sqlite3.Error as e:
            self.log.error("journal: writing order rows failed (%s); the next resync settles them", e)

    def _journal_and_count(self, fills: list[Fill], orders: Iterable[Order], intent_id: str | None = None) -> int:
        """Journal fills and order rows in one transaction, then count the fills that are new (the
        journal's exec_id key dedupes replays and resyncs), then send one absolute-position report
        however many fills there were. Journal first: a crash after the commit loses nothing, and a
        crash before it loses nothing counted. One row per order, after its fills."""
        new = self.journal.record_batch(fills, orders, intent_id)
        for fill in new:
            self.position.apply_fill(fill)
            self.fills_applied += 1
            for listener in self._listeners["fill"]:
                listener(fill)
        if new:
            self._last_activity = time.monotonic()
            self._report()
        return len(new)

    def _report(self) -> None:
        if self.posclient is None:
            return
        self.posclient.report(
            position=self.position.size,
            base_position=self.trade.base_position,
            profit=self.realized_today() + self.unrealized(),
            realized=self.realized_today(),
            budget=self.budget.snapshot(),
        )

    async def resync(self) -> None:
        """Fill any gap after a (re)connect or at start: the states of our unsettled orders and every
        fill since our last exec id, de-duplicated by exec id. Orders of unknown outcome are looked
        up first, so the fills of one found on the exchange are counted by this same resync."""
        if self._intents:
            await self._resolve_intents()
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
                own = await self.rest.get_my_executions(self.product, count=500, acceptance_id=acc)
                recovered += self._reconcile([], own)
        except BitflyerError as e:
            self.log.warning("resync of missing fills failed (%s)", e)
        self._last_settled = time.monotonic()
        if recovered:
            self.fills_recovered += recovered
            self.log.warning("resync recovered %d missed fill(s); position %s", recovered, self.position.size)

    async def _child_order_rows(self, wanted: set[str]) -> list[Any]:
        """getchildorders rows for the ``wanted`` acceptance ids: one targeted lookup each when they
        are few, else pages of 500 (newest first, paged back by ``id``) until every wanted id was
        seen. One page of 500 is not enough: after many lost events the unsettled orders reach
        further back, and an order never looked up keeps its missed fills hidden (bounded)."""
        rows: list[Any] = []
        if len(wanted) <= 3:  # a page of 500 rows is one request too
            for acc in wanted:
                rows.extend(await self.rest.get_child_orders(self.product, acceptance_id=acc))
            return rows
        left = set(wanted)
        before: int | None = None
        for _ in range(RESYNC_MAX_PAGES):
            page = await self.rest.get_child_orders(self.product, count=500, before=before)
            rows.extend(page)
            left.difference_update(r.get("child_order_acceptance_id") for r in page)
            ids = [int(r["id"]) for r in page if r.get("id")]  # ACTIVE rows have id 0: not a paging key
            if not left or len(page) < 500 or not ids:
                break
            before = min(ids)
        return rows

    async def _executions_since(self, after: int | None) -> list[Any]:
        """Private executions newer than ``after``. Replies are newest first and capped at ``count``,
        so page backwards with ``before`` until the cursor is reached (bounded)."""
        out: list[Any] = []
        before: int | None = None
        for _ in range(20):
            page = await self.rest.get_my_executions(self.product, count=500, before=before, after=after)
            out.extend(page)
            if len(page) < 500 or after is None:
                break
            before = min(int(e["id"]) for e in page)
        return out

    def _reconcile(self, rows: list[Any], execs: list[Any]) -> int:
        fills, changed = self.tracker.reconcile(rows, execs)
        self._journal_and_count(fills, changed)
        return len(fills)

    # ----------------------------------------------------------------- background tasks
    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _timer_loop(self, interval: float, cb: Callback, basetime: float | None) -> None:
        listener = _Listener(cb, self.log, self._tasks)
        while not self._stopping:
            if basetime is None:
                await asyncio.sleep(interval)
            else:
                now = time.time()
                nxt = (now - basetime) // interval * interval + interval + basetime
                await asyncio.sleep(max(0.0, nxt - now))
            if not self._stopping:
                listener()

    async def _drift_loop(self) -> None:
        """Single-bot drift correction (adjust_position_with_api, only without a position server)."""
        while not self._stopping:
            await asyncio.sleep(self.trade.adjust_position_interval)
            if not self.trade.adjust_position_with_api or self._stopping:
                continue
            quiet = self._inflight == 0 and time.monotonic() - self._last_activity > QUIET_SECONDS
            actual: Decimal | None
            try:
                actual = await self.rest.net_position(self.product) - Decimal(str(self.trade.base_position))
            except BitflyerError as e:
                self.log.warning("drift check: exchange position unknown (%s); no action", e)
                actual = None
            expected = self.position.exact_size
            corr = self.drift.observe(expected, actual, quiet=quiet)
            if corr is None:
                continue
            if not can_order(self.health.health, self.health.state, self.trade.trade_health):
                self.log.warning("drift %s but health %s: no correction", corr, self.health.health)
                continue
            self.log.warning("position drift: exchange %s vs self %s -> correcting %s %s", actual, expected, corr.side, corr.size)
            try:
                # Not registered in the tracker: the correction moves the exchange toward the bot's
                # own position, it must not move the bot's position.
                await self.rest.send_child_order(self.product, corr.side, float(corr.size), None)
            except BitflyerError as e:
                self.log.error("correcting order failed: %s", e)
            else:
                self.drift.sent()

    def _stuck_orders(self, now: float) -> list[str]:
        """Open orders whose events look lost: no ORDER event long after acceptance, or still open
        long after a cancel was accepted. A resting order with no news is not suspect."""
        stuck = []
        for o in self.tracker.open_orders:
            acc = o.acceptance_id
            if not acc:
                continue
            asked = self._cancel_requested.get(acc)
            if (asked is not None and now - asked > ORDER_AUDIT_AFTER) or (
                o.state == OrderState.PENDING and time.time() - o.created > ORDER_AUDIT_AFTER
            ):
                stuck.append(acc)
        for acc in list(self._cancel_requested):
            order = self.tracker.get(acc)
            if order is None or not order.is_open:
                del self._cancel_requested[acc]
        for acc, at in list(self._cancel_sent.items()):
            if now - at >= CANCEL_REPEAT_AFTER:
                del self._cancel_sent[acc]
        return stuck

    async def _order_audit_loop(self) -> None:
        """Settle orders whose private events were lost (and count their fills) without waiting for
        a reconnect: the bot's position stays right, so no correcting order is needed."""
        while not self._stopping:
            await asyncio.sleep(ORDER_AUDIT_INTERVAL)
            now = time.monotonic()
            if self._intents and now >= self._intents_next:
                await self._resolve_intents()
            if self._stuck_orders(now) or self.tracker.missing_fills() or self._settle_due(now):
                await self.resync()

    def _settle_due(self, now: float) -> bool:
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

    async def _status_loop(self) -> None:
        """The status line every ``status_interval`` seconds (0 = off; applies live)."""
        while not self._stopping:
            interval = self.trade.status_interval
            await asyncio.sleep(interval or 1.0)
            if interval and self.trade.status_interval and not self._stopping:
                self.log.info("%s", self.status_line())

    async def _chart_sample_loop(self) -> None:
        """One sample every few seconds for this bot's own chart (bounded in the reporter)."""
        from bfsx.reporting.samples import BotSample

        while not self._stopping:
            self.charts.record(BotSample(
                ts=time.time(), bot=self.bot_name, market=self.product, position=self.position.size,
                profit=self.realized_today() + self.unrealized(), api_remaining=self.budget.private_remaining,
            ))
            await asyncio.sleep(CHART_SAMPLE_SECONDS)

    async def _on_connect(self, reconnected: bool) -> None:
        if reconnected:
            self.log.warning("realtime reconnected: resyncing orders and fills")
        await self.resync()

    # ----------------------------------------------------------------- config reload
    def _strategy_yaml_changed(self, new: StrategyConfig) -> None:
        self.strategy_config = new
        if self.charts is not None:
            from bfsx.reporting.discord import ReportSettings

            self.charts.update(ReportSettings.from_strategy_config(new))
        self.log.info("strategy config reloaded")
        self._spawn(call_maybe_async(self.strategy.parameters_changed), "parameters_changed")

    def _trade_yaml_changed(self, new: TradeConfig) -> None:
        changed = changed_keys(self.trade, new)
        later = [k for k in changed if k not in TRADE_LIVE_KEYS]
        if later:
            self.log.warning("trade.yaml: %s changed; applies after a restart", ", ".join(later))
        live = {k: getattr(new, k) for k in changed if k in TRADE_LIVE_KEYS}
        self.trade = self.trade.model_copy(update=live)
        self.budget.reserve = self.trade.api_reserve
        self.budget.pause_seconds = self.trade.over_limit_pause
        self.drift.max_order = Decimal(str(self.trade.adjust_max_size))
        self.drift.consecutive = self.trade.adjust_consecutive
        if live:
            self.log.info("trade.yaml reloaded: %s", ", ".join(f"{k}={v}" for k, v in live.items()))

    # ----------------------------------------------------------------- lifecycle
    def restore(self) -> None:
        """Rebuild position, open orders and the exec cursor from the journal (after a restart)."""
        self.journal.compact(keep_days=JOURNAL_KEEP_DAYS)
        fills, orders, kv = self.journal.load()
        self.position.rebuild(fills, kv)
        self.tracker.restore(orders, fills, kv)
        self._intents = {i.intent_id: i for i in self.journal.open_intents(self.product)}
        if self._intents:
            self.log.warning("%d order(s) sent before the restart have no known outcome: looking them up",
                             len(self._intents))
        if fills or orders:
            self.log.info(
                "restored from journal: %d fills, position %s, %d open orders",
                len(fills), self.position.size, len(self.tracker.open_orders),
            )

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start everything, run until a stop is requested, then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        self.restore()
        self.strategy._bind(self)
        self.realtime.subscribe(channels.CHILD_ORDER_EVENTS, self._on_child_events)
        self.realtime.on_connect(self._on_connect)
        await self.health.start()
        await self.realtime.start()
        if self.posclient is not None:
            await self.posclient.start()
            self._report()
        await call_maybe_async(self.strategy.initialize)
        for interval, cb, basetime in self._timers:
            self._spawn(self._timer_loop(interval, cb, basetime), "timer")
        self._spawn(self._order_audit_loop(), "order-audit")
        self._spawn(self._status_loop(), "status")
        if self.charts is not None:
            self.charts.start()
            self._spawn(self._chart_sample_loop(), "chart-samples")
        if self.posclient is None:
            self._spawn(self._drift_loop(), "drift")
        if self._strategy_yaml_path:
            self._watchers.append(
                ConfigWatcher(
                    self._strategy_yaml_path, load_strategy_config, self._strategy_yaml_changed,
                    current=self.strategy_config,
                )
            )
        if self._trade_path:
            loader = functools.partial(
                load_trade_config, strategy_py=self._strategy_py_path, strategy_yaml=self._strategy_yaml_path
            )
            self._watchers.append(ConfigWatcher(self._trade_path, loader, self._trade_yaml_changed, current=self.trade))
        for w in self._watchers:
            w.start()
        self.log.info("%s trading %s (position %s)", self.bot_name, self.product, self.position.size)
        await self._stop.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Stop the strategy, cancel this bot's orders (confirmed), optionally flatten, report, close."""
        self._stopping = True
        self.log.info("stopping: cancelling open orders")
        for w in self._watchers:
            w.stop()
        try:
            await asyncio.wait_for(call_maybe_async(self.strategy.finalize), 5.0)
        except Exception:
            self.log.exception("strategy finalize failed")
        await self._cancel_and_confirm()
        if self.trade.close_on_exit:
            await self._flatten()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.posclient is not None:
            self._report()
            await self.posclient.stop()
        if self.charts is not None:
            await self.charts.close()
        self.feed.close()
        await self.health.stop()
        await self.realtime.close()
        await self.rest.close()
        self.journal.close()
        self.log.info("stopped: position %s, realized today %.0f", self.position.size, self.realized_today())

    async def _cancel_and_confirm(self) -> None:
        deadline = time.monotonic() + STOP_CANCEL_TIMEOUT
        if self._intents:  # an order of unknown outcome may be live: find it, so it is cancelled too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_CANCEL_TIMEOUT / 2):
                    await self._resolve_intents()
        await self.cancel_all()
        while self.tracker.open_orders and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.tracker.open_orders:
            # Events may be lost: ask the exchange for the final word on each order.
            await self.resync()
        left = [o.acceptance_id for o in self.tracker.open_orders]
        if left:
            self.log.error("orders still open after stop: %s", ", ".join(a or "?" for a in left))

    async def _flatten(self) -> None:
        order = await self.close_position()
        if order is None or order.state in (OrderState.REFUSED, OrderState.FAILED):
            return
        deadline = time.monotonic() + STOP_CANCEL_TIMEOUT
        while abs(self.position.size) >= float(self.spec.min_size) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def run_trade(files: list[str]) -> int:
    """``bfsx trade`` / ``python3 trade.py``: the four argument forms of docs/config.md."""
    trade, strategy_cfg = load_run(files)
    strategy_py, strategy_yaml = str(trade.strategy_py), str(trade.strategy_yaml)
    folder = Path(trade.log_folder)
    setup_logging(folder, trade.bot_name, strategy_cfg.log_level or trade.log_level, trade.console_output)
    cls = load_strategy_class(strategy_py)
    try:
        strategy = cls()
    except Exception as e:
        raise UserError(f"{strategy_py}: {cls.__name__}() failed: {e}") from None
    trade_path = str(trade.source) if trade.source else None

    async def main() -> int:
        rt = BotRuntime(
            trade, strategy_cfg, strategy,
            trade_path=trade_path, strategy_py_path=strategy_py, strategy_yaml_path=strategy_yaml,
        )
        return await rt.run()

    try:
        return aio.run(main())
    finally:
        # The bot has stopped and the process is exiting: a second Ctrl+C / SIGTERM (an impatient
        # user, a supervisor) must not turn the clean exit into a kill by signal. uvloop even leaves
        # its closed loop's handlers installed, which then die on the signal.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
