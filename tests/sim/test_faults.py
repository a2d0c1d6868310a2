"""Each fault switch of POST /_sim/faults, and GET /_sim/state, over HTTP
(docs/simulator.md#test-hooks-no-signature-needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bfsx.sim.hooks import SimHooks, WireClient, WireSocket
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        yield c


@pytest.fixture
async def events(sim: SimServer) -> AsyncIterator[WireSocket]:
    ws = await WireSocket.connect(sim.ws_url)
    await ws.auth("demo-key-1", "demo-secret-1")
    await ws.subscribe("child_order_events")
    yield ws
    await ws.close()


async def test_faults_endpoint_validates_and_reports(sim: SimServer) -> None:
    hooks = SimHooks(sim.url)
    now = await hooks.set_faults()
    assert now == {"drop_private_events": 0.0, "http_error_rate": 0.0, "http_error_status": 500, "latency_ms": 0.0,
                   "health": None, "maintenance": False, "fail_paths": [], "fail_paths_timeout_ms": 0.0}
    async with aiohttp.ClientSession() as s:
        for bad in ({"nope": 1}, {"http_error_rate": 2}, {"health": "GREAT"}, {"close_websockets": 1006}, [1],
                    {"fail_paths": ["/_sim/state"]}):
            async with s.post(f"{sim.url}/_sim/faults", json=bad) as r:
                assert r.status == 400 and "\n" not in (await r.json())["error"]
    state = await hooks.fetch_state()
    assert state == {**sim.state(), "flow_steps": state["flow_steps"], "markets": state["markets"],
                     "last_execution_id": state["last_execution_id"]}
    acct = state["accounts"]["demo-key-1"]
    assert set(acct) >= {"balances", "collateral", "open_orders", "positions"}
    assert acct["positions"][FX] == {"net": 0.0, "lots": []}
    assert state["last_execution_id"] > 0 and state["faults"]["maintenance"] is False


async def test_drop_private_events(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    await sim.set_faults(drop_private_events=1.0)
    lost = await rest.order(FX, "BUY", 0.001)
    await sim.set_faults(drop_private_events=0)
    kept = await rest.order(FX, "BUY", 0.001)
    await events.wait_for(lambda: events.events(kept))
    assert events.events(lost) == []
    # the fill itself happened: REST still knows it
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=lost)).data
    assert rows[0]["child_order_state"] == "COMPLETED"


@pytest.mark.parametrize(("arg", "code"), [(1012, 1012), (True, 1000), (4000, 4000)])
async def test_close_websockets(sim: SimServer, arg: Any, code: int) -> None:
    ws = await WireSocket.connect(sim.ws_url)
    try:
        await ws.subscribe("lightning_executions_FX_BTC_JPY")
        await SimHooks(sim.url).set_faults(close_websockets=arg)
        await ws.wait_for(lambda: ws.close_code is not None)
        assert ws.close_code == code
        if code == 1012:
            assert ws.close_reason == "scheduled maintenance"
        # a new connection works
        again = await WireSocket.connect(sim.ws_url)
        assert (await again.subscribe("lightning_executions_FX_BTC_JPY"))["result"] is True
        await again.close()
    finally:
        await ws.close()


async def test_http_errors(sim: SimServer, rest: WireClient) -> None:
    await SimHooks(sim.url).set_faults(http_error_rate=1.0, http_error_status=503)
    r = await rest.get("/v1/getticker", product_code=FX)
    assert r.status == 503 and r.data["status"] == -208
    r = await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET", "side": "BUY",
                                                   "size": 0.001})
    assert r.status == 503
    assert sim.state()["accounts"]["demo-key-1"]["executions"] == 0  # a refused order never happened
    await sim.set_faults(http_error_rate=1.0, http_error_status=429)
    assert (await rest.get("/v1/gethealth")).data["status"] == -1
    await sim.set_faults(http_error_rate=0)
    assert (await rest.get("/v1/getticker", product_code=FX)).status == 200


async def test_fail_paths_fail_only_those_paths(sim: SimServer, rest: WireClient) -> None:
    await sim.set_faults(fail_paths=["/v1/me/getpositions/"], http_error_status=500)
    r = await rest.get("/v1/me/getpositions", product_code=FX)
    assert r.status == 500 and r.data["status"] == -208
    assert (await rest.get("/v1/getboardstate", product_code=FX)).status == 200
    assert (await rest.get("/v1/getticker", product_code=FX)).status == 200
    r = await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET", "side": "BUY",
                                                   "size": 0.001})
    assert r.status == 200  # orders still go out
    await sim.set_faults(fail_paths_timeout_ms=300)
    started = time.monotonic()
    assert (await rest.get("/v1/me/getpositions", product_code=FX)).status == 500
    assert time.monotonic() - started >= 0.3
    await sim.set_faults(fail_paths=[], fail_paths_timeout_ms=0)
    assert (await rest.get("/v1/me/getpositions", product_code=FX)).status == 200


async def test_latency_delays_the_reply_not_the_effect(sim: SimServer, rest: WireClient, events: WireSocket) -> None:
    await sim.set_faults(latency_ms=1500)
    started = time.monotonic()
    post = asyncio.create_task(rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET",
                                                                   "side": "BUY", "size": 0.001}))
    await events.wait_for(lambda: events.events(), timeout=10)  # the ORDER event comes before the reply
    assert not post.done()
    reply = await post
    assert reply.status == 200 and time.monotonic() - started >= 1.5
    assert events.events()[0]["child_order_acceptance_id"] == reply.data["child_order_acceptance_id"]


async def test_health(sim: SimServer, rest: WireClient) -> None:
    await sim.set_faults(health="SUPER BUSY")
    assert (await rest.get("/v1/gethealth")).data == {"status": "SUPER BUSY"}
    assert (await rest.get("/v1/getboardstate", product_code=FX)).data == {"health": "SUPER BUSY", "state": "RUNNING"}
    await sim.set_faults(health="NO ORDER")
    r = await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET", "side": "BUY",
                                                   "size": 0.001})
    assert r.data["status"] == -208
    await sim.set_faults(health=None)
    assert (await rest.get("/v1/gethealth")).data == {"status": "NORMAL"}


async def test_maintenance(sim: SimServer, rest: WireClient) -> None:
    ws = await WireSocket.connect(sim.ws_url)
    try:
        bid = (await rest.get("/v1/getticker", product_code=FX)).data["best_bid"]
        resting = await rest.order(FX, "BUY", 0.01, bid - 100_000)
        faults = await sim.set_faults(maintenance=True)
        assert faults["maintenance"] is True
        await ws.wait_for(lambda: ws.close_code is not None)
        assert ws.close_code == 1012 and ws.close_reason == "scheduled maintenance"
        assert (await rest.get("/v1/getboardstate", product_code=FX)).data["state"] == "CLOSED"
        r = await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET", "side": "BUY",
                                                       "size": 0.001})
        assert r.status == 400 and r.data == {"status": -204, "error_message": "Market state is closed.", "data": None}
        # nothing trades while closed: wait for the flow to take 10 more steps
        last, steps = sim.state()["last_execution_id"], sim.flow.steps
        while sim.flow.steps < steps + 10:
            await asyncio.sleep(0.05)
        assert sim.state()["last_execution_id"] == last
        assert [o["child_order_acceptance_id"] for o in sim.state()["accounts"]["demo-key-1"]["open_orders"]] == [resting]
        await sim.set_faults(maintenance=False)
        assert (await rest.get("/v1/getboardstate", product_code=FX)).data == {"health": "NORMAL", "state": "RUNNING"}
        assert (await rest.post("/v1/me/sendchildorder", {"product_code": FX, "child_order_type": "MARKET",
                                                          "side": "BUY", "size": 0.001})).status == 200
    finally:
        await ws.close()


async def test_natural_health_follows_the_order_rate(sim: SimServer, rest: WireClient) -> None:
    """Without a forced health, gethealth / getboardstate read the orders accepted in the last whole
    second against ``busy_order_rates`` (50 / 150 / 400 by default); a forced health wins."""
    now = [1000.5]
    sim.engine.clock = lambda: now[0]  # the engine's clock: every order below lands in one second
    bid = (await rest.get("/v1/getticker", product_code=FX)).data["best_bid"]
    for i in range(50):
        assert (await rest.order(FX, "BUY", 0.001, bid - 200_000 - i)).startswith("JRF")
    assert (await rest.get("/v1/gethealth")).data == {"status": "NORMAL"}  # the second is not over
    now[0] = 1001.2
    assert (await rest.get("/v1/gethealth")).data == {"status": "BUSY"}
    assert (await rest.get("/v1/getboardstate", product_code=FX)).data == {"health": "BUSY", "state": "RUNNING"}
    await sim.set_faults(health="NO ORDER")
    assert (await rest.get("/v1/gethealth")).data == {"status": "NO ORDER"}
    await sim.set_faults(health=None)
    for _ in range(150):  # the engine's counter directly: 150 in one second without 150 REST orders
        sim.engine.order_rate.hit(now[0])
    now[0] = 1002.0
    assert (await rest.get("/v1/gethealth")).data == {"status": "VERY BUSY"}
    for _ in range(400):
        sim.engine.order_rate.hit(now[0])
    now[0] = 1003.9
    assert (await rest.get("/v1/gethealth")).data == {"status": "SUPER BUSY"}
    now[0] = 1005.0  # a quiet second: back to NORMAL
    assert (await rest.get("/v1/gethealth")).data == {"status": "NORMAL"}
