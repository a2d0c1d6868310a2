"""Unmodified third-party bitFlyer clients against the simulator (issue 2, item 5).

* pybotters: its REST signer (a signed GET with a query string, signed POSTs), its websocket auth
  hook (the JSON-RPC ``auth`` it sends on connect) and its ``bitFlyerDataStore`` building the board
  (snapshot + diffs), child orders (ORDER / CANCEL events) and positions (FX fills).
* ccxt: ``ccxt.async_support.bitflyer`` -- load_markets, ticker, order book, balance, create /
  fetch open / cancel orders, checked against ``/_sim/state``.

Only configuration is touched, never a code path: pybotters picks its signer by host name, so the
loopback host is mapped to its own bitFlyer signer in its host tables (restored afterwards); ccxt
gets the simulator's URL as its REST root. Every HTTP session here uses a connector that refuses to
resolve host names and records each request, so a client reaching for any host but the loopback
simulator fails the test instead of touching the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import aiohttp
import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import pybotters
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pybotters.auth import Auth as RestAuth
from pybotters.auth import Hosts as RestHosts
from pybotters.ws import Auth as WsAuth
from pybotters.ws import AuthHosts as WsHosts
from yarl import URL

from bfsx.bitflyer import channels, errors
from bfsx.sim import views
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import eventually as wait_for
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
SPOT = "BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"
LOOPBACK = "127.0.0.1"
#: synthetic ladder levels sit on this grid (SimConfig.market.level_spacing); test orders sit off it
#: so their board level holds exactly the test's size
GRID = 50

# pybotters hands aiohttp a deprecated ``auth=`` argument internally; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning")


@pytest.fixture
def sim_config() -> SimConfig:
    # calmer than fast(): fewer takers and no jumps, so an order resting 30,000 JPY away is never
    # reached, and the top of the board stays still between steps for the store comparison
    return SimConfig.fast(market={"taker_rate": 2.0, "churn_per_second": 10.0, "jump_probability": 0.0})


# ---------------------------------------------------------------------- network guard
class _NoResolver(AbstractResolver):
    """Refuses every host name (noting it): only IP literals, i.e. the loopback simulator, connect."""

    def __init__(self, refused: list[str]) -> None:
        self.refused = refused

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.refused.append(host)
        raise OSError(f"test refused to resolve {host!r}: loopback only")

    async def close(self) -> None:
        return None


class LoopbackGuard:
    """aiohttp session options that block name resolution and record every request URL."""

    def __init__(self) -> None:
        self.urls: list[URL] = []
        self.refused: list[str] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._on_request_start)

    async def _on_request_start(
        self, session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        self.urls.append(params.url)

    def session_kwargs(self) -> dict[str, Any]:
        return {"connector": aiohttp.TCPConnector(resolver=_NoResolver(self.refused)), "trace_configs": [self.trace]}

    def paths(self) -> list[str]:
        return [u.path for u in self.urls]

    def check(self) -> None:
        elsewhere = [str(u) for u in self.urls if u.host != LOOPBACK]
        assert not elsewhere, f"requests outside the loopback simulator: {elsewhere}"
        assert not self.refused, f"host names looked up: {self.refused}"


@pytest.fixture
def guard() -> Iterator[LoopbackGuard]:
    g = LoopbackGuard()
    yield g
    g.check()


async def test_guard_refuses_host_names() -> None:
    g = LoopbackGuard()
    async with aiohttp.ClientSession(**g.session_kwargs()) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get("http://sim.invalid/v1/gethealth")
    assert g.refused == ["sim.invalid"]


@pytest.fixture
def loopback_signers() -> Iterator[None]:
    """Map the loopback host to pybotters' own bitFlyer signers (REST and websocket), then restore."""
    rest_item = next(i for i in RestHosts.items.values() if i.func is RestAuth.bitflyer)
    ws_item = next(i for i in WsHosts.items.values() if i.func is WsAuth.bitflyer)
    tables: list[dict[str | None, Any]] = [RestHosts.items, WsHosts.items]
    saved = [(table, table.get(LOOPBACK)) for table in tables]
    RestHosts.items[LOOPBACK] = rest_item
    WsHosts.items[LOOPBACK] = ws_item
    try:
        yield
    finally:
        for table, old in saved:
            if old is None:
                table.pop(LOOPBACK, None)
            else:
                table[LOOPBACK] = old


# ---------------------------------------------------------------------- helpers
class Simulator(Protocol):
    """What these tests need of the ``sim`` and ``sim_process`` fixtures."""

    @property
    def url(self) -> str: ...

    def state(self) -> dict[str, Any]: ...




def far_bid(sim: Simulator, product: str, below: int = 30_000) -> int:
    """A bid price well under the touch, off the synthetic ladder's grid (never filled, unique level)."""
    best_bid = sim.state()["markets"][product]["best_bid"]
    assert best_bid is not None
    return (int(best_bid) - below) // GRID * GRID - 17


