"""MarketFeed end to end: simulator → real sockets → RealtimeClient → MarketFeed.

* the book built from snapshot + diffs equals the simulator's REST getboard (allowing one diff of
  delay) in a busy market;
* after a forced close — 1012 sent by the simulator, 1006 by cutting the TCP connection under the
  client — and a reconnect, the book never shows a level that went away while disconnected;
* the feed's candles equal candles computed independently from the same prints, and those prints
  are the simulator's (REST getexecutions).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bfsx.bitflyer import timestamps
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bitflyer.rest import RestClient
from bfsx.market import Candle, MarketFeed, OrderBook
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

PRODUCT = "FX_BTC_JPY"
TOP = 50  # levels per side compared (the simulator's snapshots carry 300)


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)


def rest_view(board: dict[str, Any]) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
    bids = sorted(((float(x["price"]), float(x["size"])) for x in board["bids"]), reverse=True)[:TOP]
    asks = sorted((float(x["price"]), float(x["size"])) for x in board["asks"])[:TOP]
    return tuple(bids), tuple(asks)


def book_view(book: OrderBook) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
    return tuple(book.bids(TOP)), tuple(book.asks(TOP))


class Recorder:
    """Numbered book states, one per board message applied while the book is ready."""

    def __init__(self, feed: MarketFeed) -> None:
        self.seq = 0
        self.states: deque[tuple[int, Any, bool]] = deque(maxlen=500)
        self._diffs = 0
        feed.on_board.append(self)

    def __call__(self, book: OrderBook) -> None:
        self.seq += 1
        by_diff = book.diffs != self._diffs  # this state came from a diff, not a snapshot
        self._diffs = book.diffs
        self.states.append((self.seq, book_view(book), by_diff))

    def match(self, want: Any, first: int, last: int) -> bool | None:
        """None if no state numbered first..last equals ``want``; else whether it came from a diff."""
        for seq, view, by_diff in self.states:
            if first <= seq <= last and view == want:
                return by_diff
        return None


class TcpProxy:
    """A loopback TCP forwarder in front of the simulator, so a test can cut connections without a
    close frame (the client sees 1006) and refuse new ones for a while."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)

    def cut(self) -> None:
        """Drop every forwarded connection at the TCP level: no WebSocket close frame."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def matches_rest(rest: RestClient, recorder: Recorder) -> bool:
    """True when REST getboard equals the book as it was while the request was in flight or right
    after the next board message (one diff of delay). Three tries: a timer hiccup may put two
    market steps inside one diff. Returns whether the matching book was maintained by a diff."""
    for _attempt in range(3):
        first = recorder.seq
        board = await rest.get_board(PRODUCT)
        last = recorder.seq
        await until(lambda last=last: recorder.seq >= last + 1, what="next board message")
        by_diff = recorder.match(rest_view(dict(board)), first, last + 1)
        if by_diff is not None:
            return by_diff
    pytest.fail("REST getboard never matched the book within one diff of delay")


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[RestClient]:
    async with RestClient(sim.url, "demo-key-1", "demo-secret-1", retries=1, timeout=10.0) as client:
        yield client


async def test_book_equals_rest_board_and_candles_equal_reference(sim: SimServer, rest: RestClient) -> None:
    """Busy market (SimConfig.fast): takers, churn, snapshots every second, diffs every 0.1 s."""
    client = RealtimeClient(sim.ws_url, backoff=(0.05, 0.5))
    feed = MarketFeed(PRODUCT, client, candle_clock=False)
    recorder = Recorder(feed)
    batches: list[list[dict[str, Any]]] = []
    feed.on_executions.append(lambda batch: batches.append(list(batch)))
    one_s = feed.add_candles(1, 10_000)
    five_s = feed.add_candles(5, 10_000)
    await client.start()
    try:
        await until(lambda: feed.book.ready, what="first snapshot")
        matched_by_diff = 0
        for _ in range(10):
            matched_by_diff += await matches_rest(rest, recorder)
            await asyncio.sleep(0.13)
        # most matches are of books maintained by diffs since the last snapshot, not fresh snapshots
        assert matched_by_diff >= 5 and feed.book.diffs > 5
        await until(lambda: sum(map(len, batches)) >= 40, what="40 prints")
    finally:
        await client.close()

    # the prints are the simulator's (REST getexecutions), in order, none missing in between
    prints = [e for b in batches for e in b]
    ids = [e["id"] for e in prints]
    assert ids == sorted(set(ids))
    history = await rest.get_executions(PRODUCT, count=500, after=ids[0] - 1)
    rows = sorted((r for r in history if r["id"] <= ids[-1]), key=lambda r: r["id"])
    assert len(prints) < 500 and [r["id"] for r in rows] == ids
    for row, e in zip(rows, prints, strict=True):
        assert (row["side"], float(row["price"]), float(row["size"])) == (e["side"], e["price"], e["size"])
    assert feed.executions.ltp == prints[-1]["price"] and feed.executions.last_id == ids[-1]

    # candles equal an independent computation from the same prints
    for builder, scale in ((one_s, 1), (five_s, 5)):
        want = reference_candles(prints, scale)
        got = [*builder.candles, builder.current]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g is not None
            assert (g.time, g.open, g.high, g.low, g.close, g.count) == (w.time, w.open, w.high, w.low, w.close, w.count)
            assert (g.volume, g.buy_volume, g.sell_volume) == pytest.approx((w.volume, w.buy_volume, w.sell_volume))


def reference_candles(prints: list[dict[str, Any]], scale: float) -> list[Candle]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for e in prints:
        groups.setdefault(math.floor(timestamps.parse(e["exec_date"]).timestamp() / scale), []).append(e)
    out: list[Candle] = []
    for b in range(min(groups), max(groups) + 1):
        g = groups.get(b)
        if g is None:
            c = out[-1].close
            out.append(Candle(b * scale, c, c, c, c))
        else:
            p = [e["price"] for e in g]
            out.append(Candle(b * scale, p[0], max(p), min(p), p[-1], sum(e["size"] for e in g),
                              sum(e["size"] for e in g if e["side"] == "BUY"),
                              sum(e["size"] for e in g if e["side"] == "SELL"), len(g)))
    return out


@pytest.fixture
def sim_config(request: pytest.FixtureRequest) -> SimConfig:
    """Busy (SimConfig.fast) by default; a quiet market for the reconnect tests (no takers, churn or
    drift; the ladder still re-quotes near the touch), so nothing trades against the test's orders."""
    if request.node.name.startswith("test_reconnect"):
        return SimConfig.fast(market={"taker_rate": 0.0, "churn_per_second": 0.0, "refill_rate": 0.0,
                                      "volatility": 0.0, "jump_probability": 0.0, "snapshot_interval": 0.5})
    return SimConfig.fast()


