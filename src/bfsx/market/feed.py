"""MarketFeed: wires a realtime client's public channels to the book, prints, candles and ticker.

The hot path is ``RealtimeClient.dispatch_frame`` → one handler here → one ``apply`` call →
listeners. Handlers are closures over local references so each message costs a single Python
frame before the data structure's own work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from bfsx import clock
from bfsx.bitflyer import channels
from bfsx.bitflyer.messages import Board, Execution, Ticker
from bfsx.market.book import OrderBook
from bfsx.market.candles import CandleBuilder, CandleCallback
from bfsx.market.executions import Executions
from bfsx.market.ticker import TickerState

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]
BoardListener = Callable[[OrderBook], object]
ExecutionsListener = Callable[[Sequence[Execution]], object]
TickerListener = Callable[[Ticker], object]


class RealtimeSource(Protocol):
    """What the feed needs from :class:`bfsx.bitflyer.realtime.RealtimeClient`.

    If the client also has a ``connected`` :class:`asyncio.Event` (set once a connection is
    subscribed, cleared when it drops), the feed uses it to spot board frames of a new connection
    that arrive before ``on_connect`` fires.
    """

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    def on_connect(self, cb: Callable[[bool], Awaitable[None] | None]) -> None: ...


def _always() -> bool:
    return True


class MarketFeed:
    """Market data of one product, kept current from the realtime API.

    ``on_board`` listeners get the :class:`OrderBook` after each snapshot or diff (only while it is
    ready); ``on_executions`` listeners get each executions batch after the prints, totals and
    candles were updated; ``on_ticker`` listeners get each ticker. Listeners are plain callables
    run in the read loop: keep them short (the bot runtime wraps async strategy callbacks).

    On a reconnect the book is cleared and stays not ready until the next snapshot, so it never
    shows levels that may have changed while disconnected.
    """

    def __init__(
        self,
        product: str,
        realtime: RealtimeSource,
        *,
        board: bool = True,
        executions: bool = True,
        ticker: bool = True,
        executions_maxlen: int = 10_000,
        candle_grace: float = 1.0,
        candle_clock: bool = True,
    ) -> None:
        self.product = product
        self.book = OrderBook()
        self.executions = Executions(executions_maxlen)
        self.ticker = TickerState()
        self.candle_builders: list[CandleBuilder] = []
        self.on_board: list[BoardListener] = []
        self.on_executions: list[ExecutionsListener] = []
        self.on_ticker: list[TickerListener] = []
        #: Seconds a bucket stays open past its end on the local clock, for feed latency.
        self.candle_grace = candle_grace
        self._candle_clock = candle_clock
        self._clock: asyncio.TimerHandle | None = None
        self.reconnects = 0
        #: Malformed prints dropped (see :meth:`bfsx.market.executions.Executions.apply`).
        self.prints_dropped = 0
        self.subscribed: list[str] = []
        connected = getattr(realtime, "connected", None)
        self._is_live: Callable[[], bool] = connected.is_set if isinstance(connected, asyncio.Event) else _always
        self._cleared_for_connection = False
        if board:
            self._subscribe(realtime, channels.board_snapshot(product), self._snapshot_handler())
            self._subscribe(realtime, channels.board(product), self._diff_handler())
        if executions:
            self._subscribe(realtime, channels.executions(product), self._executions_handler())
        if ticker:
            self._subscribe(realtime, channels.ticker(product), self._ticker_handler())
        realtime.on_connect(self._on_connect)

    def _subscribe(self, realtime: RealtimeSource, channel: str, handler: Handler) -> None:
        realtime.subscribe(channel, handler)
        self.subscribed.append(channel)

    # ------------------------------------------------------------------ handlers (hot path)
    def _snapshot_handler(self) -> Handler:
        book = self.book
        listeners = self.on_board
        is_live = self._is_live

        def on_snapshot(msg: Board) -> None:
            if not is_live():
                self._new_connection()
            if book.apply_snapshot(msg):  # a malformed one changes nothing (book.rejected)
                for cb in listeners:
                    cb(book)

        return on_snapshot

    def _diff_handler(self) -> Handler:
        book = self.book
        apply = book.apply_diff
        listeners = self.on_board

        is_live = self._is_live

        def on_diff(msg: Board) -> None:
            if not is_live():  # a frame of a connection still in its handshake
                self._new_connection()
            if apply(msg) and listeners:
                for cb in listeners:
                    cb(book)

        return on_diff

    def _executions_handler(self) -> Handler:
        executions = self.executions
        apply = executions.apply
        builders = self.candle_builders
        listeners = self.on_executions

        def on_executions(msg: list[Execution]) -> None:
            batch = apply(msg)  # without the malformed prints: they reach neither totals nor candles
            if batch is not msg:
                self.prints_dropped += len(msg) - len(batch) if type(msg) is list else 1
                if not batch:
                    return
            if builders:  # the batch's volumes are summed once, for every builder
                buy, sell, volume = executions.batch_buy_volume, executions.batch_sell_volume, executions.batch_volume
                for builder in builders:
                    builder.fold(batch, buy, sell, volume)
                if self._clock is None and self._candle_clock:  # builders appended directly to the list
                    self._start_clock()
            for cb in listeners:
                cb(batch)

        return on_executions

    def _ticker_handler(self) -> Handler:
        apply = self.ticker.apply
        listeners = self.on_ticker

        def on_ticker(msg: Ticker) -> None:
            apply(msg)
            for cb in listeners:
                cb(msg)

        return on_ticker

    def _new_connection(self) -> None:
        """Board frames are flowing on a connection that ``on_connect`` has not announced yet
        (the client subscribes first, then calls back): the book may hold levels that changed
        unseen while disconnected, so drop them now, once per connection."""
        if not self._cleared_for_connection:
            self._cleared_for_connection = True
            self.book.clear()

    def _on_connect(self, reconnected: bool) -> None:
        if reconnected:
            self.reconnects += 1
            if not self._cleared_for_connection:
                # levels may have changed unseen while disconnected: wait for the next snapshot
                self.book.clear()
            log.info("%s feed reconnected: book rebuilt from the next snapshot", self.product)
        self._cleared_for_connection = False
        if self._candle_clock and self._clock is None and self.candle_builders:
            self._start_clock()

    # ------------------------------------------------------------------ candles
    def add_candles(self, timescale: float, maxlen: int, callback: CandleCallback | None = None) -> CandleBuilder:
        """A new :class:`CandleBuilder` fed from this feed's prints (behind ``Strategy.candles``)."""
        builder = CandleBuilder(timescale, maxlen, callback)
        self.candle_builders.append(builder)
        if self._candle_clock and self._clock is None:
            self._start_clock()
        return builder

    def tick(self, now: float | None = None) -> None:
        """Confirm candles whose bucket ended more than ``candle_grace`` seconds before ``now``."""
        t = (clock.time() if now is None else now) - self.candle_grace
        for builder in self.candle_builders:
            builder.advance(t)

    def _start_clock(self) -> None:
        """Tick a few times per smallest timescale so quiet seconds still come out as candles.

        Started by :meth:`add_candles`, on connect, or on the first prints once builders exist
        (whichever comes first with a running loop); a no-op without a running loop.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def step() -> float:  # recomputed: builders may be added later
            return min(max(min((b.timescale for b in self.candle_builders), default=4.0) / 4, 0.05), 1.0)

        def fire() -> None:
            try:
                self.tick()
            except Exception:
                log.exception("candle listener failed")
            self._clock = loop.call_later(step(), fire)

        self._clock = loop.call_later(step(), fire)

    def close(self) -> None:
        """Stop the candle clock (the realtime client is closed by its owner)."""
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
