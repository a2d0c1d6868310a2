"""``bfsx sim --upstream``: paper trading on another simulator's feed, over real sockets
(docs/simulator.md#paper-trading-on-a-live-feed).

The upstream is an in-process simulator whose synthetic market stands still (no takers, no drift),
so every print on it comes from a trader the test drives there (``demo-key-3`` takes,
``demo-key-2`` adds volume); the paper simulator follows it and the paper trader (``demo-key-1``)
sends orders to the paper simulator only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bfsx.bitflyer import endpoints
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient, eventually
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
KEYS = [{"api_key": f"demo-key-{n}", "api_secret": f"demo-secret-{n}"} for n in (1, 2, 3)]


def upstream_config() -> SimConfig:
    """A market that only moves when a test trader trades on it; large levels (mean 1 BTC)."""
    return SimConfig.fast(
        products=[FX],
        accounts=KEYS,
        market={
            "taker_rate": 0.0, "churn_per_second": 0.0, "volatility": 0.0, "noise": 0.0, "jump_probability": 0.0,
            "impact": 0.0, "refill_rate": 0.0, "level_fill_probability": 1.0, "level_size_mean": 1.0,
            "snapshot_interval": 0.2,
        },
    )


def paper_config(**upstream: Any) -> SimConfig:
    up = {"backoff_s": 0.05, "backoff_max_s": 0.2, "silence_s": 0.0, **upstream}
    return SimConfig.fast(products=[FX], accounts=KEYS, upstream=up)


@pytest.fixture
async def upstream() -> AsyncIterator[SimServer]:
    async with SimServer(upstream_config()) as server:
        yield server


@pytest.fixture
async def paper(upstream: SimServer) -> AsyncIterator[SimServer]:
    async with SimServer(paper_config(), upstream=upstream.ws_url) as server:
        assert server.upstream_market is not None
        await eventually(lambda: server.upstream_market is not None and server.upstream_market.known(FX),
                         what="the paper simulator knows the upstream book")
        yield server


@pytest.fixture
async def traders(upstream: SimServer, paper: SimServer) -> AsyncIterator[dict[str, WireClient]]:
    async with WireClient(paper.url, "demo-key-1", "demo-secret-1") as me, \
            WireClient(upstream.url, "demo-key-2", "demo-secret-2") as maker, \
            WireClient(upstream.url, "demo-key-3", "demo-secret-3") as taker:
        yield {"me": me, "maker": maker, "taker": taker}


def touch(sim: SimServer, side: int) -> tuple[int, int]:
    """(price, sats) of the best level on ``side`` (1 bid, -1 ask)."""
    book = sim.engine.markets[FX].book
    price = book.touch(side)
    assert price is not None
    return price, book.side(side)[price].total


async def order_row(client: WireClient, acceptance_id: str) -> dict[str, Any]:
    rows = (await client.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acceptance_id)).data
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


async def resting(paper: SimServer, client: WireClient, acceptance_id: str) -> dict[str, Any]:
    async def placed() -> dict[str, Any] | None:
        rows = (await client.get(endpoints.GET_CHILD_ORDERS, product_code=FX,
                                 child_order_acceptance_id=acceptance_id)).data
        return rows[0] if rows else None

    row: dict[str, Any] = await eventually(placed, what="the paper order is placed")
    return row


async def followed(paper: SimServer, upstream: SimServer) -> None:
    """Wait until the paper simulator has taken every print the upstream made."""
    want = len(upstream.engine.markets[FX].history)
    up = paper.upstream_market
    assert up is not None
    await eventually(lambda: up.prints >= want, what=f"{want} upstream prints on the paper simulator")


async def test_the_paper_book_is_the_upstreams_and_no_order_goes_upstream(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    assert paper.flow is None and paper.state()["flow_steps"] == 0
    board = (await traders["me"].get(endpoints.GET_BOARD, product_code=FX)).data
    theirs = (await traders["taker"].get(endpoints.GET_BOARD, product_code=FX)).data
    depth = upstream.config.market.snapshot_depth  # what the upstream's snapshots carry
    assert len(board["asks"]) == len(board["bids"]) == depth
    assert board == {**theirs, "bids": theirs["bids"][:depth], "asks": theirs["asks"][:depth]}
    # a paper order shows on the paper book only
    price, _ = touch(upstream, -1)
    acc = await traders["me"].order(FX, "SELL", 0.01, price + 7)
    await resting(paper, traders["me"], acc)
    await eventually(lambda: touch(paper, -1)[0] == price and paper.engine.markets[FX].book.asks.get(price + 7),
                     what="the paper order on the paper book")
    assert upstream.engine.markets[FX].book.asks.get(price + 7) is None
    mine = upstream.engine.accounts["demo-key-1"]
    assert not mine.active and not mine.finished  # the same key on the upstream never saw an order
    assert paper.feed is not None and not paper.feed.client.authenticated  # public channels only
    assert upstream.state()["websockets"] == 1


async def test_a_resting_order_fills_only_once_the_queue_ahead_has_traded(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    price, ahead = touch(upstream, -1)
    assert ahead >= 10_000_000  # 0.1 BTC ahead (seeded book)
    acc = await traders["me"].order(FX, "SELL", 0.01, price)
    await resting(paper, traders["me"], acc)
    # volume joins the level behind the paper order
    await traders["maker"].order(FX, "SELL", 0.05, price)
    await eventually(lambda: touch(paper, -1)[1] == ahead + 5_000_000 + 1_000_000, what="the level grows")
    # half the queue ahead trades: no fill
    half = round(ahead // 2 / 1e8, 8)
    await traders["taker"].order(FX, "BUY", half)
    await followed(paper, upstream)
    row = await order_row(traders["me"], acc)
    assert row["executed_size"] == 0 and row["child_order_state"] == "ACTIVE"
    # the rest of the queue ahead and 0.02 of the volume behind it trade, all at the paper order's price
    rest = round((ahead - ahead // 2 + 2_000_000) / 1e8, 8)
    await traders["taker"].order(FX, "BUY", rest, price, time_in_force="IOC")
    await followed(paper, upstream)
    row = await order_row(traders["me"], acc)
    assert row["child_order_state"] == "COMPLETED" and row["executed_size"] == 0.01 and row["average_price"] == price
    fills = (await traders["me"].get(endpoints.GET_MY_EXECUTIONS, product_code=FX)).data
    assert [(f["side"], f["price"], f["size"]) for f in fills] == [("SELL", price, 0.01)]
    assert paper.state()["accounts"]["demo-key-1"]["positions"][FX]["net"] == -0.01


async def test_prints_through_a_resting_order_fill_it_up_to_their_size(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    bid, ahead = touch(upstream, 1)
    acc = await traders["me"].order(FX, "BUY", 0.01, bid)
    await resting(paper, traders["me"], acc)
    # the whole best bid and 0.004 of the next one trade: the print below the paper bid went through it
    await traders["taker"].order(FX, "SELL", round((ahead + 400_000) / 1e8, 8))
    await followed(paper, upstream)
    row = await order_row(traders["me"], acc)
    assert row["executed_size"] == 0.004 and row["child_order_state"] == "ACTIVE"
    await traders["taker"].order(FX, "SELL", 0.02)
    await followed(paper, upstream)
    row = await order_row(traders["me"], acc)
    assert row["executed_size"] == 0.01 and row["child_order_state"] == "COMPLETED" and row["average_price"] == bid


async def test_an_order_that_crosses_the_upstream_book_takes_it_once(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    ask, size = touch(upstream, -1)
    take = round(size / 1e8, 8)
    acc = await traders["me"].order(FX, "BUY", take, ask, time_in_force="IOC")
    row = await eventually(lambda: _done(traders["me"], acc), what="the IOC finished")
    assert row["executed_size"] == take and row["average_price"] == ask
    # the level stays taken on the paper book (the live market would not refill it for a second order)
    assert touch(paper, -1)[0] > ask
    again = await traders["me"].order(FX, "BUY", 0.01, ask, time_in_force="IOC")
    row = await eventually(lambda: _done(traders["me"], again), what="the second IOC finished")
    assert row["executed_size"] == 0 and row["child_order_state"] == "EXPIRED"


async def _done(client: WireClient, acc: str) -> dict[str, Any] | None:
    rows = (await client.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    return rows[0] if rows and rows[0]["child_order_state"] != "ACTIVE" else None


async def test_upstream_down_refuses_orders_and_fills_nothing_then_recovers(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    up = paper.upstream_market
    assert up is not None
    ask, _ = touch(upstream, -1)
    bid, _ = touch(upstream, 1)
    acc = await traders["me"].order(FX, "BUY", 0.01, bid)
    await resting(paper, traders["me"], acc)
    port = upstream.port
    await upstream.stop()  # the upstream goes away (its socket closes)
    await eventually(lambda: not up.known(FX), what="the paper simulator loses the book")
    me = traders["me"]
    r = await me.post(endpoints.SEND_CHILD_ORDER,
                      {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "size": 0.01, "price": ask})
    assert r.status == 400 and r.data["status"] == -204
    assert "upstream" in r.data["error_message"] and "disconnected" in r.data["error_message"]
    assert (await me.get(endpoints.GET_HEALTH, product_code=FX)).data == {"status": "STOP"}
    assert (await me.get(endpoints.GET_TICKER, product_code=FX)).data["state"] == "CLOSED"
    board = (await me.get(endpoints.GET_BOARD, product_code=FX)).data
    assert board["asks"] == [] and board["bids"] == [{"price": bid, "size": 0.01}]  # only the paper order
    row = await order_row(me, acc)
    assert row["child_order_state"] == "ACTIVE" and row["executed_size"] == 0
    # the upstream comes back on the same port: the book is known again at its first snapshot
    async with SimServer(upstream_config(), port=port) as again:
        await eventually(lambda: up.known(FX), what="the book known again")
        assert (await me.get(endpoints.GET_HEALTH, product_code=FX)).data == {"status": "NORMAL"}
        assert (await me.get(endpoints.GET_TICKER, product_code=FX)).data["state"] == "RUNNING"
        new_ask, _ = touch(again, -1)
        taken = await me.order(FX, "BUY", 0.01, new_ask, time_in_force="IOC")
        row = await eventually(lambda: _done(me, taken), what="the IOC finished")
        assert row["executed_size"] == 0.01 and row["average_price"] == new_ask
        assert paper.feed is not None and paper.feed.client.reconnects >= 1
    assert up.losses >= 1 and paper.state()["upstream"]["losses"] == up.losses


async def test_ccxt_paper_trades_on_the_upstream_with_only_its_endpoint_changed(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient]
) -> None:
    import aiohttp
    import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]

    session = aiohttp.ClientSession()
    exchange = ccxt_async.bitflyer({"apiKey": "demo-key-1", "secret": "demo-secret-1", "session": session,
                                    "enableRateLimit": False, "urls": {"api": {"rest": paper.url}}})
    try:
        await exchange.load_markets()
        book = await exchange.fetch_order_book("BTC/JPY:JPY")
        bid, ahead = touch(upstream, 1)
        assert book["bids"][0] == [bid, ahead / 1e8]  # the upstream's book, through the paper simulator
        created = await exchange.create_order("BTC/JPY:JPY", "limit", "buy", 0.01, bid)
        await resting(paper, traders["me"], created["id"])
        # the queue ahead trades and a print goes through the bid: the paper order fills
        await traders["taker"].order(FX, "SELL", round((ahead + 2_000_000) / 1e8, 8))
        await followed(paper, upstream)
        order = await exchange.fetch_order(created["id"], "BTC/JPY:JPY")
        assert order["status"] == "closed" and order["filled"] == 0.01 and order["price"] == bid
    finally:
        await exchange.close()
        await session.close()
    assert not upstream.engine.accounts["demo-key-1"].finished  # nothing of it reached the upstream


async def test_a_bfsx_bot_paper_trades_on_the_upstream(
    upstream: SimServer, paper: SimServer, traders: dict[str, WireClient], tmp_path: Path
) -> None:
    import asyncio

    import bfsx
    from bfsx.bot.runtime import BotRuntime
    from bfsx.config import StrategyConfig, TradeConfig

    class JoinTheBid(bfsx.Strategy):
        def initialize(self) -> None:
            self.sent: list[Any] = []
            self.every(0.05, self.tick)

        async def tick(self) -> None:
            if not self.sent and self.best_bid:
                self.sent.append(await self.buy(0.01, self.best_bid))

    cfg = TradeConfig.model_validate({
        "apikey": "demo-key-1", "secret": "demo-secret-1", "endpoint": paper.url, "ws_endpoint": paper.ws_url,
        "log_folder": str(tmp_path), "console_output": False, "health_interval": 0.2, "bot_name": "paperbot",
    })
    strategy = JoinTheBid()
    rt = BotRuntime(cfg, StrategyConfig(), strategy)
    task = asyncio.create_task(rt.run())
    try:
        bid, ahead = touch(upstream, 1)
        await eventually(lambda: task.done() or paper.engine.accounts["demo-key-1"].active, what="the bot's bid")
        assert not task.done()
        (order,) = paper.engine.accounts["demo-key-1"].active.values()
        assert (order.price, order.size) == (bid, 1_000_000)
        await traders["taker"].order(FX, "SELL", round((ahead + 2_000_000) / 1e8, 8))
        await followed(paper, upstream)
        await eventually(lambda: strategy.position == 0.01, what="the bot's own position counts the paper fill")
        assert paper.state()["accounts"]["demo-key-1"]["positions"][FX]["net"] == 0.01
    finally:
        rt.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