def open_orders(sim: Simulator, key: str = KEY) -> dict[str, dict[str, Any]]:
    rows = sim.state()["accounts"][key]["open_orders"]
    return {o["child_order_acceptance_id"]: o for o in rows}


def data(result: pybotters.FetchResult) -> Any:
    """The decoded JSON of a pybotters fetch (typed loosely, as the wire is)."""
    return result.data


async def connected(app: pybotters.WebSocketApp) -> None:
    await app  # pybotters: awaiting the app waits for its handshake


def subscribe(channel: str, rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "subscribe", "params": {"channel": channel}, "id": rid}


# ---------------------------------------------------------------------- pybotters
@pytest.fixture
async def pb_client(sim: SimServer, guard: LoopbackGuard, loopback_signers: None) -> AsyncIterator[pybotters.Client]:
    async with pybotters.Client(apis={"bitflyer": [KEY, SECRET]}, base_url=sim.url, **guard.session_kwargs()) as c:
        yield c


async def test_pybotters_rest_signing(sim: SimServer, guard: LoopbackGuard, pb_client: pybotters.Client) -> None:
    price = far_bid(sim, FX)
    order = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": price, "size": 0.01}
    sent = await pb_client.fetch("POST", "/v1/me/sendchildorder", data=order)
    assert sent.response.status == 200, sent.text
    acc = data(sent)["child_order_acceptance_id"]
    placed = await wait_for(lambda: open_orders(sim).get(acc), what="the order to rest")
    assert (placed["side"], placed["price"], placed["size"]) == ("BUY", price, 0.01)

    # signed GET with a query string: the signature covers path + query exactly as sent
    query = {"product_code": FX, "child_order_state": "ACTIVE", "child_order_acceptance_id": acc, "count": "5"}
    got = await pb_client.fetch("GET", "/v1/me/getchildorders", params=query)
    assert got.response.status == 200, got.text
    assert [(o["child_order_acceptance_id"], o["price"]) for o in data(got)] == [(acc, price)]

    cancel = await pb_client.fetch(
        "POST", "/v1/me/cancelchildorder", data={"product_code": FX, "child_order_acceptance_id": acc}
    )
    assert cancel.response.status == 200, cancel.text
    await wait_for(lambda: acc not in open_orders(sim), what="the order to be cancelled")

    # the simulator really checks what pybotters signed: the same call with a wrong secret fails
    async with pybotters.Client(apis={"bitflyer": [KEY, "not-the-secret"]}, base_url=sim.url, **guard.session_kwargs()) as bad:
        denied = await bad.fetch("GET", "/v1/me/getchildorders", params=query)
    assert denied.response.status == errors.INVALID_SIGNATURE.http
    assert data(denied)["status"] == errors.INVALID_SIGNATURE.status
    assert "/v1/me/getchildorders" in guard.paths()


