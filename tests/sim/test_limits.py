"""Rate limits (bitflyer-api.md §3): fixed windows, headers counting down, -1 on exhaustion,
the order bucket, and the small-order bucket with its penalty limit. Small limits keep it fast."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bfsx.bitflyer import limits
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireClient
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.fast(
        limits={
            "private": 8,
            "ip": 6,
            "orders": 4,
            "small_orders": 3,
            "small_penalty_orders": 1,
            "window_seconds": 300,
        }
    )


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        yield c


async def test_private_window_counts_down_then_minus_one(rest: WireClient) -> None:
    seen = []
    for _ in range(8):
        r = await rest.get("/v1/me/getbalance")
        assert r.status == 200
        reading = limits.read_private(r.headers)
        assert reading is not None and 0 < reading.period <= 300 and reading.reset > 1_700_000_000
        seen.append(reading.remaining)
    assert seen == [7, 6, 5, 4, 3, 2, 1, 0]
    r = await rest.get("/v1/me/getbalance")
    assert r.status == 429
    assert r.data == {"status": -1, "error_message": "Over API limit per period, per IP address", "data": None}
    assert limits.read_private(r.headers).remaining == 0  # type: ignore[union-attr]
    # the other key has its own bucket
    async with WireClient(rest.url, "demo-key-2", "demo-secret-2") as other:
        assert (await other.get("/v1/me/getbalance")).status == 200


async def test_public_calls_use_the_ip_bucket(rest: WireClient) -> None:
    remaining = [limits.read_private((await rest.get("/v1/gethealth")).headers).remaining for _ in range(6)]  # type: ignore[union-attr]
    assert remaining == [5, 4, 3, 2, 1, 0]
    r = await rest.get("/v1/getticker", product_code=FX)
    assert r.status == 429 and r.data["status"] == -1
    assert (await rest.get("/v1/me/getbalance")).status == 200  # private calls have their own bucket


async def test_order_bucket_headers_and_exhaustion(rest: WireClient) -> None:
    body = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": 5_000_000, "size": 0.2}
    got = []
    for _ in range(3):
        r = await rest.post("/v1/me/sendchildorder", body)
        assert r.status == 200
        got.append(limits.read_orders(r.headers).remaining)  # type: ignore[union-attr]
    r = await rest.post("/v1/me/cancelallchildorders", {"product_code": FX})  # counts in the order bucket
    assert r.status == 200 and limits.read_orders(r.headers).remaining == 0  # type: ignore[union-attr]
    assert got == [3, 2, 1]
    r = await rest.post("/v1/me/sendchildorder", body)
    assert r.status == 429 and r.data["status"] == -1
    # reads carry no order headers
    r = await rest.get("/v1/me/getchildorders", product_code=FX)
    assert r.status == 200 and limits.read_orders(r.headers) is None


async def test_small_orders_trip_the_penalty(sim: SimServer, rest: WireClient) -> None:
    body = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": 5_000_000, "size": 0.01}
    for _ in range(3):
        assert (await rest.post("/v1/me/sendchildorder", body)).status == 200
    r = await rest.post("/v1/me/sendchildorder", body)
    assert r.status == 429 and r.data["status"] == -1
    k = sim.limiter.key("demo-key-1")
    assert k.penalty_until > 0
    # in the penalty the limit is 1 per small window; after that window rolls, 1 passes and the 2nd fails
    k.small.start = k.orders.start = -1e9  # roll the windows without waiting
    assert (await rest.post("/v1/me/sendchildorder", body)).status == 200
    assert (await rest.post("/v1/me/sendchildorder", body)).status == 429


async def test_window_resets(sim: SimServer, rest: WireClient) -> None:
    for _ in range(8):
        await rest.get("/v1/me/getbalance")
    assert (await rest.get("/v1/me/getbalance")).status == 429
    sim.limiter.key("demo-key-1").private.start = -1e9  # as if 300 s had passed
    r = await rest.get("/v1/me/getbalance")
    assert r.status == 200 and limits.read_private(r.headers) == limits.LimitReading(
        7, 300, limits.read_private(r.headers).reset  # type: ignore[union-attr]
    )
