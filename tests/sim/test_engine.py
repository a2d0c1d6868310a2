"""Order lifecycle over a real realtime socket: ORDER -> EXECUTION... -> outstanding 0, CANCEL,
CANCEL_FAILED, EXPIRE (IOC, FOK, minute_to_expire), ORDER_FAILED, self trade, event routing.

Most tests run on a *quiet* market (no synthetic takers, a still mid) so only the test's own
orders trade and every outcome is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bfsx.bitflyer import ids
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient, WireSocket
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
QUIET = {"taker_rate": 0, "volatility": 0, "jump_probability": 0, "noise": 0, "impact": 0, "churn_per_second": 0,
         "refill_rate": 0}


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.fast(market=QUIET, minute_seconds=0.3)


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        yield c


@pytest.fixture
async def rest2(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, "demo-key-2", "demo-secret-2") as c:
        yield c


async def _events_socket(sim: SimServer, key: str, secret: str) -> WireSocket:
    ws = await WireSocket.connect(sim.ws_url)
    assert (await ws.auth(key, secret))["result"] is True
    assert (await ws.subscribe("child_order_events"))["result"] is True
    return ws


@pytest.fixture
async def events(sim: SimServer) -> AsyncIterator[WireSocket]:
    ws = await _events_socket(sim, "demo-key-1", "demo-secret-1")
    yield ws
    await ws.close()


def _types(evs: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in evs]


async def _final(ws: WireSocket, acc: str, final: tuple[str, ...] = ("CANCEL", "EXPIRE", "ORDER_FAILED")) -> list[dict[str, Any]]:
    """Wait until the order's events end (a final event, or an EXECUTION with outstanding 0)."""

    def done() -> list[dict[str, Any]] | None:
        evs = ws.events(acc)
        for e in evs:
            if e["event_type"] in final or (e["event_type"] == "EXECUTION" and e["outstanding_size"] == 0):
                return evs
        return None

    result: list[dict[str, Any]] = await ws.wait_for(done, 10)
    return result


async def _touch(rest: WireClient, product: str = FX) -> tuple[float, float]:
    t = (await rest.get("/v1/getticker", product_code=product)).data
    return t["best_bid"], t["best_ask"]


async def test_market_order_sweeps_levels_until_outstanding_zero(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    board = (await rest.get("/v1/getboard", product_code=FX)).data
    first_two = board["asks"][0]["size"] + board["asks"][1]["size"]
    size = round(first_two + 0.001, 4)  # needs at least three asks
    acc = await rest.order(FX, "BUY", size)
    assert ids.ACCEPTANCE_RE.match(acc)
    evs = await _final(events, acc)
    types = _types(evs)
    assert types[0] == "ORDER" and types.count("EXECUTION") >= 3
    order = evs[0]
    assert order["child_order_type"] == "MARKET" and order["price"] == 0 and order["size"] == size
    assert ids.CHILD_ORDER_RE.match(order["child_order_id"]) and order["child_order_id"].endswith("F")
    execs = [e for e in evs if e["event_type"] == "EXECUTION"]
    assert execs[-1]["outstanding_size"] == 0
    assert all(a["outstanding_size"] > b["outstanding_size"] for a, b in itertools.pairwise(execs))
    assert round(sum(e["size"] for e in execs), 8) == size
    assert [e["price"] for e in execs] == sorted(e["price"] for e in execs)  # best asks first
    # exec_id is the public execution id
    public = (await rest.get("/v1/getexecutions", product_code=FX, count=20)).data
    pub_ids = {p["id"] for p in public if p["buy_child_order_acceptance_id"] == acc}
    assert {e["exec_id"] for e in execs} == pub_ids
    # the position is a lot per fill price, netted FIFO
    st = sim.state()["accounts"]["demo-key-1"]["positions"][FX]
    assert st["net"] == size and len(st["lots"]) == len({e["price"] for e in execs})


async def test_limit_rests_then_cancel(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    bid, _ask = await _touch(rest)
    acc = await rest.order(FX, "BUY", 0.01, bid - 5000)
    await events.wait_for(lambda: "ORDER" in _types(events.events(acc)))
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_state="ACTIVE")).data
    row = next(r for r in rows if r["child_order_acceptance_id"] == acc)
    assert row["id"] == 0 and row["child_order_state"] == "ACTIVE" and row["outstanding_size"] == 0.01
    r = await rest.post("/v1/me/cancelchildorder", {"product_code": FX, "child_order_acceptance_id": acc})
    assert r.status == 200 and r.text == ""
    evs = await _final(events, acc)
    assert _types(evs) == ["ORDER", "CANCEL"]
    assert evs[1]["child_order_id"] == evs[0]["child_order_id"]
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["child_order_state"] == "CANCELED" and rows[0]["cancel_size"] == 0.01 and rows[0]["id"] > 0
    # cancelling again: 200, then CANCEL_FAILED
    r = await rest.post("/v1/me/cancelchildorder", {"product_code": FX, "child_order_id": evs[0]["child_order_id"]})
    assert r.status == 200
    await events.wait_for(lambda: "CANCEL_FAILED" in _types(events.events(acc)))


