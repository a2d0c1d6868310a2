"""Rate limits (docs/bitflyer.md#rate-limits): fixed windows, headers counting down, -1 on
exhaustion, the order bucket, and the small-order bucket with its penalty limit; ``limits_refused``
of /_sim/state counts every -1 per key and bucket. Small limits keep it fast."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bfsx.bitflyer import limits
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks, WireClient, WireReply
from bfsx.sim.ratelimit import RefusalCounts
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


# ---------------------------------------------------------------------- limits_refused in /_sim/state
OVER_LIMIT_BODY = {"status": -1, "error_message": "Over API limit per period, per IP address", "data": None}
ZEROS = {"private": 0, "orders": 0, "small_orders": 0, "ip": 0}


def _refused_bucket(r: WireReply, public: bool) -> str | None:
    """Which bucket refused this reply (None: it was served), read from the reply itself.

    A public call can only be refused by the IP bucket. A private call refused before the order
    bucket carries no ``X-OrderRequest-*`` headers; one refused by the order bucket reads 0 left
    there; one refused by the small-order bucket passed the order bucket, so it reads more than 0
    (the plans below keep small-order refusals away from the last order slot).
    """
    if r.status == 200:
        return None
    assert r.status == 429 and r.data == OVER_LIMIT_BODY, r.text
    if public:
        return "ip"
    orders = limits.read_orders(r.headers)
    if orders is None:
        return "private"
    return "orders" if orders.remaining == 0 else "small_orders"


class _Tally:
    """-1 answers seen by the client, per ``limits_refused`` entry and bucket."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, int]] = {}

    async def send(self, who: str, coro: Awaitable[WireReply], public: bool = False) -> WireReply:
        r = await coro
        bucket = _refused_bucket(r, public)
        if bucket is not None:
            row = self.seen.setdefault(who, dict(ZEROS))
            row[bucket] += 1
        return r


async def test_limits_refused_counts_each_minus_one_per_bucket() -> None:
    cfg = SimConfig.fast(
        limits={"private": 40, "orders": 12, "small_orders": 3, "small_penalty_orders": 1, "ip": 5}
    )
    small = {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "price": 5_000_000, "size": 0.01}
    large = {**small, "size": 0.2}
    tally = _Tally()
    async with (
        SimServer(cfg) as sim,
        WireClient(sim.url, "demo-key-1", "demo-secret-1") as k1,
        WireClient(sim.url) as anon,
        WireClient(sim.url, "no-such-key", "x") as stranger,
    ):
        fresh = sim.state()["limits_refused"]
        assert fresh == {"demo-key-1": ZEROS, "demo-key-2": ZEROS}  # every configured key, all zeros
        # small-order bucket: 3 pass, the next 2 are refused (order calls 4 and 5 of 12)
        for _ in range(5):
            await tally.send("demo-key-1", k1.post("/v1/me/sendchildorder", small))
        # order bucket: 7 more pass (12 in all), then 3 large and 1 small are refused by it
        for body in [large] * 10 + [small]:
            await tally.send("demo-key-1", k1.post("/v1/me/sendchildorder", body))
        # private bucket: 16 calls so far, 24 more pass, then 3 reads and 1 order are refused by it
        for _ in range(27):
            await tally.send("demo-key-1", k1.get("/v1/me/getbalance"))
        await tally.send("demo-key-1", k1.post("/v1/me/sendchildorder", large))
        # IP bucket (5): unsigned calls are counted for the address, calls naming a configured key
        # for that key, calls naming an unknown key for the address again
        for _ in range(7):
            await tally.send("_ip:127.0.0.1", anon.get("/v1/gethealth"), public=True)
        for _ in range(3):
            await tally.send("demo-key-1", k1.call("GET", "/v1/getticker", {"product_code": FX}, sign=True), public=True)
        await tally.send("_ip:127.0.0.1", stranger.call("GET", "/v1/gethealth", sign=True), public=True)

        assert tally.seen == {
            "demo-key-1": {"private": 4, "orders": 4, "small_orders": 2, "ip": 3},
            "_ip:127.0.0.1": {"private": 0, "orders": 0, "small_orders": 0, "ip": 3},
        }
        expected = {"demo-key-2": ZEROS, **tally.seen}
        assert sim.state()["limits_refused"] == expected
        over_http = await SimHooks(sim.url).fetch_state()
        assert over_http["limits_refused"] == expected

        # a window roll gives the budget back but keeps the counts
        k = sim.limiter.key("demo-key-1")
        k.private.start = k.orders.start = -1e9
        sim.limiter.ip("127.0.0.1").start = -1e9
        assert (await k1.get("/v1/me/getbalance")).status == 200
        assert (await anon.get("/v1/gethealth")).status == 200
        assert (await SimHooks(sim.url).fetch_state())["limits_refused"] == expected


async def test_limits_refused_from_a_real_sim_process(tmp_path: Path) -> None:
    """The same counts from ``bfsx sim`` as a separate process, over its HTTP hooks."""
    path = tmp_path / "sim.yaml"
    path.write_text("limits: {private: 2, ip: 1}\n")
    sp = _start_sim_process()("--config", str(path))
    try:
        assert (await sp.fetch_state())["limits_refused"] == {"demo-key-1": ZEROS, "demo-key-2": ZEROS}
        async with WireClient(sp.url, "demo-key-2", "demo-secret-2") as k2, WireClient(sp.url) as anon:
            got = [(await k2.get("/v1/me/getbalance")).status for _ in range(5)]
            # the readiness probe of start_sim_process already used the one public call
            got_public = [(await anon.get("/v1/getboardstate")).status for _ in range(2)]
        assert got == [200, 200, 429, 429, 429] and got_public == [429, 429]
        refused = (await sp.fetch_state())["limits_refused"]
        assert refused == {
            "demo-key-1": ZEROS,
            "demo-key-2": {**ZEROS, "private": 3},
            "_ip:127.0.0.1": {**ZEROS, "ip": 2},
        }
    finally:
        assert sp.stop() == 0


def test_refusal_counts_bound_anonymous_entries() -> None:
    counts = RefusalCounts(["k"], max_anonymous=2)
    for addr in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1"):
        counts.add_anonymous(addr)
    assert counts.as_dict() == {
        "k": ZEROS,
        "_ip:10.0.0.1": {**ZEROS, "ip": 2},
        "_ip:10.0.0.2": {**ZEROS, "ip": 1},
        "_ip:other": {**ZEROS, "ip": 2},
    }
    assert "k" in counts and "_ip:10.0.0.3" not in counts and counts.count("_ip:other", "ip") == 2


def _start_sim_process() -> Callable[..., Any]:
    # tests/conftest.py is not importable as a module under --import-mode=importlib: load it by path
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bfsx_root_conftest", Path(__file__).parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn: Callable[..., Any] = mod.start_sim_process
    return fn
