"""Realtime JSON-RPC at /json-rpc: methods, errors, batches, and every channel's payload
(docs/bitflyer.md#realtime-channels)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from bfsx.bitflyer import auth, channels, timestamps
from bfsx.sim.hooks import WireSocket
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"


@pytest.fixture
async def ws(sim: SimServer) -> AsyncIterator[WireSocket]:
    sock = await WireSocket.connect(sim.ws_url)
    yield sock
    await sock.close()


async def test_rpc_errors(ws: WireSocket) -> None:
    await ws.send_raw("not json")
    await ws.wait_for(lambda: any(isinstance(r, dict) and r.get("error") for r in ws.raw))
    err = next(r for r in ws.raw if isinstance(r, dict) and r.get("error"))
    assert err == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error", "data": "Invalid JSON"}}
    assert (await ws.call("nope"))["error"]["code"] == -32601
    assert (await ws.call("subscribe", {}))["error"]["code"] == -32602
    r = await ws.call("subscribe", {"channel": "lightning_nonsense"})
    assert r["error"] == {"code": -32602, "message": "invalid channel"}
    r = await ws.call("subscribe", {"channel": "child_order_events"})
    assert r["error"] == {"code": -32007, "message": "authentication required"}
    assert (await ws.subscribe(channels.ticker(FX)))["result"] is True
    assert (await ws.subscribe(channels.ticker(FX)))["error"]["code"] == -32009
    # unknown product with a valid prefix: accepted, silent
    assert (await ws.subscribe("lightning_board_NOPE_JPY"))["result"] is True
    bad = dict(auth.ws_auth_params("demo-key-1", "wrong"))
    assert (await ws.call("auth", bad))["error"] == {"code": -32602, "message": "Invalid signature"}
    short_nonce = dict(auth.ws_auth_params("demo-key-1", "demo-secret-1", nonce="abc"))
    assert (await ws.call("auth", short_nonce))["error"]["code"] == -32602
    r = await ws.auth("demo-key-1", "demo-secret-1")
    assert r == {"jsonrpc": "2.0", "id": r["id"], "result": True}


async def test_batch_and_notifications(ws: WireSocket) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": channels.executions(FX)}, "id": 101},
        {"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": channels.board(FX)}},  # no id: no reply
        {"jsonrpc": "2.0", "method": "bogus", "id": 102},
    ]
    await ws.send_raw(json.dumps(batch))
    reply = await ws.wait_for(lambda: next((r for r in ws.raw if isinstance(r, list)), None))
    assert reply == [
        {"jsonrpc": "2.0", "id": 101, "result": True},
        {"jsonrpc": "2.0", "id": 102, "error": {"code": -32601, "message": "Method not found"}},
    ]
    await ws.wait_for(lambda: ws.channel(channels.board(FX)))  # the notification subscribed too


async def test_public_channels(sim: SimServer, ws: WireSocket) -> None:
    for ch in (channels.executions(FX), channels.board(FX), channels.board_snapshot(FX), channels.ticker(FX)):
        assert (await ws.subscribe(ch))["result"] is True
    await ws.wait_for(
        lambda: all(ws.channel(ch) for ch in (channels.executions(FX), channels.board(FX), channels.board_snapshot(FX),
                                                channels.ticker(FX))),
        timeout=15,
    )
    execs = ws.channel(channels.executions(FX))[0]
    assert isinstance(execs, list) and execs
    e = execs[0]
    assert set(e) == {"id", "side", "price", "size", "exec_date", "buy_child_order_acceptance_id",
                      "sell_child_order_acceptance_id"}
    assert isinstance(e["price"], float) and e["exec_date"].endswith("Z") and len(e["exec_date"].split(".")[1]) == 8
    ids_ = [x["id"] for m in ws.channel(channels.executions(FX)) for x in m]
    assert ids_ == sorted(ids_) and len(set(ids_)) == len(ids_)

    snap = ws.channel(channels.board_snapshot(FX))[0]
    assert len(snap["bids"]) == 300 and len(snap["asks"]) == 300
    assert snap["bids"][0]["price"] < snap["mid_price"] < snap["asks"][0]["price"]

    diff = ws.channel(channels.board(FX))[0]
    assert set(diff) == {"mid_price", "bids", "asks"} and (diff["bids"] or diff["asks"])
    assert all(lvl["size"] >= 0 for lvl in diff["bids"] + diff["asks"])

    t = ws.channel(channels.ticker(FX))[0]
    assert t["product_code"] == FX and t["timestamp"].endswith("Z") and "preopen_end" in t
    timestamps.parse(t["timestamp"])

    assert (await ws.call("unsubscribe", {"channel": channels.ticker(FX)}))["result"] is True
    n = len(ws.channel(channels.ticker(FX)))
    await ws.wait_for(lambda: len(ws.channel(channels.executions(FX))) > len(execs) + 5, timeout=15)
    assert len(ws.channel(channels.ticker(FX))) <= n + 1  # at most one already in flight


async def test_diffs_rebuild_the_book(sim: SimServer, ws: WireSocket) -> None:
    """Snapshot + diffs (size = new total, 0 = delete) reproduce the engine's book."""
    await ws.subscribe(channels.board_snapshot(FX))
    await ws.subscribe(channels.board(FX))
    await ws.wait_for(lambda: ws.channel(channels.board_snapshot(FX)), timeout=15)
    # replay in arrival order from the first snapshot on
    msgs = list(ws.messages)
    start = next(i for i, (ch, _) in enumerate(msgs) if ch == channels.board_snapshot(FX))
    await ws.wait_for(lambda: len(ws.channel(channels.board(FX))) > 10, timeout=15)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    mids: list[tuple[float, float, float]] = []
    for ch, m in list(ws.messages)[start:]:
        if ch == channels.board_snapshot(FX):
            bids = {x["price"]: x["size"] for x in m["bids"]}
            asks = {x["price"]: x["size"] for x in m["asks"]}
        elif ch == channels.board(FX):
            for side, book in (("bids", bids), ("asks", asks)):
                for x in m[side]:
                    if x["size"] == 0:
                        book.pop(x["price"], None)
                    else:
                        book[x["price"]] = x["size"]
            mids.append((m["mid_price"], max(bids), min(asks)))
    # every diff's mid_price is the mid of the rebuilt book's touch
    assert all(mid == (bb + ba) / 2 for mid, bb, ba in mids)