async def test_cancel_all(rest: WireClient, events: WireSocket) -> None:
    bid, ask = await _touch(rest)
    a = await rest.order(FX, "BUY", 0.01, bid - 3000)
    b = await rest.order(FX, "SELL", 0.01, ask + 3000)
    await events.wait_for(lambda: all("ORDER" in _types(events.events(x)) for x in (a, b)))
    r = await rest.post("/v1/me/cancelallchildorders", {"product_code": "fx_btc_jpy"})
    assert r.status == 200 and r.text == ""
    await events.wait_for(lambda: all("CANCEL" in _types(events.events(x)) for x in (a, b)))
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_state="ACTIVE")).data
    assert rows == []


async def test_ioc_partial_fill_then_expire(rest: WireClient, events: WireSocket) -> None:
    board = (await rest.get("/v1/getboard", product_code=FX)).data
    best = board["asks"][0]
    acc = await rest.order(FX, "BUY", round(best["size"] + 0.5, 4), best["price"], time_in_force="IOC")
    evs = await _final(events, acc, ("EXPIRE",))
    assert _types(evs) == ["ORDER", "EXECUTION", "EXPIRE"]
    assert evs[1]["size"] == best["size"] and evs[1]["outstanding_size"] == 0.5
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["child_order_state"] == "EXPIRED" and rows[0]["executed_size"] == best["size"]


async def test_fok_unfillable_expires_without_fills(rest: WireClient, events: WireSocket) -> None:
    board = (await rest.get("/v1/getboard", product_code=FX)).data
    best = board["asks"][0]
    acc = await rest.order(FX, "BUY", round(best["size"] + 0.5, 4), best["price"], time_in_force="FOK")
    assert _types(await _final(events, acc)) == ["ORDER", "EXPIRE"]
    acc2 = await rest.order(FX, "BUY", 0.001, best["price"], time_in_force="FOK")
    evs = await _final(events, acc2)
    assert _types(evs) == ["ORDER", "EXECUTION"] and evs[-1]["outstanding_size"] == 0


async def test_minute_to_expire(rest: WireClient, events: WireSocket) -> None:
    bid, _ = await _touch(rest)
    acc = await rest.order(FX, "BUY", 0.01, bid - 2000, minute_to_expire=1)  # 1 minute = 0.3 s here
    evs = await _final(events, acc)
    assert _types(evs) == ["ORDER", "EXPIRE"]
    assert len(evs[0]["expire_date"]) == 19 and "Z" not in evs[0]["expire_date"]
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["child_order_state"] == "EXPIRED"


async def test_order_failed_on_margin(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    bid, _ = await _touch(rest)
    acc = await rest.order(FX, "BUY", 5.0, bid - 1000)  # 5 BTC at 2x needs ~25M JPY of collateral
    evs = await _final(events, acc)
    assert _types(evs) == ["ORDER_FAILED"] and evs[0]["reason"]
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=acc)).data
    assert rows[0]["child_order_state"] == "REJECTED"
    assert sim.state()["accounts"]["demo-key-1"]["open_orders"] == []


async def test_order_failed_on_spot_funds(rest: WireClient, events: WireSocket) -> None:
    acc = await rest.order("BTC_JPY", "SELL", 1.5)  # holds 1 BTC
    assert _types(await _final(events, acc)) == ["ORDER_FAILED"]