async def test_pybotters_websocket_auth_and_datastore(
    sim: SimServer, guard: LoopbackGuard, pb_client: pybotters.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pybotters")
    store = pybotters.bitFlyerDataStore()
    replies: dict[Any, dict[str, Any]] = {}
    diffs = 0

    def record(msg: Any, ws: Any) -> None:
        nonlocal diffs
        if isinstance(msg, dict) and "id" in msg:
            replies[msg["id"]] = msg
        elif isinstance(msg, dict) and msg.get("params", {}).get("channel") == channels.board(FX):
            diffs += 1

    subs = [channels.board_snapshot(FX), channels.board(FX), channels.CHILD_ORDER_EVENTS]
    app = pb_client.ws_connect(
        sim.ws_url, send_json=[subscribe(ch, i) for i, ch in enumerate(subs)], hdlr_json=[store.onmessage, record]
    )
    await asyncio.wait_for(connected(app), 10)
    # pybotters' auth hook ran before the subscriptions; child_order_events needs it
    await wait_for(lambda: len(replies) == len(subs), what="the subscribe replies")
    assert {i: r.get("result") for i, r in replies.items()} == {i: True for i in range(len(subs))}, replies

    # board: snapshot + diffs agree with the engine's book (top levels, polled while it moves)
    await wait_for(lambda: diffs >= 5, what="board diffs")

    def top(n: int = 10) -> bool:
        book = store.board.sorted({"product_code": FX}, limit=n)
        engine = views.board(sim.engine, FX, n, ws=True)
        return all(
            [(x["price"], x["size"]) for x in book[side]] == [(x["price"], x["size"]) for x in engine[side]]
            for side in ("bids", "asks")
        )

    await wait_for(top, what="store board == engine board (top 10)")
    # after its first snapshot the store unsubscribes it (a JSON-RPC notification, no id) and
    # lives on diffs alone; the simulator must honour that
    snapshot_subs = sim._subs.get(channels.board_snapshot(FX))  # no public view of subscribers
    assert snapshot_subs is not None
    await wait_for(lambda: not snapshot_subs, what="the snapshot unsubscribe")

    # child orders: ORDER inserts, CANCEL removes; the resting order also shows on the board
    price = far_bid(sim, FX)
    order = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": price, "size": 0.0123}
    sent = await pb_client.fetch("POST", "/v1/me/sendchildorder", data=order)
    assert sent.response.status == 200, sent.text
    acc = data(sent)["child_order_acceptance_id"]
    row = await wait_for(lambda: store.childorders.get({"child_order_acceptance_id": acc}), what="ORDER in the store")
    assert (row["side"], row["price"], row["size"], row["child_order_type"]) == ("BUY", price, 0.0123, "LIMIT")
    # the store's REST initializer reads the same order from getchildorders
    from_rest = pybotters.bitFlyerDataStore()
    await from_rest.initialize(pb_client.get("/v1/me/getchildorders", params={"product_code": FX}))
    rest_row = from_rest.childorders.get({"child_order_acceptance_id": acc})
    assert rest_row is not None and (rest_row["price"], rest_row["size"]) == (price, 0.0123)
    level = {"product_code": FX, "side": "bids", "price": float(price)}
    await wait_for(lambda: (store.board.get(level) or {}).get("size") == 0.0123, what="the order's board level")

    await pb_client.fetch("POST", "/v1/me/cancelchildorder", data={"product_code": FX, "child_order_acceptance_id": acc})
    await wait_for(lambda: store.childorders.get({"child_order_acceptance_id": acc}) is None, what="CANCEL in the store")
    events = [e["event_type"] for e in store.childorderevents.find({"child_order_acceptance_id": acc})]
    assert events == ["ORDER", "CANCEL"]
    await wait_for(lambda: store.board.get(level) is None, what="the level to leave the board")

    # positions: a market buy opens FX lots, the market sell closes them; collateral comes
    # from the store's REST initializer and moves by the realised PnL pybotters computes
    await store.initialize(pb_client.get("/v1/me/getcollateral"))
    start_collateral = store.collateral.find()[0]["collateral"]
    assert start_collateral == sim.state()["accounts"][KEY]["collateral"]["collateral"]
    buy = {"product_code": FX, "child_order_type": "MARKET", "side": "BUY", "size": 0.01}
    assert (await pb_client.fetch("POST", "/v1/me/sendchildorder", data=buy)).response.status == 200

    def lots() -> list[tuple[str, float, float]]:
        rows = sim.state()["accounts"][KEY]["positions"][FX]["lots"]
        return sorted((r["side"], float(r["price"]), r["size"]) for r in rows)

    def stored() -> list[tuple[str, float, float]]:
        return sorted((p["side"], float(p["price"]), p["size"]) for p in store.positions.find({"product_code": FX}))

    await wait_for(lambda: round(sum(s for _, _, s in stored()), 8) == 0.01, what="the position in the store")
    assert stored() == lots()
    await from_rest.initialize(pb_client.get("/v1/me/getpositions", params={"product_code": FX}))
    assert sorted((p["side"], p["price"], p["size"]) for p in from_rest.positions.find()) == lots()
    assert {side for side, _, _ in stored()} == {"BUY"}

    sell = {"product_code": FX, "child_order_type": "MARKET", "side": "SELL", "size": 0.01}
    assert (await pb_client.fetch("POST", "/v1/me/sendchildorder", data=sell)).response.status == 200
    await wait_for(lambda: not stored(), what="the position to close in the store")
    assert lots() == []
    # pybotters rounds realised PnL to whole yen per execution; the simulator keeps the exact value
    # (a wrong PnL would be off by far more: the round trip paid a spread of hundreds of yen on 0.01)
    account = sim.state()["accounts"][KEY]
    collateral, executions = account["collateral"]["collateral"], account["executions"]
    assert abs(store.collateral.find()[0]["collateral"] - collateral) <= 0.5 * executions
    # (the pb_client fixture closes the session, which ends the app's socket and its reconnect loop)
    pb_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("pybotters")]
    assert pb_warnings == []


# ---------------------------------------------------------------------- ccxt
@contextlib.asynccontextmanager
async def ccxt_bitflyer(url: str, guard: LoopbackGuard) -> AsyncIterator[Any]:
    """ccxt's async bitflyer class with the simulator as its REST root, on a guarded session."""
    session = aiohttp.ClientSession(**guard.session_kwargs())
    ex = ccxt_async.bitflyer(
        {
            "apiKey": KEY,
            "secret": SECRET,
            "session": session,
            "enableRateLimit": False,  # its 1 request/s throttle would only slow the test
            "urls": {"api": {"rest": url}},
        }
    )
    try:
        yield ex
    finally:
        await ex.close()
        await session.close()