async def test_private_events_need_auth_and_reach_only_the_owner(sim: SimServer, ws: WireSocket) -> None:
    assert (await ws.auth("demo-key-2", "demo-secret-2"))["result"] is True
    assert (await ws.subscribe("child_order_events"))["result"] is True
    from bfsx.sim.hooks import WireClient

    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        acc = await c.order(FX, "BUY", 0.001)
    other = await WireSocket.connect(sim.ws_url)
    try:
        await other.auth("demo-key-1", "demo-secret-1")
        await other.subscribe("child_order_events")
        async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
            acc2 = await c.order(FX, "BUY", 0.001)
        await other.wait_for(lambda: other.events(acc2))
        assert ws.events() == [] and other.events(acc) == []  # subscribed after the first order
    finally:
        await other.close()


async def test_slow_consumer_is_dropped_not_buffered(sim: SimServer, ws: WireSocket) -> None:
    """Each socket's queue is bounded: a consumer that falls behind is closed (1008), memory stays flat."""
    await ws.subscribe(channels.ticker(FX))
    client = next(iter(sim._clients))
    cap = sim.config.ws_queue
    for _ in range(cap + 1):  # synchronously: the writer task cannot drain in between
        sim._publish(channels.ticker(FX), {"n": 1})
    await ws.wait_for(lambda: ws.close_code is not None)
    assert ws.close_code == 1008 and ws.close_reason == "slow consumer"
    assert sim.sockets_dropped == 1 and client not in sim._clients
    assert not sim._subs.get(channels.ticker(FX))


async def test_stale_deletions_option_leaves_levels_until_the_snapshot() -> None:
    from bfsx.sim.config import SimConfig

    async with SimServer(SimConfig.fast(market={"stale_deletions": 1.0})) as sim:
        ws = await WireSocket.connect(sim.ws_url)
        try:
            await ws.subscribe(channels.board(FX))
            await ws.wait_for(lambda: len(ws.channel(channels.board(FX))) >= 20, timeout=20)
            diffs = ws.channel(channels.board(FX))
            assert diffs and all(x["size"] > 0 for d in diffs for x in d["bids"] + d["asks"])
        finally:
            await ws.close()
