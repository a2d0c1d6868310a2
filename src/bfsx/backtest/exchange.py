"""The backtest's exchange: the simulator's matching engine behind the transport the runtime calls.

Owns :class:`BacktestEngine` (``sim.engine.Engine`` dated by the virtual clock, noting which side
of each of the bot's fills was the maker), :class:`BacktestRest` (the subset of
:class:`~bfsx.bitflyer.rest.RestClient` the runtime uses, answered by the engine after the order
entry latency, replies after the response latency) and :class:`BacktestRealtime` (the subset of
:class:`~bfsx.bitflyer.realtime.RealtimeClient`: channel handlers called in-process, the engine's
private events delivered after the response latency). Nothing here opens a socket or encodes JSON:
only the transport is swapped, the runtime above it is the live one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bfsx import clock
from bfsx.bitflyer import channels, endpoints
from bfsx.bitflyer.errors import ApiError, api_error
from bfsx.bitflyer.rest import LostOrderLookup
from bfsx.sim import views
from bfsx.sim.book import Market
from bfsx.sim.config import AccountConfig, SimConfig
from bfsx.sim.engine import Engine
from bfsx.sim.model import SAT, Account, EngineError, Order

API_KEY = "backtest"
#: Collateral and balances of the backtest account: large enough that the exchange's funds and
#: margin checks never bind, so the strategy's own risk limits (the desk's) are what bounds it.
ACCOUNT_JPY = 1e11
ACCOUNT_BTC = 1e5


def backtest_account() -> AccountConfig:
    return AccountConfig(api_key=API_KEY, api_secret="backtest-secret", jpy=ACCOUNT_JPY, btc=ACCOUNT_BTC)


@dataclass(frozen=True, slots=True)
class Latency:
    """The latency model: order entry (bot → matching engine) and response (engine → bot: the REST
    reply and the private events), in seconds; ``None`` follows the feed latency measured in the
    recording (its current estimate at each order) instead of a constant."""

    entry_s: float | None
    response_s: float | None

    def describe(self) -> str:
        def one(name: str, s: float | None) -> str:
            return f"{name} = the recorded feed latency at the time (EWMA)" if s is None else f"{name} {s * 1000:g} ms"

        constant = " (constant)" if self.entry_s is not None and self.response_s is not None else ""
        return f"{one('order entry', self.entry_s)}, {one('response', self.response_s)}{constant}"


class BacktestEngine(Engine):
    """The simulator's engine on the virtual clock, remembering which of the account's fills were
    maker fills (exec id → True) for the report's maker / taker split, and telling the market
    source when the bot took the market's liquidity."""

    def __init__(self, config: SimConfig) -> None:
        self._now_s = -1.0
        self._now_dt = datetime.fromtimestamp(0, UTC)
        super().__init__(config)
        self.clock = clock.monotonic
        self.maker_fills: dict[int, bool] = {}
        #: ``on_taken(side, price, sats)``: the bot's order took mirrored liquidity (see market.py).
        self.on_taken: Callable[[int, int, int], None] | None = None

    def now(self) -> datetime:
        t = clock.time()
        if t != self._now_s:  # many engine calls share one virtual instant: one datetime for them
            self._now_s, self._now_dt = t, datetime.fromtimestamp(t, UTC)
        return self._now_dt

    def _trade(self, mkt: Market, taker: Order, maker: Order, price: int, size: int, when: datetime) -> None:
        super()._trade(mkt, taker, maker, price, size, when)
        if maker.account is not None:
            self.maker_fills[self.last_exec_id] = True
        elif taker.account is not None:
            self.maker_fills[self.last_exec_id] = False
            if self.on_taken is not None:  # the bot took the market's liquidity (a replay remembers it)
                self.on_taken(maker.side, price, size)


def _api_error(e: EngineError, path: str) -> ApiError:
    body = e.body
    return api_error(int(body["status"]), str(body["error_message"]), e.code.http, path)


