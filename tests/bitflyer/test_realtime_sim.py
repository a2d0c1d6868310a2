"""RealtimeClient against the real simulator: auth, subscriptions, private events, reconnects
(1006 through a cut TCP proxy, 1012 maintenance), the silence watchdog, and answered pings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bitflyer.rest import RestClient
from bfsx.sim.hooks import eventually as wait_until
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"




class Recorder:
    """Messages per channel, each tagged with the connection number it arrived on."""

    def __init__(self, rt: RealtimeClient) -> None:
        self.rt = rt
        self.got: dict[str, list[tuple[int, Any]]] = {}

    def handler(self, channel: str) -> Callable[[Any], None]:
        box = self.got.setdefault(channel, [])
        return lambda m: box.append((self.rt.connects, m))

    def on(self, channel: str, connection: int | None = None) -> list[Any]:
        return [m for c, m in self.got.get(channel, []) if connection is None or c == connection]


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., RealtimeClient]]:
    made: list[RealtimeClient] = []

    def make(*args: Any, **kw: Any) -> RealtimeClient:
        kw.setdefault("backoff", (0.05, 0.2))
        rt = RealtimeClient(*args, **kw)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.close()


async def test_public_channels_and_private_events_after_auth(
    sim: SimServer, client_factory: Callable[..., RealtimeClient]
) -> None:
    rt = client_factory(sim.ws_url, KEY, SECRET)
    rec = Recorder(rt)
    for ch in (channels.executions(FX), channels.board(FX), channels.board_snapshot(FX), channels.ticker(FX),
               channels.CHILD_ORDER_EVENTS):
        rt.subscribe(ch, rec.handler(ch))
    connected: list[bool] = []
    rt.on_connect(lambda again: connected.append(again))
    await rt.start()
    await asyncio.wait_for(rt.connected.wait(), 10)
    assert rt.authenticated and rt.auth_error is None
    assert connected == [False]
    await wait_until(lambda: rec.on(channels.executions(FX)) and rec.on(channels.board(FX))
                     and rec.on(channels.board_snapshot(FX)) and rec.on(channels.ticker(FX)))
    batch = rec.on(channels.executions(FX))[0]
    assert isinstance(batch, list) and {"id", "side", "price", "size", "exec_date"} <= set(batch[0])
    assert {"mid_price", "bids", "asks"} <= set(rec.on(channels.board_snapshot(FX))[0])
    assert rec.on(channels.ticker(FX))[0]["product_code"] == FX

    async with RestClient(sim.url, KEY, SECRET) as rest:
        price = int((await rest.get_ticker(FX))["best_bid"] * 0.8)
        acc = await rest.send_child_order(FX, "BUY", 0.01, price)
        await rest.cancel_child_order(FX, acceptance_id=acc)
    def events_of_acc() -> list[str]:
        return [e["event_type"] for m in rec.on(channels.CHILD_ORDER_EVENTS) for e in m
                if e["child_order_acceptance_id"] == acc]

    await wait_until(lambda: "CANCEL" in events_of_acc())
    assert events_of_acc() == ["ORDER", "CANCEL"]
    assert rt.frames >= 5 and rt.handler_errors == 0


async def test_bad_auth_is_reported_and_public_channels_still_flow(
    sim: SimServer, client_factory: Callable[..., RealtimeClient]
) -> None:
    rt = client_factory(sim.ws_url, KEY, "wrong-secret")
    rec = Recorder(rt)
    rt.subscribe(channels.executions(FX), rec.handler(channels.executions(FX)))
    rt.subscribe(channels.CHILD_ORDER_EVENTS, rec.handler(channels.CHILD_ORDER_EVENTS))
    await rt.start()
    await asyncio.wait_for(rt.connected.wait(), 10)
    assert not rt.authenticated
    assert rt.auth_error == "Invalid signature"
    await wait_until(lambda: rec.on(channels.executions(FX)))
    assert rec.on(channels.CHILD_ORDER_EVENTS) == []
    assert rt.reconnects == 0  # a bad key is not a reason to hammer the server


async def test_reconnect_after_maintenance_close_1012_resubscribes(
    sim: SimServer, client_factory: Callable[..., RealtimeClient]
) -> None:
    rt = client_factory(sim.ws_url, KEY, SECRET)
    rec = Recorder(rt)
    ex, bd = channels.executions(FX), channels.board(FX)
    rt.subscribe(ex, rec.handler(ex))
    rt.subscribe(bd, rec.handler(bd))
    flags: list[bool] = []

    async def on_connect(again: bool) -> None:  # async callbacks are awaited
        flags.append(again)

    rt.on_connect(on_connect)
    await rt.start()
    await wait_until(lambda: rec.on(ex, 1) and rec.on(bd, 1))
    await sim.set_faults(close_websockets=channels.MAINTENANCE_CLOSE_CODE)
    await wait_until(lambda: rt.reconnects == 1 and rt.connected.is_set())
    assert rt.last_close_code == channels.MAINTENANCE_CLOSE_CODE
    assert flags == [False, True]
    assert rt.authenticated
    # Both channels flow again on the new connection: everything was resubscribed.
    await wait_until(lambda: rec.on(ex, 2) and rec.on(bd, 2))
    assert sim.state()["websockets"] == 1


class CuttableProxy:
    """A TCP proxy in front of the simulator whose connections can be cut without a close frame
    (what the client sees as 1006: abnormal closure)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_reconnect_after_abnormal_close_1006(
    sim: SimServer, client_factory: Callable[..., RealtimeClient]
) -> None:
    proxy = CuttableProxy(sim.port)
    await proxy.start()
    try:
        rt = client_factory(f"ws://127.0.0.1:{proxy.port}/json-rpc", KEY, SECRET)
        rec = Recorder(rt)
        ex = channels.executions(FX)
        rt.subscribe(ex, rec.handler(ex))
        rt.subscribe(channels.CHILD_ORDER_EVENTS, rec.handler(channels.CHILD_ORDER_EVENTS))
        flags: list[bool] = []
        rt.on_connect(flags.append)
        await rt.start()
        await wait_until(lambda: rec.on(ex, 1))
        proxy.cut()
        await wait_until(lambda: rt.reconnects == 1 and rt.connected.is_set())
        assert rt.last_close_code == 1006
        assert flags == [False, True]
        await wait_until(lambda: rec.on(ex, 2))
        # Private channel resubscribed after re-auth: an order's events arrive on connection 2.
        async with RestClient(sim.url, KEY, SECRET) as rest:
            price = int((await rest.get_ticker(FX))["best_bid"] * 0.8)
            acc = await rest.send_child_order(FX, "BUY", 0.01, price)
            await rest.cancel_all_child_orders(FX)
        await wait_until(lambda: any(e["child_order_acceptance_id"] == acc
                                     for m in rec.on(channels.CHILD_ORDER_EVENTS, 2) for e in m))
    finally:
        await proxy.close()