async def test_self_trade_is_refused(rest: WireClient, events: WireSocket) -> None:
    _bid, ask = await _touch(rest)
    resting = await rest.order(FX, "SELL", 0.01, ask - 10)  # best ask now, above the still mid
    await events.wait_for(lambda: "ORDER" in _types(events.events(resting)))
    r = await rest.post(
        "/v1/me/sendchildorder",
        {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": ask, "size": 0.01},
    )
    assert r.status == 400 and r.data["status"] == -159
    # a crossing order that stops before the own order is fine
    r = await rest.post(
        "/v1/me/sendchildorder",
        {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": ask - 20, "size": 0.01},
    )
    assert r.status == 200


async def test_spot_fill_charges_commission_in_btc(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    acc = await rest.order("BTC_JPY", "BUY", 0.01)
    evs = await _final(events, acc)
    execs = [e for e in evs if e["event_type"] == "EXECUTION"]
    rate = sim.config.spot_commission_rate
    assert round(sum(e["commission"] for e in execs), 8) == pytest.approx(0.01 * rate, abs=len(execs) * 1e-8)
    bal = {b["currency_code"]: b for b in (await rest.get("/v1/me/getbalance")).data}
    cost = sum(e["price"] * e["size"] for e in execs)
    assert bal["BTC"]["amount"] == pytest.approx(1.0 + 0.01 - sum(e["commission"] for e in execs), abs=1e-9)
    assert bal["JPY"]["amount"] == pytest.approx(10_000_000 - cost, abs=1e-6)
    mine = (await rest.get("/v1/me/getexecutions", product_code="BTC_JPY")).data
    assert {m["id"] for m in mine} == {e["exec_id"] for e in execs}
    assert all(m["commission"] > 0 for m in mine)


async def test_events_go_to_the_owner_only(sim: SimServer, rest: WireClient, rest2: WireClient, events: WireSocket) -> None:
    other = await _events_socket(sim, "demo-key-2", "demo-secret-2")
    try:
        _bid, ask = await _touch(rest)
        maker = await rest2.order(FX, "SELL", 0.02, ask - 10)
        await other.wait_for(lambda: "ORDER" in _types(other.events(maker)))
        taker = await rest.order(FX, "BUY", 0.02, ask - 10)
        mine = await _final(events, taker)
        theirs = await _final(other, maker)
        assert _types(mine) == ["ORDER", "EXECUTION"] and _types(theirs) == ["ORDER", "EXECUTION"]
        assert mine[1]["exec_id"] == theirs[1]["exec_id"] and theirs[1]["side"] == "SELL"
        assert events.events(maker) == [] and other.events(taker) == []
        st = sim.state()["accounts"]
        assert st["demo-key-1"]["positions"][FX]["net"] == 0.02
        assert st["demo-key-2"]["positions"][FX]["net"] == -0.02
    finally:
        await other.close()


async def test_fx_lots_net_fifo_and_realise_pnl(sim: SimServer, rest: WireClient, rest2: WireClient, events: WireSocket) -> None:
    """Two buys then a bigger sell against account 2's quotes: the oldest lot closes first."""
    mid = int(sim.state()["markets"][FX]["fair_mid"])  # quotes between the touch and the still mid
    p1, p2, p3 = mid + 20, mid + 30, mid - 20
    for n_exec, (side, price, size) in enumerate((("BUY", p1, 0.01), ("BUY", p2, 0.01), ("SELL", p3, 0.015)), 1):
        other = "SELL" if side == "BUY" else "BUY"
        await rest2.order(FX, other, size, price)
        await rest.order(FX, side, size, price)
        await events.wait_for(lambda n=n_exec: len([e for e in events.events() if e["event_type"] == "EXECUTION"]) == n)
    lots = (await rest.get("/v1/me/getpositions", product_code=FX)).data
    assert len(lots) == 1 and lots[0]["side"] == "BUY" and lots[0]["price"] == p2 and lots[0]["size"] == 0.005
    assert set(lots[0]) >= {"product_code", "side", "price", "size", "commission", "swap_point_accumulate",
                            "require_collateral", "open_date", "leverage", "pnl", "sfd"}
    coll = (await rest.get("/v1/me/getcollateral")).data
    realised = (p3 - p1) * 0.01 + (p3 - p2) * 0.005
    assert coll["collateral"] == pytest.approx(10_000_000 + realised, abs=1e-6)
    assert sim.state()["accounts"]["demo-key-2"]["positions"][FX]["net"] == -0.005


async def test_funds_failure_as_http_error() -> None:
    async with SimServer(SimConfig.fast(market=QUIET, funds_failure="http")) as sim, WireClient(
        sim.url, "demo-key-1", "demo-secret-1"
    ) as c:
        body = {"product_code": FX, "child_order_type": "MARKET", "side": "BUY", "size": 5.0}
        r = await c.post("/v1/me/sendchildorder", body)
        assert r.status == 400 and r.data["status"] == -205
        r = await c.post("/v1/me/sendchildorder", {**body, "product_code": "BTC_JPY", "side": "SELL", "size": 2.0})
        assert r.status == 400 and r.data == {"status": -200, "error_message": "Insufficient funds", "data": None}


async def test_order_delay_keeps_cancel_after_placement() -> None:
    """With an acceptance->placement delay, a cancel sent right after the reply still finds the order."""
    async with SimServer(SimConfig.fast(market=QUIET, order_delay_ms=200)) as sim, WireClient(
        sim.url, "demo-key-1", "demo-secret-1"
    ) as c:
        ws = await _events_socket(sim, "demo-key-1", "demo-secret-1")
        try:
            bid, _ = await _touch(c)
            acc = await c.order(FX, "BUY", 0.01, bid - 5000)
            await c.post("/v1/me/cancelchildorder", {"product_code": FX, "child_order_acceptance_id": acc})
            assert _types(await _final(ws, acc)) == ["ORDER", "CANCEL"]
        finally:
            await ws.close()
