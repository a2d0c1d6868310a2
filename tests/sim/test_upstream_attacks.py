"""``bfsx sim --upstream`` against a hostile upstream: garbage frames, huge frames, malformed and
crossed snapshots, bad execution rows. A scripted JSON-RPC endpoint on a real loopback socket sends
exactly the frames each test wants; the paper simulator must keep its state, never fill on a book
it does not know, and say why it refuses orders."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from bfsx.bitflyer import channels, endpoints
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient, eventually
from bfsx.sim.server import SimServer
from bfsx.sim.upstream import UpstreamMarket

FX = "FX_BTC_JPY"
SNAPSHOT = {
    "mid_price": 10_000_000.0,
    "bids": [{"price": 9_999_900.0, "size": 1.0}, {"price": 9_999_800.0, "size": 2.0}],
    "asks": [{"price": 10_000_100.0, "size": 1.5}, {"price": 10_000_200.0, "size": 2.5}],
}


class ScriptedUpstream:
    """A bitFlyer-format realtime endpoint that answers subscriptions and sends what it is told."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.connections = 0
        self.subscribed: set[str] = set()
        self.requests: list[Any] = []
        self.app = web.Application()
        self.app.router.add_get(endpoints.REALTIME_PATH, self._ws)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{endpoints.REALTIME_PATH}"

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        await self.runner.cleanup()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                req = orjson.loads(msg.data)
                self.requests.append(req)
                batch = req if isinstance(req, list) else [req]
                replies = []
                for one in batch:
                    if one.get("method") == "subscribe":
                        self.subscribed.add(one["params"]["channel"])
                    replies.append({"jsonrpc": "2.0", "id": one.get("id"), "result": True})
                await ws.send_bytes(orjson.dumps(replies if isinstance(req, list) else replies[0]))
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    async def send(self, channel: str, message: Any) -> None:
        await self.send_raw(orjson.dumps({"jsonrpc": "2.0", "method": "channelMessage",
                                          "params": {"channel": channel, "message": message}}))

    async def send_raw(self, data: bytes | str) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_str(data.decode())


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def paper(scripted: ScriptedUpstream) -> AsyncIterator[SimServer]:
    cfg = SimConfig.fast(products=[FX], upstream={"backoff_s": 0.05, "backoff_max_s": 0.2, "silence_s": 0.0,
                                                  "max_frame_bytes": 64 * 1024})
    async with SimServer(cfg, upstream=scripted.ws_url) as server:
        await eventually(lambda: channels.board_snapshot(FX) in scripted.subscribed, what="subscribed")
        yield server