async def test_silence_watchdog_fires_and_reconnects(
    sim: SimServer, client_factory: Callable[..., RealtimeClient]
) -> None:
    silent = "lightning_executions_NOPE_JPY"  # accepted by the exchange, never sends anything
    busy = channels.executions(FX)
    rt = client_factory(sim.ws_url, silence_timeout={silent: 0.4, busy: 30.0})
    rec = Recorder(rt)
    rt.subscribe(silent, rec.handler(silent))
    rt.subscribe(busy, rec.handler(busy))
    fired: list[str] = []
    rt.on_silence(fired.append)
    flags: list[bool] = []
    rt.on_connect(flags.append)
    await rt.start()
    await wait_until(lambda: fired and rt.reconnects >= 1 and rt.connected.is_set())
    assert fired[0] == silent and busy not in fired
    assert rt.silences >= 1
    assert flags[:2] == [False, True]
    assert rec.on(silent) == []


async def test_server_pings_are_answered(
    sim: SimServer, client_factory: Callable[..., RealtimeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulator pings every PING_INTERVAL and drops a client that does not pong; shorten it.
    monkeypatch.setattr(channels, "PING_INTERVAL", 0.2)
    rt = client_factory(sim.ws_url)
    ex = channels.executions(FX)
    rt.subscribe(ex, lambda m: None)
    await rt.start()
    await asyncio.wait_for(rt.connected.wait(), 10)
    # Control: a raw socket that never answers pings is dropped by the server...
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url, autoping=False) as mute:
        pings = 0
        while True:
            msg = await asyncio.wait_for(mute.receive(), 10)
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.ERROR):
                break
        assert pings >= 1
    # ...while ours, connected for longer than that, is still on its first connection.
    frames = rt.frames
    await wait_until(lambda: rt.frames > frames)
    assert rt.connects == 1 and rt.reconnects == 0 and rt.connected.is_set()
