"""The bot runtime: wires client, market data, account and strategy, and owns the bot's lifecycle.

One asyncio loop owns every piece of state. The hot path is: realtime frame → ``MarketFeed``
(book / executions / candles) → strategy callback → :class:`~bfsx.bot.desk.OrderDesk` → REST POST.
Private events go to the :class:`~bfsx.bot.resync.Reconciler`: ``child_order_events`` →
``OrderTracker`` → ``Journal`` (written before acting) → ``Position`` → position-server report →
``on_fill`` callbacks. This module holds the wiring, the strategy's registrations, the background
loops (timers, drift, status, chart samples), live reload, and start / stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bfsx import aio, clock
from bfsx.account.drift import DriftCheck, run_drift_loop
from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, Order, OrderState, OrderTracker
from bfsx.account.position import Position
from bfsx.bitflyer import channels
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.errors import BitflyerError
from bfsx.bitflyer.messages import Side
from bfsx.bitflyer.products import ProductSpec, product_spec
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bitflyer.rest import RestClient
from bfsx.bitflyer.states import can_order, health_rank
from bfsx.bot.desk import OrderDesk
from bfsx.bot.listeners import Callback, Listener, call_maybe_async
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.resync import Reconciler
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
from bfsx.posserver.controls import SELF_TRADE_PAUSE

if TYPE_CHECKING:  # imported lazily below: a bot without a server or charts does not load them
    from bfsx.posserver.client import PosServerClient
    from bfsx.reporting.alerts import Alerts
    from bfsx.reporting.discord import BotChartReporter

QUIET_SECONDS = 5.0  # no drift correction while this bot traded this recently
STOP_CANCEL_TIMEOUT = 10.0
#: Alerts to the strategy's webhook: at most one per kind per this many seconds (the rest counted).
ALERT_INTERVAL_S = 60.0
#: How often the bot looks for a new over-limit pause to alert about.
ALERT_CHECK_INTERVAL_S = 1.0
RECONNECT_STORM_COUNT = 3
RECONNECT_STORM_WINDOW_S = 60.0
JOURNAL_KEEP_DAYS = 7
CHART_SAMPLE_SECONDS = 10.0


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
        rest: RestClient | None = None,
        realtime: RealtimeClient | None = None,
    ) -> None:
        # ``rest`` / ``realtime``: another transport with the same methods (a backtest's, which
        # talks to an in-process matching engine); the default is the exchange's over the network.
        self._trade = trade
        #: The clock every timer, order age, candle and no-trade window of this bot runs on: the
        #: process's clock (bfsx.clock) when the runtime is built, the wall clock live.
        self.clock = clock.current()
        self._strategy_config = strategy_config
        self.strategy = strategy
        self.product = trade.product
        self.spec: ProductSpec = product_spec(trade.product)
        self.bot_name = trade.bot_name
        self.log = logging.getLogger(f"bfsx.bot.{self.bot_name}")
        self._trade_path = trade_path
        self._strategy_py_path = strategy_py_path
        self._strategy_yaml_path = strategy_yaml_path

        key, secret = trade.api_key(), trade.api_secret()
        if trade.pos_server:  # budget leases (posserver/lease_client.py); loaded only with a position server
            from bfsx.posserver.lease_budget import LeasedBudget
            from bfsx.posserver.lease_client import FedHealth, LeaseClient, runtime_settler
        budget_cls = LeasedBudget if trade.pos_server else ApiBudget  # leases: the server sizes what we may send
        self.budget = budget_cls(reserve=trade.api_reserve, pause_seconds=trade.over_limit_pause)
        self.rest = rest if rest is not None else RestClient(trade.endpoint, key, secret, budget=self.budget)
        silence = trade.ws_silence_timeout
        self.realtime = realtime if realtime is not None else RealtimeClient(
            trade.ws_endpoint, key, secret,
            silence_timeout={channels.executions(self.product): silence} if silence else None,
        )
        sub = strategy_config.subscribe
        self.feed = MarketFeed(self.product, self.realtime, board=sub.board, executions=sub.executions, ticker=sub.ticker)
        health_cls = FedHealth if trade.pos_server else HealthPoller  # leases: the server's health feed
        self.health = health_cls(self.rest, self.product, interval=trade.health_interval)
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
        self.posclient: PosServerClient | None = None
        if trade.pos_server:
            host, port = trade.pos_server
            assert isinstance(self.budget, LeasedBudget)
            self.posclient = LeaseClient(
                host, int(port), trade.pos_server_secret_value(), self.bot_name, self.product,
                report_interval=trade.pos_server_report_interval, query_interval=trade.pos_server_query_interval,
                on_budget=self._on_account_budget,
                budget=self.budget, health=self.health, settle=runtime_settler(lambda: self.reconciler),  # leases
                control_interval=trade.pos_server_control_interval, on_control=self._on_control,
            )

        self.charts: BotChartReporter | None = None  # when the strategy yaml names a discord_webhook
        if strategy_config.discord_webhook_value():
            from bfsx.reporting.discord import BotChartReporter, ReportSettings

            self.charts = BotChartReporter(self.bot_name, ReportSettings.from_strategy_config(strategy_config))
        # Alerts to the same webhook: over-limit pauses, health STOP, reconnect storms.
        self.alerts: Alerts | None = None
        if strategy_config.discord_webhook_value():
            from bfsx.reporting.alerts import BOT_ALERT_KINDS, Alerts

            self.alerts = Alerts(strategy_config.discord_webhook_value(), source=f"bfsx {self.bot_name}",
                                 kinds=BOT_ALERT_KINDS, per_kind_interval_s=ALERT_INTERVAL_S)
        #: A reconnect storm: this many realtime reconnects within this many seconds.
        self.reconnect_storm_count = RECONNECT_STORM_COUNT
        self.reconnect_storm_window_s = RECONNECT_STORM_WINDOW_S
        self.alert_check_interval_s = ALERT_CHECK_INTERVAL_S
        self._reconnects: deque[float] = deque(maxlen=64)
        self._paused = False  # a -1 pause was running at the last look

        self.reconciler = Reconciler(
            product=self.product, rest=self.rest, tracker=self.tracker, journal=self.journal,
            position=self.position, on_new_fills=self._on_new_fills, log=self.log,
        )
        self.desk = OrderDesk(
            product=self.product, spec=self.spec, rest=self.rest, realtime=self.realtime, health=self.health, feed=self.feed,
            budget=self.budget, tracker=self.tracker, journal=self.journal, position=self.position,
            reconciler=self.reconciler, trade=trade, strategy_config=strategy_config, log=self.log,
        )
        self.desk.posclient = self.posclient

        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, list[Listener]] = {"executions": [], "board": [], "fill": []}
        self._timers: list[tuple[float, Callback, float | None]] = []
        self._stopping = False
        self._stop = asyncio.Event()
        self._watchers: list[ConfigWatcher[Any]] = []
        #: The server's control actions (flatten, step-aside): the running task and the last
        #: attempt (monotonic) per kind.
        self._control_tasks: dict[str, asyncio.Task[None]] = {}
        self._control_tried_m: dict[str, float] = {}
        self.flatten_orders = 0

    # ----------------------------------------------------------------- configs (live-reloadable)
    @property
    def trade(self) -> TradeConfig:
        """The current trade.yaml (replaced, never mutated, on a live reload)."""
        return self._trade

    @trade.setter
    def trade(self, new: TradeConfig) -> None:
        self._trade = self.desk.trade = new

    @property
    def strategy_config(self) -> StrategyConfig:
        """The current strategy yaml (replaced, never mutated, on a live reload)."""
        return self._strategy_config

    @strategy_config.setter
    def strategy_config(self, new: StrategyConfig) -> None:
        self._strategy_config = self.desk.strategy_config = new

    # ----------------------------------------------------------------- registration (Strategy API)
    def add_timer(self, interval: float, cb: Callback, basetime: float | None) -> None:
        if interval <= 0:
            raise ValueError("every(): interval must be > 0")
        self._timers.append((interval, cb, basetime))

    def add_candles(self, timescale: float, num: int, cb: Callback | None) -> CandleBuilder:
        listener = Listener(cb, self.log, self._tasks) if cb is not None else None
        builder = CandleBuilder(timescale, num, listener)
        self.feed.candle_builders.append(builder)
        return builder

    def add_listener(self, kind: str, cb: Callback) -> None:
        listener = Listener(cb, self.log, self._tasks)
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
        mode = self.desk.control_mode
        control = f" | mode {mode} ({', '.join(self.desk.control_reasons)})" if mode != "run" else ""
        return (f"status: position {size:+.8g}{at} | profit today {profit:+,.0f} JPY (realized {realized:+,.0f}) | "
                f"open orders {len(self.tracker.open_orders)} | fills {self.fills_applied}{recovered} | "
                f"API {self.budget.private_remaining} | health {self.health.health}{control}")

    # ----------------------------------------------------------------- the server's controls (bfsx ctl)
    def _on_control(self, reply: Any) -> None:
        """The mode the position server holds for this bot: applied to the desk's refusal gate at
        once, logged once per change; ``flatten`` also closes the position."""
        mode, reasons = str(reply.mode), tuple(reply.reasons)
        desk = self.desk
        if (mode, reasons) != (desk.control_mode, desk.control_reasons):
            why = f" ({', '.join(reasons)})" if reasons else ""
            if mode == "run":
                self.log.warning("position server: mode run: new orders allowed again")
            else:
                what = {"pause": "no new orders", "close-only": "only orders that reduce the position",
                        "flatten": "closing the position, then close-only"}.get(mode, mode)
                self.log.warning("position server: mode %s%s: %s", mode, why, what)
            desk.control_mode, desk.control_reasons = mode, reasons
        if mode == "flatten":
            self._flatten_if_needed()
        elif SELF_TRADE_PAUSE in reasons:
            self._step_aside_if_needed()

    def _step_aside_if_needed(self) -> None:
        """The server's correcting order would trade with this account's own resting orders: this
        bot's open orders are cancelled (the pause refuses new ones) until the server says the
        correction went through; tried again (every 4 control intervals) while any is open."""
        if not self.tracker.open_orders:
            return

        async def step_aside() -> None:
            cancelled = await self.desk.cancel_all()
            self.log.warning("position server: its correcting order would trade with this account's own orders: "
                             "%d of mine cancelled, no new order until it went through", cancelled)

        self._control_action("step-aside", step_aside)

    def _flatten_if_needed(self) -> None:
        """``bfsx ctl flatten``: cancel this bot's orders and close its position at market; tried
        again (every 4 control intervals) while a position is left."""
        if abs(self.position.size) < float(self.spec.min_size) and not self.tracker.open_orders:
            return

        async def flatten() -> None:
            await self.desk.cancel_all()
            order = await self.close_position()
            if order is not None:
                self.flatten_orders += 1
                self.log.warning("position server flatten: %s %s at market: %s", order.side, order.size,
                                 order.state.value + (f" ({order.reason})" if order.reason else ""))

        self._control_action("flatten", flatten)

    def _control_action(self, kind: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run what the server's mode asks (``flatten``, ``step-aside``) as a task: one at a time
        per kind, at most once every 4 control intervals, never while stopping."""
        running = self._control_tasks.get(kind)
        if self._stopping or (running is not None and not running.done()):
            return
        now = clock.monotonic()
        if now - self._control_tried_m.get(kind, -1e9) < 4 * self.trade.pos_server_control_interval:
            return
        self._control_tried_m[kind] = now
        self._control_tasks[kind] = self._spawn(action(), f"ctl-{kind}")

    def api_remaining(self) -> int:
        """Private calls left: our own budget, which honours the account-wide view when a position
        server answers (``ApiBudget.apply_account``)."""
        return self.budget.private_remaining

    def _on_account_budget(self, reply: Any) -> None:
        if reply.budget is not None:
            self.budget.apply_account(reply.budget)

    # ----------------------------------------------------------------- orders (the desk's)
    async def send_order(self, side: Side, size: float, price: float | None, *, closing: bool = False, **opts: Any) -> Order:
        """See :meth:`OrderDesk.send_order`."""
        return await self.desk.send_order(side, size, price, closing=closing, **opts)

    async def cancel_order(self, order_or_id: Order | str) -> bool:
        """See :meth:`OrderDesk.cancel_order`."""
        return await self.desk.cancel_order(order_or_id)

    async def cancel_all(self) -> int:
        """See :meth:`OrderDesk.cancel_all`."""
        return await self.desk.cancel_all()

    async def close_position(self) -> Order | None:
        """See :meth:`OrderDesk.close_position`."""
        return await self.desk.close_position()

    # ----------------------------------------------------------------- fills (the reconciler's)
    @property
    def fills_applied(self) -> int:
        """Fills counted into the position this run."""
        return self.reconciler.fills_applied

    @property
    def fills_recovered(self) -> int:
        """Of which found by a resync (their events were lost)."""
        return self.reconciler.fills_recovered

    def _on_new_fills(self, new: list[Fill]) -> None:
        for fill in new:
            for listener in self._listeners["fill"]:
                listener(fill)
        self._report()

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
        """See :meth:`Reconciler.resync`."""
        await self.reconciler.resync()

    # ----------------------------------------------------------------- background tasks
    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _timer_loop(self, interval: float, cb: Callback, basetime: float | None) -> None:
        listener = Listener(cb, self.log, self._tasks)
        while not self._stopping:
            if basetime is None:
                await asyncio.sleep(interval)
            else:
                now = clock.time()
                nxt = (now - basetime) // interval * interval + interval + basetime
                await asyncio.sleep(max(0.0, nxt - now))
            if not self._stopping:
                listener()

    async def _drift_round(self) -> None:
        """One round of single-bot drift correction (adjust_position_with_api, only without a
        position server); :func:`~bfsx.account.drift.run_drift_loop` runs it every interval."""
        if not self.trade.adjust_position_with_api or self._stopping:
            return
        quiet = self.tracker.in_flight == 0 and clock.monotonic() - self.reconciler.last_activity > QUIET_SECONDS
        actual: Decimal | None
        try:
            actual = await self.rest.net_position(self.product) - Decimal(str(self.trade.base_position))
        except BitflyerError as e:
            self.log.warning("drift check: exchange position unknown (%s); no action", e)
            actual = None
        expected = self.position.exact_size
        corr = self.drift.observe(expected, actual, quiet=quiet)
        if corr is None:
            return
        if not can_order(self.health.health, self.health.state, self.trade.trade_health):
            self.log.warning("drift %s but health %s: no correction", corr, self.health.health)
            return
        self.log.warning("position drift: exchange %s vs self %s -> correcting %s %s", actual, expected, corr.side, corr.size)
        try:
            await self.desk.send_correction(corr.side, float(corr.size))
        except BitflyerError as e:
            self.log.error("correcting order failed: %s", e)
        else:
            self.drift.sent()

    async def _status_loop(self) -> None:
        """The status line every ``status_interval`` seconds (0 = off; applies live)."""
        while not self._stopping:
            interval = self.trade.status_interval
            await asyncio.sleep(interval or 1.0)
            if interval and self.trade.status_interval and not self._stopping:
                self.log.info("%s", self.status_line())

    async def _chart_sample_loop(self, charts: BotChartReporter) -> None:
        """One sample every few seconds for this bot's own chart (bounded in the reporter)."""
        from bfsx.reporting.samples import BotSample

        while not self._stopping:
            charts.record(BotSample(
                ts=clock.time(), bot=self.bot_name, market=self.product, position=self.position.size,
                profit=self.realized_today() + self.unrealized(), api_remaining=self.budget.private_remaining,
            ))
            await asyncio.sleep(CHART_SAMPLE_SECONDS)

    async def _on_connect(self, reconnected: bool) -> None:
        if reconnected:
            self.log.warning("realtime reconnected: resyncing orders and fills")
            self._note_reconnect(clock.monotonic())
        await self.resync()

    # ----------------------------------------------------------------- alerts (strategy webhook)
    def alert(self, kind: str, text: str) -> None:
        """A log line, and a message to the strategy's ``discord_webhook`` when one is set
        (rate-limited per kind, never blocking)."""
        self.log.warning("ALERT %s: %s", kind, text)
        if self.alerts is not None:
            self.alerts.emit(kind, text)

    def _note_reconnect(self, now_m: float) -> None:
        self._reconnects.append(now_m)
        n = max(2, self.reconnect_storm_count)
        recent = [t for t in self._reconnects if now_m - t <= self.reconnect_storm_window_s]
        if len(recent) >= n:
            self.alert("reconnect_storm", f"{self.product}: {len(recent)} realtime reconnects in the last "
                                          f"{self.reconnect_storm_window_s:.0f} s")
            self._reconnects.clear()  # the next storm counts afresh

    def _on_health(self, health: str, state: str) -> None:
        if health_rank(health) >= health_rank("NO ORDER") and health != "UNKNOWN":
            self.alert("health_stop", f"{self.product}: exchange health {health} / {state}: no order goes through")

    async def _alert_loop(self) -> None:
        """Looks for a new -1 pause (an over-limit answer) every ``alert_check_interval_s``."""
        while not self._stopping:
            until = self.budget.paused_until
            now = clock.time()
            # One alert per pause: every further -1 during it extends the same pause.
            paused, was = until > now, self._paused
            self._paused = paused
            if paused and not was:
                self.alert("over_limit", f"{self.product}: the exchange answered -1 (over an API limit): orders "
                                         f"pause for {until - now:.0f} s")
            await asyncio.sleep(self.alert_check_interval_s)

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
        unknown = self.reconciler.restore_intents()
        if unknown:
            self.log.warning("%d order(s) sent before the restart have no known outcome: looking them up",
                             unknown)
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
        self.realtime.subscribe(channels.CHILD_ORDER_EVENTS, self.reconciler.on_child_events)
        self.realtime.on_connect(self._on_connect)
        await self.health.start()
        await self.realtime.start()
        if self.posclient is not None:
            await self.posclient.start()
            self._report()
        await call_maybe_async(self.strategy.initialize)
        for interval, cb, basetime in self._timers:
            self._spawn(self._timer_loop(interval, cb, basetime), "timer")
        self._spawn(self.reconciler.audit_loop(lambda: self._stopping), "order-audit")
        self._spawn(self._status_loop(), "status")
        if self.charts is not None:
            self.charts.start()
            self._spawn(self._chart_sample_loop(self.charts), "chart-samples")
        if self.alerts is not None:
            self.alerts.start()
            self.health.on_change.append(self._on_health)
            self._spawn(self._alert_loop(), "alerts")
        if self.posclient is None:
            self._spawn(run_drift_loop(
                lambda: self.trade.adjust_position_interval, self._drift_round, log=self.log,
                what="drift check", running=lambda: not self._stopping,
            ), "drift")
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
        self.desk.stopping = True
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
        if self.alerts is not None:
            await self.alerts.close()
        self.feed.close()
        await self.health.stop()
        await self.realtime.close()
        await self.rest.close()
        self.journal.close()
        self.log.info("stopped: position %s, realized today %.0f", self.position.size, self.realized_today())

    async def _cancel_and_confirm(self) -> None:
        deadline = clock.monotonic() + STOP_CANCEL_TIMEOUT
        if self.tracker.intents:  # an order of unknown outcome may be live: find it, so it is cancelled too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_CANCEL_TIMEOUT / 2):
                    await self.reconciler.resolve_intents()
        await self.desk.cancel_all()
        left = await self.reconciler.final_word(deadline - clock.monotonic())
        if left:
            self.log.error("orders still open after stop: %s", ", ".join(left))

    async def _flatten(self) -> None:
        order = await self.close_position()
        if order is None or order.state in (OrderState.REFUSED, OrderState.FAILED):
            return
        deadline = clock.monotonic() + STOP_CANCEL_TIMEOUT
        while abs(self.position.size) >= float(self.spec.min_size) and clock.monotonic() < deadline:
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