@pytest.mark.parametrize("close", ["1012", "1006"])
async def test_reconnect_leaves_no_stale_levels(sim: SimServer, rest: RestClient, close: str) -> None:
    proxy = TcpProxy(int(sim.url.rsplit(":", 1)[1]))
    await proxy.start()
    client = RealtimeClient(f"ws://127.0.0.1:{proxy.port}/json-rpc", backoff=(0.05, 0.3))
    feed = MarketFeed(PRODUCT, client, candle_clock=False)
    recorder = Recorder(feed)
    stale_seen: list[float] = []
    at_reconnect: list[tuple[bool, int]] = []
    await client.start()
    try:
        await until(lambda: feed.book.ready, what="first snapshot")
        # a level of our own, off the simulator's 50-yen ladder grid and far from the touch
        price = float(feed.book.best_bid - 5007)
        other = float(feed.book.best_ask + 5009)
        acceptance = await rest.send_child_order(PRODUCT, "BUY", 0.0123, price)
        await until(lambda: feed.book.size_at("bids", price) == 0.0123, what="our bid in the book")

        client.on_connect(lambda reconnected: at_reconnect.append((feed.book.ready, len(feed.book))))
        feed.on_board.append(lambda book: stale_seen.append(price) if book.size_at("bids", price) else None)
        proxy.accepting = False  # hold the reconnect until the book has changed unseen
        if close == "1012":
            await sim.set_faults(close_websockets=1012)
        else:
            proxy.cut()
        await until(lambda: not client.connected.is_set(), what="disconnect")
        await rest.cancel_child_order(PRODUCT, acceptance_id=acceptance)
        await rest.send_child_order(PRODUCT, "SELL", 0.0321, other)
        await until(lambda: not any(o["child_order_acceptance_id"] == acceptance
                                    for o in sim.state()["accounts"]["demo-key-1"]["open_orders"]),
                    what="cancel done")
        assert feed.book.size_at("bids", price) == 0.0123  # the feed cannot know yet...
        proxy.accepting = True
        await until(lambda: feed.reconnects == 1, what="reconnect")
        # ...but from the reconnect on, the old levels are gone until a fresh snapshot
        assert at_reconnect == [(False, 0)]
        assert client.last_close_code == int(close)
        await until(lambda: feed.book.ready, what="snapshot after reconnect")
        assert feed.book.size_at("bids", price) == 0.0 and feed.book.size_at("asks", other) == 0.0321
        await matches_rest(rest, recorder)
        assert stale_seen == []
    finally:
        await client.close()
        await proxy.close()