@pytest.fixture
async def me(paper: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(paper.url, "demo-key-1", "demo-secret-1") as c:
        yield c


async def known(paper: SimServer, scripted: ScriptedUpstream, snapshot: dict[str, Any] = SNAPSHOT) -> None:
    up = paper.upstream_market
    assert up is not None
    await scripted.send(channels.board_snapshot(FX), snapshot)
    await eventually(lambda: up.known(FX), what="the book known")


async def resting_bid(paper: SimServer, scripted: ScriptedUpstream, me: WireClient) -> tuple[UpstreamMarket, str]:
    """The book known, then a paper bid of 0.01 at 9,999,900 resting (1.0 BTC of the upstream ahead
    of it): the followed market and the bid's acceptance id."""
    up = paper.upstream_market
    assert up is not None
    await known(paper, scripted)
    acc = await me.order(FX, "BUY", 0.01, 9_999_900)
    await eventually(lambda: paper.engine.accounts["demo-key-1"].active, what="the paper bid rests")
    return up, acc


async def refusal(me: WireClient) -> str:
    r = await me.post(endpoints.SEND_CHILD_ORDER, {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY",
                                                    "size": 0.01, "price": 10_000_100})
    assert r.status == 400 and r.data["status"] == -204, r.text
    message: str = r.data["error_message"]
    return message


async def test_no_snapshot_yet_refuses_orders_with_the_reason(paper: SimServer, me: WireClient) -> None:
    assert "no snapshot yet" in await refusal(me)
    assert (await me.get(endpoints.GET_BOARD_STATE, product_code=FX)).data == {"health": "STOP", "state": "CLOSED"}


async def test_garbage_frames_change_nothing(paper: SimServer, scripted: ScriptedUpstream, me: WireClient) -> None:
    await known(paper, scripted)
    up = paper.upstream_market
    assert up is not None
    before = (await me.get(endpoints.GET_BOARD, product_code=FX)).data
    for junk in ("not json", "[1, 2", '{"method": "channelMessage", "params": {"channel": 5, "message": {}}}',
                 '{"method": "channelMessage"}', "[]", "null", '"x"'):
        await scripted.send_raw(junk)
    rows: list[Any] = [
        {"side": "BUY", "price": float("nan"), "size": 1.0, "id": 1},
        {"side": "BUY", "price": 1e300, "size": 1.0},
        {"side": "UP", "price": 10_000_100.0, "size": 1.0},
        {"side": "BUY", "price": "10000100", "size": 1.0},
        {"side": "SELL", "price": 10_000_000.0, "size": -1.0},
        {"side": "SELL", "price": 10_000_000.0, "size": True},
        "row", None, [1, 2],
    ]
    await scripted.send(channels.executions(FX), rows)
    await scripted.send(channels.executions(FX), {"not": "a list"})
    good = ('{"jsonrpc": "2.0", "method": "channelMessage", "params": {"channel": "%s", "message": '
            '[{"side": "BUY", "price": 10000100.0, "size": 0.01, "id": 1%s, "exec_date": "garbage"}]}}')
    await scripted.send_raw(good % (channels.executions(FX), "0" * 30))  # a good row (a huge id): ends the script
    await eventually(lambda: up.prints == 1, what="the one good print")
    assert paper.engine.last_exec_id < 2**53  # a huge id is replaced by the next one (JSON-safe)
    assert up.rejected == len(rows) + 1 and up.known(FX)
    assert (await me.get(endpoints.GET_BOARD, product_code=FX)).data == before
    assert paper.engine.markets[FX].ltp == 10_000_100


async def test_a_malformed_snapshot_or_diff_makes_the_book_unknown_until_a_good_snapshot(
    paper: SimServer, scripted: ScriptedUpstream, me: WireClient
) -> None:
    up = paper.upstream_market
    assert up is not None
    for bad in ({"mid_price": 1.0, "bids": "x", "asks": []}, [1, 2], {"bids": [], "asks": []},
                {"mid_price": 1.0, "bids": [{"price": float("inf"), "size": 1}], "asks": []}):
        await known(paper, scripted)
        await scripted.send(channels.board_snapshot(FX), bad)
        await eventually(lambda: not up.known(FX), what="the book unknown")
        assert "malformed board snapshot" in await refusal(me)
        assert (await me.get(endpoints.GET_BOARD, product_code=FX)).data["asks"] == []
    await known(paper, scripted)
    await scripted.send(channels.board(FX), {"mid_price": 10_000_000.0, "bids": [{"price": -5, "size": 1}], "asks": []})
    await eventually(lambda: not up.known(FX), what="the book unknown")
    assert "malformed board diff" in await refusal(me)
    # diffs alone never bring it back
    await scripted.send(channels.board(FX), {"mid_price": 10_000_000.0, "bids": [], "asks": []})
    await known(paper, scripted)
    assert (await me.get(endpoints.GET_BOARD, product_code=FX)).data["asks"][0] == {"price": 10_000_100, "size": 1.5}


async def test_a_crossed_snapshot_is_refused_and_nothing_fills_on_it(
    paper: SimServer, scripted: ScriptedUpstream, me: WireClient
) -> None:
    up, acc = await resting_bid(paper, scripted, me)
    crossed = {"mid_price": 10_000_000.0, "bids": [{"price": 10_000_500.0, "size": 1.0}],
               "asks": [{"price": 9_999_000.0, "size": 1.0}]}
    await scripted.send(channels.board_snapshot(FX), crossed)
    await eventually(lambda: not up.known(FX), what="the book unknown")
    assert "crossed board snapshot" in await refusal(me)
    # a print through the paper bid while the book is unknown fills nothing
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_000.0, "size": 1.0, "id": 9}])
    await eventually(lambda: up.prints == 1, what="the print taken")
    rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["executed_size"] == 0 and rows[0]["child_order_state"] == "ACTIVE"
    # a good snapshot: known again, the paper bid back of the queue (1 BTC ahead), a print fills it
    await known(paper, scripted)
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_900.0, "size": 1.0, "id": 10}])
    await eventually(lambda: up.prints == 2, what="the second print")
    rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["executed_size"] == 0  # exactly the queue ahead traded
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_800.0, "size": 0.5, "id": 11}])
    await eventually(lambda: up.fills == 1, what="the fill through the bid")
    rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["executed_size"] == 0.01 and rows[0]["average_price"] == 9_999_900


