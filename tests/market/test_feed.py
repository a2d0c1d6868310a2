"""MarketFeed routing through the real RealtimeClient.dispatch_frame (no socket needed here)."""

from __future__ import annotations

from typing import Any

import orjson

from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.market import Candle, MarketFeed, OrderBook

PRODUCT = "FX_BTC_JPY"


def frame(channel: str, message: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": "channelMessage", "params": {"channel": channel, "message": message}})


def book_msg(mid: float, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> dict[str, Any]:
    return {"mid_price": mid, "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks]}


def execs(first_id: int, stamp: str, *rows: tuple[str, float, float]) -> list[dict[str, Any]]:
    return [{"id": first_id + i, "side": side, "price": price, "size": size, "exec_date": stamp,
             "buy_child_order_acceptance_id": "JRF20260923-033125-086253",
             "sell_child_order_acceptance_id": "JRF20260923-033126-086262"} for i, (side, price, size) in enumerate(rows)]


def live_client() -> RealtimeClient:
    client = RealtimeClient("ws://127.0.0.1:9/json-rpc")
    client.connected.set()  # as after a handshake
    return client


def test_channels_are_routed_to_book_prints_candles_ticker_and_listeners() -> None:
    client = live_client()
    feed = MarketFeed(PRODUCT, client, candle_clock=False)
    assert sorted(feed.subscribed) == sorted([channels.board_snapshot(PRODUCT), channels.board(PRODUCT),
                                              channels.executions(PRODUCT), channels.ticker(PRODUCT)])
    assert sorted(client.channels) == sorted(feed.subscribed)
    boards: list[tuple[float, float]] = []
    batches: list[int] = []
    tickers: list[int] = []
    confirmed: list[Candle] = []
    feed.on_board.append(lambda book: boards.append((book.best_bid, book.best_ask)))
    feed.on_executions.append(lambda batch: batches.append(len(batch)))
    feed.on_ticker.append(lambda t: tickers.append(t["tick_id"]))
    candles = feed.add_candles(1, 100, lambda cs: confirmed.append(cs[-1]))
    candles5 = feed.add_candles(5, 100)

    client.dispatch_frame(frame(channels.board(PRODUCT), book_msg(100.5, [(100.0, 1.0)], [(101.0, 1.0)])))
    assert not feed.book.ready and boards == []  # a diff before any snapshot: ignored, no listener call
    client.dispatch_frame(frame(channels.board_snapshot(PRODUCT),
                                book_msg(100.5, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 2.0)])))
    client.dispatch_frame(frame(channels.board(PRODUCT), book_msg(100.0, [(100.0, 0.0)], [(100.5, 0.3)])))
    assert boards == [(100.0, 101.0), (99.0, 100.5)]
    assert feed.book.bids() == [(99.0, 2.0)] and feed.book.asks(1) == [(100.5, 0.3)]

    client.dispatch_frame(frame(channels.executions(PRODUCT), execs(1, "2026-09-23T03:31:27.0873222Z",
                                                                     ("BUY", 101.0, 0.5), ("SELL", 100.0, 0.25))))
    client.dispatch_frame(frame(channels.executions(PRODUCT), execs(3, "2026-09-23T03:31:29.5000000Z",
                                                                     ("SELL", 99.0, 1.0))))
    assert batches == [2, 1]
    assert feed.executions.ltp == 99.0 and feed.executions.last_id == 3 and feed.executions.sell_volume == 1.25
    assert [(c.open, c.high, c.low, c.close, c.buy_volume, c.sell_volume, c.count) for c in confirmed] == [
        (101.0, 101.0, 100.0, 100.0, 0.5, 0.25, 2), (100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0)]
    assert candles.current is not None and candles.current.close == 99.0
    assert candles5.current is not None and candles5.current.count == 3 and len(candles5) == 0

    ticker = {"product_code": PRODUCT, "state": "RUNNING", "timestamp": "2026-09-23T03:31:29.6000000Z",
              "tick_id": 7, "best_bid": 99.0, "best_ask": 100.5, "ltp": 99.0, "volume": 12.5}
    client.dispatch_frame(frame(channels.ticker(PRODUCT), ticker))
    assert tickers == [7] and feed.ticker.ltp == 99.0 and feed.ticker.state == "RUNNING"
    assert feed.ticker.best_ask == 100.5 and feed.ticker.age() >= 0.0
    assert client.handler_errors == 0


def test_subscribe_only_what_is_asked() -> None:
    client = live_client()
    feed = MarketFeed("BTC_JPY", client, board=False, ticker=False)
    assert feed.subscribed == [channels.executions("BTC_JPY")] == client.channels


async def test_candle_clock_confirms_quiet_seconds() -> None:
    """With no prints for a while the feed's clock still confirms the empty seconds."""
    import asyncio
    import time

    from bfsx.bitflyer import timestamps

    client = live_client()
    feed = MarketFeed(PRODUCT, client, candle_grace=0.0)
    seen: list[Candle] = []
    candles = feed.add_candles(0.2, 50, lambda cs: seen.append(cs[-1]))  # the clock starts here
    now = time.time()
    client.dispatch_frame(frame(channels.executions(PRODUCT), execs(1, timestamps.ws(timestamps.now()), ("BUY", 5.0, 1.0))))
    deadline = now + 20
    while len(seen) < 3 and time.time() < deadline:
        await asyncio.sleep(0.05)
    feed.close()
    assert len(seen) >= 3 and seen[0].count == 1 and all(c.count == 0 and c.close == 5.0 for c in seen[1:])
    assert len(candles) == len(seen)


async def test_candle_clock_starts_for_builders_added_to_the_list() -> None:
    """The bot runtime appends its builders to ``candle_builders`` itself: the first prints start the clock."""
    import asyncio
    import time

    from bfsx.bitflyer import timestamps
    from bfsx.market import CandleBuilder

    client = live_client()
    feed = MarketFeed(PRODUCT, client, candle_grace=0.0)
    seen: list[Candle] = []
    feed.candle_builders.append(CandleBuilder(0.2, 50, lambda cs: seen.append(cs[-1])))
    client.dispatch_frame(frame(channels.executions(PRODUCT), execs(1, timestamps.ws(timestamps.now()), ("SELL", 7.0, 1.0))))
    deadline = time.time() + 20
    while len(seen) < 2 and time.time() < deadline:
        await asyncio.sleep(0.05)
    feed.close()
    assert len(seen) >= 2 and seen[-1].count == 0 and seen[-1].close == 7.0


def test_board_frames_of_an_unannounced_connection_drop_the_old_levels() -> None:
    """Frames arriving between a new connection's subscription and its on_connect callback."""
    client = live_client()
    feed = MarketFeed(PRODUCT, client, candle_clock=False)
    seen: list[OrderBook] = []
    feed.on_board.append(seen.append)
    client.dispatch_frame(frame(channels.board_snapshot(PRODUCT), book_msg(100.5, [(100.0, 1.0)], [(101.0, 1.0)])))
    assert feed.book.ready
    client.connected.clear()  # the connection dropped; a new one is in its handshake
    client.dispatch_frame(frame(channels.board(PRODUCT), book_msg(100.5, [(99.0, 1.0)], [])))
    assert not feed.book.ready and len(feed.book) == 0 and len(seen) == 1
    client.dispatch_frame(frame(channels.board_snapshot(PRODUCT), book_msg(200.5, [(200.0, 1.0)], [(201.0, 1.0)])))
    client.connected.set()
    feed._on_connect(True)  # what the client calls next: the fresh snapshot is kept
    assert feed.book.ready and feed.book.bids() == [(200.0, 1.0)] and feed.reconnects == 1
    # a reconnect whose handshake saw no board frame clears at on_connect
    feed._on_connect(True)
    assert not feed.book.ready and feed.reconnects == 2
