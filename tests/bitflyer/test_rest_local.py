"""RestClient against a tiny local aiohttp server, for replies the simulator does not produce on
demand: -208 twice then OK, HTML and ASP.NET error bodies, 5xx on reads, dropped connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from bfsx.bitflyer import auth, errors, limits
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.rest import OrderNotPlaced, RestClient

KEY, SECRET = "local-key", "local-secret"


@dataclass
class Local:
    url: str
    hits: dict[str, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)
    routes: dict[str, Callable[[web.Request, int], web.StreamResponse]] = field(default_factory=dict)


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    state = Local(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        n = state.hits[path] = state.hits.get(path, 0) + 1
        if path.startswith("/v1/me/"):
            ok = auth.verify_rest(
                SECRET, request.headers.get("ACCESS-TIMESTAMP", ""), request.method,
                request.raw_path, body, request.headers.get("ACCESS-SIGN", ""),
            )
            if not ok or request.headers.get("ACCESS-KEY") != KEY:
                return web.json_response(errors.error_body(errors.INVALID_SIGNATURE), status=401)
            state.bodies.append(body)
        route = state.routes.get(path)
        if route is None:
            return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>",
                                content_type="text/html")
        return route(request, n)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def _overload_then_ok(request: web.Request, n: int) -> web.StreamResponse:
    hdr = limits.headers_for(limits.LimitReading(500 - n, 300, 2_000_000_000))
    hdr |= limits.headers_for(limits.LimitReading(300 - n, 300, 2_000_000_000), order=True)
    if n <= 2:
        return web.json_response(errors.error_body(errors.OVERLOAD), status=500, headers=hdr)
    return web.json_response({"child_order_acceptance_id": "JRF20240101-000000-000001"}, headers=hdr)


async def test_overload_208_is_retried_with_backoff(local: Local) -> None:
    local.routes["/v1/me/sendchildorder"] = _overload_then_ok
    budget = ApiBudget()
    async with RestClient(local.url, KEY, SECRET, budget=budget, retries=4, backoff=0.01) as rest:
        acc = await rest.send_child_order("FX_BTC_JPY", "BUY", 0.01, 5_000_000)
        assert acc == "JRF20240101-000000-000001"
        assert local.hits["/v1/me/sendchildorder"] == 3
        assert rest.retried == 2
    # Each attempt signed and sent the same body; three order requests were counted.
    assert len(set(local.bodies)) == 1
    assert orjson.loads(local.bodies[0]) == {
        "product_code": "FX_BTC_JPY", "child_order_type": "LIMIT", "side": "BUY", "size": 0.01,
        "price": 5_000_000, "time_in_force": "GTC",
    }
    assert budget.private_remaining == 497
    assert budget.order_remaining == 297
    assert budget.small_orders_last_minute == 3


async def test_overload_gives_up_after_max_attempts(local: Local) -> None:
    local.routes["/v1/me/sendchildorder"] = lambda r, n: web.json_response(
        errors.error_body(errors.OVERLOAD), status=500)
    async with RestClient(local.url, KEY, SECRET, retries=2, backoff=0.01) as rest:
        with pytest.raises(errors.OverloadError) as ei:
            await rest.send_child_order("FX_BTC_JPY", "SELL", 0.01)
    assert ei.value.status == -208 and ei.value.http_status == 500
    assert local.hits["/v1/me/sendchildorder"] == 2


async def test_reads_retry_on_5xx_but_posts_do_not(local: Local) -> None:
    def flaky(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=503, text="Service Unavailable")
        return web.json_response({"health": "NORMAL", "state": "RUNNING"})

    local.routes["/v1/getboardstate"] = flaky
    local.routes["/v1/me/cancelchildorder"] = lambda r, n: web.Response(status=502, text="bad gateway")
    async with RestClient(local.url, KEY, SECRET, backoff=0.01) as rest:
        assert await rest.get_board_state("FX_BTC_JPY") == {"health": "NORMAL", "state": "RUNNING"}
        assert local.hits["/v1/getboardstate"] == 2
        with pytest.raises(errors.ApiError) as ei:
            await rest.cancel_child_order("FX_BTC_JPY", acceptance_id="JRF20240101-000000-000001")
        assert ei.value.http_status == 502 and ei.value.message == "bad gateway"
        assert local.hits["/v1/me/cancelchildorder"] == 1


async def test_odd_error_bodies_become_clear_errors(local: Local) -> None:
    local.routes["/v1/getexecutions"] = lambda r, n: web.json_response(
        {"Message": "No HTTP resource was found that matches the request URI"}, status=404)
    local.routes["/v1/me/getcollateral"] = lambda r, n: web.json_response(
        errors.error_body(errors.OVER_LIMIT), status=429)
    budget = ApiBudget(pause_seconds=5)
    async with RestClient(local.url, KEY, SECRET, budget=budget, retries=1) as rest:
        with pytest.raises(errors.ApiError) as ei:
            await rest.get_executions("FX_BTC_JPY")
        assert ei.value.http_status == 404 and "No HTTP resource" in ei.value.message
        with pytest.raises(errors.ApiError) as ei:
            await rest.get_markets("nowhere")  # HTML 404 page
        assert ei.value.http_status == 404 and "404 Not Found" in ei.value.message
        assert "<" not in ei.value.message or len(ei.value.message) <= 200
        with pytest.raises(errors.RateLimitError):
            await rest.get_collateral()
    assert budget.paused()
    assert budget.advice() == "pause"
    assert budget.can_cancel()


async def test_private_call_without_key_is_a_clear_error(local: Local) -> None:
    async with RestClient(local.url) as rest:
        with pytest.raises(errors.AuthError, match="ACCESS-KEY"):
            await rest.get_balance()
    assert local.hits == {}


async def test_dropped_connection_is_a_transport_error_and_reads_retry(local: Local) -> None:
    def drop(request: web.Request, n: int) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()  # no reply at all
        return web.Response()

    local.routes["/v1/getticker"] = drop
    async with RestClient(local.url, retries=3, backoff=0.01) as rest:
        with pytest.raises(errors.TransportError):
            await rest.get_ticker("FX_BTC_JPY")
    # Three attempts of ours; aiohttp itself may retry an idempotent GET once on a dropped
    # keep-alive connection (it never does so for POST).
    assert 3 <= local.hits["/v1/getticker"] <= 6


async def test_dropped_order_post_is_never_resent(local: Local) -> None:
    def drop(request: web.Request, n: int) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    local.routes["/v1/me/sendchildorder"] = drop
    # The lookup finds no such order: not placed, and exactly one POST went out.
    local.routes["/v1/me/getchildorders"] = lambda r, n: web.json_response([])
    async with RestClient(local.url, KEY, SECRET, retries=3, backoff=0.01, lookup_polls=2,
                          lookup_interval=0.01) as rest:
        with pytest.raises(OrderNotPlaced):
            await rest.send_child_order("FX_BTC_JPY", "BUY", 0.01, 5_000_000)
    assert local.hits["/v1/me/sendchildorder"] == 1
    assert local.hits["/v1/me/getchildorders"] == 2


async def test_endpoint_with_v1_suffix_and_cancel_empty_body(local: Local) -> None:
    local.routes["/v1/me/cancelallchildorders"] = lambda r, n: web.Response(status=200)
    async with RestClient(local.url + "/v1/", KEY, SECRET) as rest:
        assert await rest.cancel_all_child_orders("FX_BTC_JPY") is None
    assert orjson.loads(local.bodies[0]) == {"product_code": "FX_BTC_JPY"}
    with pytest.raises(ValueError, match="exactly one"):
        await RestClient(local.url).cancel_child_order("FX_BTC_JPY")