async def test_a_huge_frame_drops_the_connection_and_it_comes_back(
    paper: SimServer, scripted: ScriptedUpstream, me: WireClient
) -> None:
    up = paper.upstream_market
    assert up is not None
    await known(paper, scripted)
    big = {"mid_price": 10_000_000.0, "bids": [{"price": 9_000_000.0 - i, "size": 1.0} for i in range(5000)],
           "asks": []}
    await scripted.send(channels.board_snapshot(FX), big)  # > max_frame_bytes (64 KiB)
    await eventually(lambda: not up.known(FX), what="the book unknown")
    assert "disconnected" in await refusal(me)
    await eventually(lambda: scripted.connections >= 2 and scripted.sockets, what="the reconnection")
    await eventually(lambda: channels.board_snapshot(FX) in scripted.subscribed, what="subscribed again")
    await known(paper, scripted)
    assert len(paper.engine.markets[FX].book.bids) == 2


async def test_a_silent_upstream_makes_the_book_unknown_then_reconnects(scripted: ScriptedUpstream) -> None:
    cfg = SimConfig.fast(products=[FX], upstream={"backoff_s": 0.05, "backoff_max_s": 0.2, "silence_s": 0.2})
    async with SimServer(cfg, upstream=scripted.ws_url) as paper:
        up = paper.upstream_market
        assert up is not None
        said: list[str] = []
        up.say = said.append
        await eventually(lambda: channels.board_snapshot(FX) in scripted.subscribed, what="subscribed")
        await known(paper, scripted)
        # the socket stays open, nothing more comes: stale is not known
        await eventually(lambda: not up.known(FX), what="the book unknown")
        assert any("no board message from the upstream for 0.2 s" in line for line in said), said
        await eventually(lambda: scripted.connections >= 2, what="the reconnection")
        assert any("upstream silent for 0.2 s: reconnecting" in line for line in said), said


async def test_the_queue_ahead_shrinks_with_the_level_and_never_grows(
    paper: SimServer, scripted: ScriptedUpstream, me: WireClient
) -> None:
    up, acc = await resting_bid(paper, scripted, me)  # 1.0 BTC ahead of it
    # cancellations take the level to 0.3 (they may have been ahead), then it grows back to 2.0 (behind)
    for size in (0.3, 2.0):
        await scripted.send(channels.board(FX), {"mid_price": 10_000_000.0,
                                                 "bids": [{"price": 9_999_900.0, "size": size}], "asks": []})
    await eventually(lambda: up.products[FX].mirror.size_at("bids", 9_999_900.0) == 2.0, what="the diffs")

    async def executed() -> float:
        rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
        size: float = rows[0]["executed_size"]
        return size

    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_900.0, "size": 0.305, "id": 20}])
    await eventually(lambda: up.fills == 1, what="the first fill")
    assert await executed() == 0.005  # 0.3 ahead, not 1.0 nor 2.0
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_900.0, "size": 0.5, "id": 21}])
    await eventually(lambda: up.fills == 2, what="the second fill")
    assert await executed() == 0.01


async def test_diffs_that_grow_the_book_without_bound_make_it_unknown(scripted: ScriptedUpstream) -> None:
    cfg = SimConfig.fast(products=[FX], upstream={"backoff_s": 0.05, "silence_s": 0.0, "max_levels": 10})
    async with SimServer(cfg, upstream=scripted.ws_url) as paper:
        up = paper.upstream_market
        assert up is not None
        await eventually(lambda: channels.board_snapshot(FX) in scripted.subscribed, what="subscribed")
        await known(paper, scripted)
        far = [{"price": 9_000_000.0 - i, "size": 0.1} for i in range(7)]
        await scripted.send(channels.board(FX), {"mid_price": 10_000_000.0, "bids": far, "asks": []})
        await eventually(lambda: not up.known(FX), what="the book unknown")
        assert "beyond 10 levels" in up.products[FX].reason and len(paper.engine.markets[FX].book.bids) == 0


async def test_after_a_closed_socket_nothing_fills_until_a_fresh_snapshot(
    paper: SimServer, scripted: ScriptedUpstream, me: WireClient
) -> None:
    up, acc = await resting_bid(paper, scripted, me)
    for ws in list(scripted.sockets):
        await ws.close()  # the upstream closes the socket
    await eventually(lambda: scripted.connections >= 2 and scripted.sockets, what="the reconnection")
    await eventually(lambda: channels.executions(FX) in scripted.subscribed and up.connected, what="resubscribed")
    assert not up.known(FX)
    # a print through the bid after the reconnection, before any snapshot: the book is not known
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_000.0, "size": 1.0, "id": 30}])
    await eventually(lambda: up.prints == 1, what="the print")
    rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["executed_size"] == 0
    await known(paper, scripted)
    await scripted.send(channels.executions(FX), [{"side": "SELL", "price": 9_999_000.0, "size": 1.0, "id": 31}])
    await eventually(lambda: up.fills == 1, what="the fill once the book is known")
    rows = (await me.get(endpoints.GET_CHILD_ORDERS, product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["executed_size"] == 0.01
