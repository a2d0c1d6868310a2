"""The user-facing strategy API (README.md#five-minute-tutorial-your-first-strategy).

A strategy file defines ``class MyStrategy(bfsx.Strategy)``; the runtime instantiates it, binds itself,
calls :meth:`Strategy.initialize` and then drives the registered callbacks. Everything a strategy
reads is local state kept current by the runtime: no property makes an API call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bfsx.bitflyer.timestamps import JST

if TYPE_CHECKING:
    from bfsx.account.orders import Order
    from bfsx.bot.runtime import BotRuntime
    from bfsx.market.book import OrderBook
    from bfsx.market.candles import CandleBuilder

Callback = Callable[..., Awaitable[None] | None]


class Strategy:
    """Base class of every bfsx strategy. Override :meth:`initialize` and register callbacks there."""

    _rt: BotRuntime

    def _bind(self, runtime: BotRuntime) -> None:
        self._rt = runtime

    # ----------------------------------------------------------------- lifecycle hooks
    def initialize(self) -> Awaitable[None] | None:
        """Called once before trading starts (sync or ``async def``): register callbacks here."""
        return None

    def parameters_changed(self) -> Awaitable[None] | None:
        """Called after the strategy yaml's ``parameters`` were reloaded (sync or async)."""
        return None

    def finalize(self) -> Awaitable[None] | None:
        """Called once when the bot stops, before its open orders are cancelled."""
        return None

    # ----------------------------------------------------------------- registration
    def every(self, interval: float, callback: Callback, basetime: float | None = None) -> None:
        """Call ``callback()`` every ``interval`` seconds of the runtime's clock; with ``basetime``
        the calls are aligned to multiples of ``interval`` (epoch seconds) offset by ``basetime``
        (e.g. every 60 s at :05)."""
        self._rt.add_timer(interval, callback, basetime)

    def candles(self, timescale: float, num_of_candle: int, callback: Callback | None = None) -> CandleBuilder:
        """Self-built ``timescale``-second OHLCV candles (buy/sell volume, empty seconds carried
        forward), ``num_of_candle`` kept; ``callback(candles)`` on each confirmed candle."""
        return self._rt.add_candles(timescale, num_of_candle, callback)

    def on_executions(self, callback: Callback) -> None:
        """``callback(executions)`` for every public executions batch of this product."""
        self._rt.add_listener("executions", callback)

    def on_board(self, callback: Callback) -> None:
        """``callback(board)`` after every board update (snapshot or diff) of this product."""
        self._rt.add_listener("board", callback)

    def on_fill(self, callback: Callback) -> None:
        """``callback(fill)`` for each of this bot's own fills, after the position was updated."""
        self._rt.add_listener("fill", callback)

    # ----------------------------------------------------------------- orders
    async def buy(self, size: float, price: float | None = None, **opts: Any) -> Order:
        """Buy ``size``; ``price=None`` is a market order. ``opts``: time_in_force, minute_to_expire."""
        return await self._rt.desk.send_order("BUY", size, price, **opts)

    async def sell(self, size: float, price: float | None = None, **opts: Any) -> Order:
        """Sell ``size``; ``price=None`` is a market order. ``opts``: time_in_force, minute_to_expire."""
        return await self._rt.desk.send_order("SELL", size, price, **opts)

    async def cancel(self, order_or_id: Order | str) -> bool:
        """Ask the exchange to cancel one order (by :class:`Order` or acceptance id)."""
        return await self._rt.desk.cancel_order(order_or_id)

    async def cancel_all(self) -> int:
        """Cancel every open order of THIS bot (not the account's other bots); returns how many."""
        return await self._rt.desk.cancel_all()

    async def close_position(self) -> Order | None:
        """Flatten this bot's position with a market order; None when already flat."""
        return await self._rt.desk.close_position()

    # ----------------------------------------------------------------- time (the runtime's clock)
    def time(self) -> float:
        """Now in epoch seconds on the runtime's clock: the wall clock live, the replay's virtual
        clock in a backtest. Use it (never ``time.time()`` / ``time.monotonic()``) for ages and
        timeouts, so the strategy behaves the same in both."""
        return self._rt.clock.time()

    @property
    def now(self) -> datetime:
        """Now as an aware JST datetime on the runtime's clock (see :meth:`time`)."""
        return datetime.fromtimestamp(self._rt.clock.time(), JST)

    # ----------------------------------------------------------------- state (read-only, local)
    @property
    def position(self) -> float:
        """This bot's signed position (buy > 0), from its own fills."""
        return self._rt.position.size

    @property
    def average_price(self) -> float:
        return self._rt.position.average_price

    @property
    def profit(self) -> float:
        """Today's (JST) realized plus current unrealized PnL."""
        return self.realized_profit + self.unrealized_profit

    @property
    def realized_profit(self) -> float:
        return self._rt.realized_today()

    @property
    def unrealized_profit(self) -> float:
        return self._rt.unrealized()

    @property
    def ltp(self) -> float:
        return self._rt.feed.executions.ltp

    @property
    def best_bid(self) -> float:
        return self._rt.feed.book.best_bid

    @property
    def best_ask(self) -> float:
        return self._rt.feed.book.best_ask

    @property
    def mid_price(self) -> float:
        return self._rt.feed.book.mid_price

    @property
    def board(self) -> OrderBook:
        """The live order book (``bids(n)``, ``asks(n)``, ``best_bid``...)."""
        return self._rt.feed.book

    @property
    def open_orders(self) -> list[Order]:
        return self._rt.tracker.open_orders

    @property
    def api_remaining(self) -> int:
        """Private API calls left in the window: the account-wide figure when a position server runs."""
        return self._rt.api_remaining()

    @property
    def health(self) -> str:
        return self._rt.health.health

    @property
    def parameters(self) -> dict[str, Any]:
        return self._rt.strategy_config.parameters

    @property
    def product(self) -> str:
        return self._rt.product

    @property
    def log(self) -> logging.Logger:
        return self._rt.log
