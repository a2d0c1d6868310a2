"""Every REST endpoint's shape, aliases, errors and signature checks (docs/bitflyer.md,
docs/simulator.md#what-it-serves)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bfsx.bitflyer import ids, timestamps
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
TICKER_KEYS = {
    "product_code", "state", "timestamp", "tick_id", "best_bid", "best_ask", "best_bid_size", "best_ask_size",
    "total_bid_depth", "total_ask_depth", "market_bid_size", "market_ask_size", "ltp", "volume", "volume_by_product",
}
CHILD_ORDER_KEYS = {
    "id", "child_order_id", "product_code", "side", "child_order_type", "price", "average_price", "size",
    "child_order_state", "expire_date", "child_order_date", "child_order_acceptance_id", "outstanding_size",
    "cancel_size", "executed_size", "total_commission", "time_in_force",
}


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        yield c


async def _until_executions(sim: SimServer, rest: WireClient, n: int) -> None:
    """Wait for the synthetic flow to print at least ``n`` executions (polls; no fixed sleep)."""
    import asyncio

    for _ in range(400):
        if len((await rest.get("/v1/getexecutions", product_code=FX, count=n)).data) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no executions")


async def test_markets_and_aliases(rest: WireClient) -> None:
    for path in ("/v1/getmarkets", "/v1/markets"):
        r = await rest.get(path)
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        assert r.data == [
            {"product_code": "FX_BTC_JPY", "market_type": "FX"},
            {"product_code": "BTC_JPY", "market_type": "Spot"},
        ]
    for path in ("/v1/getmarkets/usa", "/v1/getmarkets/eu", "/v1/markets/usa", "/v1/markets/eu"):
        r = await rest.get(path)
        assert r.status == 200 and r.data == [{"product_code": "BTC_JPY", "market_type": "Spot"}]


async def test_board_shape_and_default_product(rest: WireClient) -> None:
    for path in ("/v1/getboard", "/v1/board"):
        b = (await rest.get(path, product_code="fx_btc_jpy")).data
        assert set(b) == {"mid_price", "bids", "asks"}
        bids, asks = [x["price"] for x in b["bids"]], [x["price"] for x in b["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < b["mid_price"] < asks[0] and len(bids) > 300 and len(asks) > 300
        assert all(isinstance(p, int) for p in bids[:5])
    spot = (await rest.get("/v1/getboard")).data  # no product_code: BTC_JPY
    assert spot["bids"] and spot["asks"]


async def test_ticker(rest: WireClient) -> None:
    for path in ("/v1/getticker", "/v1/ticker"):
        t = (await rest.get(path, product_code=FX)).data
        assert set(t) == TICKER_KEYS and t["product_code"] == FX and t["state"] == "RUNNING"
        assert t["best_bid"] < t["best_ask"] and not t["timestamp"].endswith("Z")
        timestamps.parse(t["timestamp"])
    assert (await rest.get("/v1/getticker")).data["product_code"] == "BTC_JPY"


async def test_public_executions_paging(sim: SimServer, rest: WireClient) -> None:
    await _until_executions(sim, rest, 12)
    for path in ("/v1/getexecutions", "/v1/executions"):
        rows = (await rest.get(path, product_code=FX, count=10)).data
        assert len(rows) == 10
        assert set(rows[0]) == {"id", "side", "price", "size", "exec_date",
                                "buy_child_order_acceptance_id", "sell_child_order_acceptance_id"}
        got = [r["id"] for r in rows]
        assert got == sorted(got, reverse=True)
        assert all(ids.ACCEPTANCE_RE.match(r["buy_child_order_acceptance_id"]) for r in rows)
        assert all(r["side"] in ("BUY", "SELL") and not r["exec_date"].endswith("Z") for r in rows)
    rows = (await rest.get("/v1/getexecutions", product_code=FX, count=10)).data
    top, low = rows[0]["id"], rows[-1]["id"]
    before = (await rest.get("/v1/getexecutions", product_code=FX, count=3, before=top)).data
    assert [r["id"] for r in before] == [r["id"] for r in rows[1:4]]
    after = (await rest.get("/v1/getexecutions", product_code=FX, count=500, after=low, before=top)).data
    assert [r["id"] for r in after] == [r["id"] for r in rows[1:-1]]


async def test_board_state_and_health(rest: WireClient) -> None:
    assert (await rest.get("/v1/getboardstate", product_code=FX)).data == {"health": "NORMAL", "state": "RUNNING"}
    assert (await rest.get("/v1/gethealth", product_code=FX)).data == {"status": "NORMAL"}
    assert (await rest.get("/v1/gethealth")).data == {"status": "NORMAL"}


async def test_unknown_product_and_path(rest: WireClient) -> None:
    r = await rest.get("/v1/getboard", product_code="NOPE_JPY")
    assert r.status == 400 and r.data == {"status": -100, "error_message": "Invalid product", "data": None}
    r = await rest.get("/v1/nosuchthing")
    assert r.status == 404


async def test_signature_checks(sim: SimServer) -> None:
    async with WireClient(sim.url, "demo-key-1", "wrong-secret") as bad:
        r = await bad.get("/v1/me/getbalance")
        assert r.status == 401 and r.data == {"status": -500, "error_message": "Invalid signature", "data": None}
    async with WireClient(sim.url, "no-such-key", "x") as unknown:
        assert (await unknown.get("/v1/me/getbalance")).status == 401
    async with WireClient(sim.url) as anon:
        r = await anon.get("/v1/me/getbalance")
        assert r.status == 401 and r.data["status"] == -500 and "ACCESS-KEY" in r.data["error_message"]
    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as good:
        # the query string is signed exactly as sent: change its order after signing -> rejected
        from bfsx.bitflyer import auth

        headers = auth.rest_headers("demo-key-1", "demo-secret-1", "GET", "/v1/me/getchildorders?product_code=FX_BTC_JPY&count=5")
        assert good._session is not None
        async with good._session.get(
            sim.url + "/v1/me/getchildorders?count=5&product_code=FX_BTC_JPY", headers=headers
        ) as resp:
            assert resp.status == 401
        # the body is signed byte for byte
        body = b'{"product_code": "FX_BTC_JPY"}'
        headers = auth.rest_headers("demo-key-1", "demo-secret-1", "POST", "/v1/me/cancelallchildorders", body)
        async with good._session.post(sim.url + "/v1/me/cancelallchildorders", data=body + b" ", headers=headers) as resp:
            assert resp.status == 401
        async with good._session.post(sim.url + "/v1/me/cancelallchildorders", data=body, headers=headers) as resp:
            assert resp.status == 200 and await resp.read() == b""


async def test_private_account_endpoints(rest: WireClient) -> None:
    perms = (await rest.get("/v1/me/getpermissions")).data
    assert "/v1/me/sendchildorder" in perms and "/v1/me/getpositions" in perms
    bal = (await rest.get("/v1/me/getbalance")).data
    assert bal == [
        {"currency_code": "JPY", "amount": 10_000_000, "available": 10_000_000},
        {"currency_code": "BTC", "amount": 1.0, "available": 1.0},
    ]
    coll = (await rest.get("/v1/me/getcollateral")).data
    assert coll["collateral"] == 10_000_000 and coll["open_position_pnl"] == 0 and coll["require_collateral"] == 0
    assert {"keep_rate", "margin_call_amount", "margin_call_due_date"} <= set(coll)
    assert (await rest.get("/v1/me/getcollateralaccounts")).data[0] == {"currency_code": "JPY", "amount": 10_000_000}
    assert (await rest.get("/v1/me/gettradingcommission", product_code=FX)).data == {"commission_rate": 0.0}
    spot = (await rest.get("/v1/me/gettradingcommission", product_code="BTC_JPY")).data
    assert 0 < spot["commission_rate"] < 0.01
    assert (await rest.get("/v1/me/getpositions", product_code=FX)).data == []
    assert (await rest.get("/v1/me/getpositions", product_code="BTC_JPY")).data["status"] == -100


async def test_balance_locks_open_spot_orders(rest: WireClient) -> None:
    t = (await rest.get("/v1/getticker", product_code="BTC_JPY")).data
    price = int(t["best_bid"]) - 50_000
    await rest.order("BTC_JPY", "BUY", 0.1, price)
    import asyncio

    for _ in range(100):
        bal = {b["currency_code"]: b for b in (await rest.get("/v1/me/getbalance")).data}
        if bal["JPY"]["available"] < 10_000_000:
            break
        await asyncio.sleep(0.02)
    assert bal["JPY"]["amount"] == 10_000_000
    assert bal["JPY"]["available"] == pytest.approx(10_000_000 - price * 0.1)


async def test_order_validation_errors(rest: WireClient) -> None:
    async def send(**body: object) -> tuple[int, int]:
        base = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": 1_000_000, "size": 0.01}
        r = await rest.post("/v1/me/sendchildorder", {**base, **body})
        return r.status, r.data["status"]

    assert await send(size=0.0001) == (400, -110)
    assert (await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "LIMIT",
                                                       "side": "BUY", "price": 1_000_000, "size": 0.0001})).data[
        "error_message"] == "The minimum order size is 0.001 BTC."
    assert await send(product_code="XRP_JPY") == (400, -100)
    assert await send(price=-5) == (400, -106)
    assert (await send(side="HOLD"))[1] == -101
    assert (await send(time_in_force="GTD"))[1] == -101
    assert (await send(minute_to_expire=0))[1] == -101
    r = await rest.call("POST", "/v1/me/sendchildorder", body=None)
    assert r.status == 400


async def test_child_orders_and_executions_filters_and_paging(sim: SimServer, rest: WireClient) -> None:
    accs = [await rest.order(FX, "BUY", 0.001) for _ in range(4)]
    import asyncio

    for _ in range(200):
        done = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_state="COMPLETED")).data
        if len(done) == 4:
            break
        await asyncio.sleep(0.02)
    assert {r["child_order_acceptance_id"] for r in done} == set(accs)
    assert set(done[0]) == CHILD_ORDER_KEYS and done[0]["child_order_type"] == "MARKET" and done[0]["price"] == 0
    page_ids = [r["id"] for r in done]
    assert page_ids == sorted(page_ids, reverse=True) and all(i > 0 for i in page_ids)
    two = (await rest.get("/v1/me/getchildorders", product_code=FX, count=2)).data
    assert [r["id"] for r in two] == page_ids[:2]
    older = (await rest.get("/v1/me/getchildorders", product_code=FX, before=page_ids[1])).data
    assert [r["id"] for r in older] == page_ids[2:]
    newer = (await rest.get("/v1/me/getchildorders", product_code=FX, after=page_ids[2])).data
    assert [r["id"] for r in newer] == page_ids[:2]
    one = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_id=done[0]["child_order_id"])).data
    assert [r["child_order_acceptance_id"] for r in one] == [done[0]["child_order_acceptance_id"]]
    assert (await rest.get("/v1/me/getchildorders", product_code="BTC_JPY")).data == []

    mine = (await rest.get("/v1/me/getexecutions", product_code=FX)).data
    assert len(mine) >= 4 and set(mine[0]) == {"id", "child_order_id", "side", "price", "size", "commission",
                                                 "exec_date", "child_order_acceptance_id"}
    xs = [m["id"] for m in mine]
    assert xs == sorted(xs, reverse=True)
    by_acc = (await rest.get("/v1/me/getexecutions", product_code=FX, child_order_acceptance_id=accs[0])).data
    assert by_acc and all(m["child_order_acceptance_id"] == accs[0] for m in by_acc)
    after = (await rest.get("/v1/me/getexecutions", product_code=FX, after=xs[-1])).data
    assert [m["id"] for m in after] == xs[:-1]


async def test_fixture_accounts_from_config() -> None:
    cfg = SimConfig.fast(accounts=[{"api_key": "k", "api_secret": "s", "jpy": 5000, "btc": 0.5}], products=["FX_BTC_JPY"])
    async with SimServer(cfg) as sim, WireClient(sim.url, "k", "s") as c:
        bal = {b["currency_code"]: b["amount"] for b in (await c.get("/v1/me/getbalance")).data}
        assert bal == {"JPY": 5000, "BTC": 0.5}
        assert (await c.get("/v1/getmarkets")).data == [{"product_code": "FX_BTC_JPY", "market_type": "FX"}]
        assert (await c.get("/v1/getboard", product_code="BTC_JPY")).status == 400