class BacktestRealtime:
    """Channel handlers called in-process; ``connected`` is set by :meth:`start`."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[[Any], None]]] = {}
        self._on_connect: list[Callable[[bool], Awaitable[None] | None]] = []
        self.connected = asyncio.Event()
        self.reconnects = 0

    def subscribe(self, channel: str, handler: Callable[[Any], None]) -> None:
        self.handlers.setdefault(channel, []).append(handler)

    def on_connect(self, cb: Callable[[bool], Awaitable[None] | None]) -> None:
        self._on_connect.append(cb)

    def on_silence(self, cb: Callable[[str], None]) -> None:
        return None  # the replay's gaps are reconnects (see reconnect()), never silences

    def dispatch(self, channel: str, message: Any) -> None:
        """What the live read loop does with one decoded frame."""
        for handler in self.handlers.get(channel, ()):
            handler(message)

    async def _announce(self, reconnected: bool) -> None:
        for cb in self._on_connect:
            result = cb(reconnected)
            if result is not None:
                await result

    async def start(self) -> None:
        self.connected.set()
        await self._announce(False)

    def drop(self) -> None:
        """The connection went (a gap in the recording): nothing is delivered until :meth:`reconnect`."""
        self.connected.clear()

    def reconnect(self) -> None:
        """The connection is back: the runtime resyncs and the feed waits for the next snapshot."""
        self.reconnects += 1
        self.connected.set()
        asyncio.get_running_loop().create_task(self._announce(True))

    async def close(self) -> None:
        self.connected.clear()


class BacktestRest:
    """The REST calls of the runtime, answered by the engine (``RestClient``'s signatures)."""

    lookup_clock_slack = 0.0

    def __init__(self, engine: BacktestEngine, realtime: BacktestRealtime, latency: Latency,
                 feed_latency_s: Callable[[], float]) -> None:
        self.engine = engine
        self.account: Account = engine.accounts[API_KEY]
        self.realtime = realtime
        self.latency = latency
        self._feed_latency_s = feed_latency_s
        self.orders_sent = 0
        self.orders_rejected = 0
        self.cancels_sent = 0
        self.public_sink: Callable[[str, list[dict[str, Any]]], None] = lambda product, rows: None
        engine.listener = self  # the engine reports to us (EngineListener)
        self._private = channels.CHILD_ORDER_EVENTS

    # ----------------------------------------------------------------- latency
    def _entry_s(self) -> float:
        s = self.latency.entry_s
        return self._feed_latency_s() if s is None else s

    def _response_s(self) -> float:
        s = self.latency.response_s
        return self._feed_latency_s() if s is None else s

    # ----------------------------------------------------------------- EngineListener
    def on_executions(self, product: str, rows: list[dict[str, Any]]) -> None:
        self.public_sink(product, rows)  # the market source decides what the bot sees (market.py)

    def on_child_events(self, account: Account, events: list[dict[str, Any]]) -> None:
        if account is self.account and events:
            asyncio.get_running_loop().call_later(self._response_s(), self.realtime.dispatch, self._private, events)

    # ----------------------------------------------------------------- orders
    async def send_child_order(
        self, product: str, side: str, size: float, price: float | None = None, *,
        time_in_force: str = "GTC", minute_to_expire: int | None = None, known_ids: object = None,
    ) -> str:
        body: dict[str, Any] = {
            "product_code": product, "child_order_type": "MARKET" if price is None else "LIMIT",
            "side": side, "size": size, "time_in_force": time_in_force,
        }
        if price is not None:
            body["price"] = price
        if minute_to_expire is not None:
            body["minute_to_expire"] = minute_to_expire
        self.orders_sent += 1
        await asyncio.sleep(self._entry_s())
        engine = self.engine
        try:
            order = engine.accept(self.account, engine.parse_order(body))
        except EngineError as e:
            self.orders_rejected += 1
            await asyncio.sleep(self._response_s())
            raise _api_error(e, endpoints.SEND_CHILD_ORDER) from None
        engine.place(order)  # placed as it is accepted: the reply and its events travel back alike
        await asyncio.sleep(self._response_s())
        return order.acceptance_id

    async def cancel_child_order(self, product: str, *, acceptance_id: str | None = None,
                                 order_id: str | None = None) -> None:
        self.cancels_sent += 1
        await asyncio.sleep(self._entry_s())
        self.engine.cancel(self.account, product, acceptance_id, order_id)
        await asyncio.sleep(self._response_s())

    async def cancel_all_child_orders(self, product: str) -> None:
        await asyncio.sleep(self._entry_s())
        self.engine.cancel_all(self.account, product)
        await asyncio.sleep(self._response_s())

    # ----------------------------------------------------------------- reads (resync, audit, health)
    async def get_child_orders(self, product: str, *, count: int = 100, before: int | None = None,
                               after: int | None = None, state: str | None = None,
                               acceptance_id: str | None = None, order_id: str | None = None,
                               timeout: float | None = None) -> list[Any]:
        await asyncio.sleep(self._response_s())
        return views.child_orders(self.engine, self.account, product, count, before, after, state, order_id,
                                  acceptance_id)

    async def get_my_executions(self, product: str, *, count: int = 100, before: int | None = None,
                                after: int | None = None, acceptance_id: str | None = None,
                                order_id: str | None = None) -> list[Any]:
        await asyncio.sleep(self._response_s())
        return views.my_executions(self.engine, self.account, product, count, before, after, order_id, acceptance_id)

    async def get_board_state(self, product: str) -> Any:
        return {"health": self.engine.health(), "state": self.engine.board_state()}

    async def net_position(self, product: str) -> Decimal:
        mkt = self.engine.markets[product]
        if mkt.spec.is_fx:
            return Decimal(self.account.net(product)) / SAT
        return Decimal(self.account.btc) / SAT - Decimal(repr(ACCOUNT_BTC))

    async def find_lost_order(self, product: str, side: str, size: float, price: float | None = None,
                              **_: Any) -> LostOrderLookup:
        # Never reached in a backtest (no reply is ever lost), kept so the runtime's path type-checks.
        return LostOrderLookup(candidates=[], complete=True)

    async def close(self) -> None:
        return None