@pytest.fixture(params=["sim", "sim_process"])
def target(request: pytest.FixtureRequest) -> Simulator:
    """The in-process simulator, and the real ``bfsx sim`` process."""
    sim: Simulator = request.getfixturevalue(request.param)
    return sim


async def test_ccxt_bitflyer(target: Simulator, guard: LoopbackGuard) -> None:
    async with ccxt_bitflyer(target.url, guard) as exchange:
        await _ccxt_basics(target, guard, exchange)


async def _ccxt_basics(sim: Simulator, guard: LoopbackGuard, exchange: Any) -> None:
    markets = await exchange.load_markets()
    assert markets["BTC/JPY"]["id"] == SPOT and markets["BTC/JPY"]["spot"]
    assert markets["BTC/JPY:JPY"]["id"] == FX and markets["BTC/JPY:JPY"]["swap"]
    assert {"/v1/getmarkets", "/v1/getmarkets/usa", "/v1/getmarkets/eu"} <= set(guard.paths())

    ticker = await exchange.fetch_ticker("BTC/JPY")
    assert ticker["symbol"] == "BTC/JPY"
    assert 0 < ticker["bid"] < ticker["ask"] and ticker["last"] > 0 and ticker["timestamp"] > 0

    book = await exchange.fetch_order_book("BTC/JPY:JPY")
    assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
    assert all(a[0] > b[0] for a, b in zip(book["bids"], book["bids"][1:], strict=False))

    balance = await exchange.fetch_balance()
    want = sim.state()["accounts"][KEY]["balances"]
    assert balance["JPY"]["total"] == want["JPY"]["amount"] and balance["JPY"]["free"] == want["JPY"]["available"]
    assert balance["BTC"]["total"] == want["BTC"]["amount"]

    price = far_bid(sim, SPOT)
    created = await exchange.create_order("BTC/JPY", "limit", "buy", 0.01, price)
    acc = created["id"]
    assert acc
    placed = await wait_for(lambda: open_orders(sim).get(acc), what="the ccxt order to rest")
    assert (placed["product_code"], placed["side"], placed["price"], placed["size"]) == (SPOT, "BUY", price, 0.01)

    mine = await exchange.fetch_open_orders("BTC/JPY")
    assert [(o["id"], o["side"], o["price"], o["amount"], o["status"]) for o in mine] == [
        (acc, "buy", price, 0.01, "open")
    ]

    await exchange.cancel_order(acc, "BTC/JPY")
    await wait_for(lambda: acc not in open_orders(sim), what="the ccxt order to be cancelled")
    assert await exchange.fetch_open_orders("BTC/JPY") == []
    assert (await exchange.fetch_order(acc, "BTC/JPY"))["status"] == "canceled"


async def test_ccxt_bitflyer_extras(sim: SimServer, guard: LoopbackGuard) -> None:
    """Calls ccxt makes beyond the basics: trading fee, positions (it sends ``product_code`` as a
    stringified list), my trades, and the error body mapped to its exception."""
    async with ccxt_bitflyer(sim.url, guard) as exchange:
        await _ccxt_extras(sim, exchange)


async def _ccxt_extras(sim: SimServer, exchange: Any) -> None:
    assert (await exchange.fetch_trading_fee("BTC/JPY"))["taker"] == sim.config.spot_commission_rate
    assert (await exchange.fetch_trading_fee("BTC/JPY:JPY"))["taker"] == 0.0

    buy = await exchange.create_order("BTC/JPY:JPY", "market", "buy", 0.01)

    def lots() -> list[tuple[str, int, float]]:
        rows = sim.state()["accounts"][KEY]["positions"][FX]["lots"]
        return sorted((r["side"], r["price"], r["size"]) for r in rows)

    await wait_for(lambda: round(sum(s for _, _, s in lots()), 8) == 0.01, what="the market buy to fill")
    positions = await exchange.fetch_positions(["BTC/JPY:JPY"])
    assert sorted((p["side"], p["price"], p["size"]) for p in positions) == lots()
    trades = await exchange.fetch_my_trades("BTC/JPY:JPY")
    assert {t["order"] for t in trades} == {buy["id"]}
    assert round(sum(t["amount"] for t in trades), 8) == 0.01

    await exchange.create_order("BTC/JPY:JPY", "market", "sell", 0.01)
    await wait_for(lambda: not lots(), what="the market sell to close the position")
    assert await exchange.fetch_positions(["BTC/JPY:JPY"]) == []

    with pytest.raises(ccxt_async.ExchangeError, match=str(errors.MIN_SIZE.status)):
        await exchange.create_order("BTC/JPY", "limit", "buy", 0.0001, far_bid(sim, SPOT))
