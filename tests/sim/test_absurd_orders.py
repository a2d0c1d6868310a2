"""Absurd order sizes and prices over real HTTP: a clean 400 with bitFlyer's error body, never a 500,
and the account exactly as it was (no order row, no event, no small-order budget used)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bfsx.bitflyer import errors
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.products import product_spec
from bfsx.sim.hooks import SimHooks, WireClient
from bfsx.sim.model import EngineError, parse_price, parse_size
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
SPOT = "BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"
INVALID = errors.error_body(errors.INVALID_PARAMETER)  # -101 Invalid parameter
PRICE_LOW = errors.error_body(errors.PRICE_TOO_LOW)  # -106
MIN_SIZE = errors.error_body(errors.MIN_SIZE, min_size="0.001")  # -110

# (size, expected body). WireClient sends Python's json.dumps text: NaN / Infinity go out as those
# bare literals (not JSON), 10**30 as a 31-digit integer, 1e300 as "1e+300".
SIZES: list[tuple[Any, dict[str, Any]]] = [
    (1e12, INVALID),
    (1e300, INVALID),
    (1.7e308, INVALID),
    (-1.7e308, INVALID),
    (2**64 - 1, INVALID),  # the largest integer a JSON parser keeps as an integer
    (10**30, INVALID),
    (1000.00000001, INVALID),  # just over max_order_size (1000)
    (math.nan, INVALID),
    (math.inf, INVALID),
    (-math.inf, INVALID),
    ("inf", INVALID),
    ("Infinity", INVALID),
    ("NaN", INVALID),
    ("1e999", INVALID),
    ("0.01", INVALID),  # a numeric string is still not a number
    ("lots", INVALID),
    (True, INVALID),
    (False, INVALID),
    (None, INVALID),
    ([0.01], INVALID),
    ({"size": 0.01}, INVALID),
    (0, INVALID),
    (0.0, INVALID),
    (-0.0, INVALID),
    (-0.01, INVALID),
    (-1, INVALID),
    (0.123456789, INVALID),  # 9 decimals; sizes have 8
    (0.00100000001, INVALID),
    (1e-9, INVALID),
    (5e-324, INVALID),  # the smallest float
    (0.0001, MIN_SIZE),  # a plain size below the minimum keeps its -110
]

# (LIMIT price, expected body); the size is a valid 0.01
PRICES: list[tuple[Any, dict[str, Any]]] = [
    (1e300, INVALID),
    (1.7e308, INVALID),
    (10**30, INVALID),
    (2**64 - 1, INVALID),
    (1e10 + 1, INVALID),  # just over max_order_price
    (math.nan, INVALID),
    (math.inf, INVALID),
    (-math.inf, INVALID),
    ("5000000", INVALID),
    ("Infinity", INVALID),
    (True, INVALID),
    (None, INVALID),
    ([5_000_000], INVALID),
    (5e-324, INVALID),  # positive, but off the 1 JPY tick
    (5_000_000.5, INVALID),
    (0, PRICE_LOW),
    (0.0, PRICE_LOW),
    (-1, PRICE_LOW),
    (-1.7e308, PRICE_LOW),
]


def _ids(cases: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    return [f"{v!r:.24}" for v, _ in cases]


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[WireClient]:
    async with WireClient(sim.url, KEY, SECRET) as c:
        yield c


def _bodies_for_size(size: Any) -> list[dict[str, Any]]:
    """The size on both products, as LIMIT (resting, far from the market) and MARKET, both sides."""
    out: list[dict[str, Any]] = []
    for product in (FX, SPOT):
        for side in ("BUY", "SELL"):
            out.append({"product_code": product, "child_order_type": "MARKET", "side": side, "size": size})
            price = 5_000_000 if side == "BUY" else 20_000_000
            out.append({"product_code": product, "child_order_type": "LIMIT", "side": side, "size": size, "price": price})
    return out


def _bodies_for_price(price: Any) -> list[dict[str, Any]]:
    return [
        {"product_code": product, "child_order_type": "LIMIT", "side": side, "size": 0.01, "price": price}
        for product in (FX, SPOT)
        for side in ("BUY", "SELL")
    ]


def _account(state: dict[str, Any]) -> dict[str, Any]:
    acct = state["accounts"][KEY]
    return {k: acct[k] for k in ("balances", "collateral", "positions", "open_orders", "executions")}


async def _assert_all_refused(url: str, bodies: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    """Send every body; each must be a 400 with exactly ``expected``; then nothing may have changed."""
    hooks = SimHooks(url)
    before = await hooks.fetch_state()
    async with WireClient(url, KEY, SECRET) as rest:
        for body in bodies:
            r = await rest.post("/v1/me/sendchildorder", body)
            assert (r.status, r.data) == (400, expected), f"{body}: HTTP {r.status} {r.text[:200]}"
        # an accepted order would be placed right after its reply: a later request sees it
        for product in (FX, SPOT):
            assert (await rest.get("/v1/me/getchildorders", product_code=product)).data == []
            assert (await rest.get("/v1/me/getexecutions", product_code=product)).data == []
            # the book still serialises (a resting spot SELL at 1e30 once made getboard a 500)
            assert (await rest.get("/v1/getboard", product_code=product)).status == 200
    after = await hooks.fetch_state()
    assert _account(after) == _account(before)
    assert _account(after)["open_orders"] == [] and after["limits_refused"][KEY] == before["limits_refused"][KEY]


@pytest.mark.parametrize(("size", "expected"), SIZES, ids=_ids(SIZES))
async def test_absurd_size_is_a_400_and_changes_nothing(
    sim: SimServer, size: Any, expected: dict[str, Any]
) -> None:
    await _assert_all_refused(sim.url, _bodies_for_size(size), expected)
    # a refused body is not an order: the small-order bucket did not count it
    assert sim.limiter.key(KEY).small.count == 0


@pytest.mark.parametrize(("price", "expected"), PRICES, ids=_ids(PRICES))
async def test_absurd_price_is_a_400_and_changes_nothing(
    sim: SimServer, price: Any, expected: dict[str, Any]
) -> None:
    await _assert_all_refused(sim.url, _bodies_for_price(price), expected)
    assert sim.limiter.key(KEY).small.count == 0


async def test_absurd_orders_against_a_sim_process(sim_process: Any) -> None:
    """The same answers from ``bfsx sim`` as its own process, and nothing on its stderr (one body
    per case: the process has the default 300-per-window order bucket for all of them)."""
    for size, expected in SIZES:
        await _assert_all_refused(sim_process.url, _bodies_for_size(size)[1:2], expected)
    for price, expected in PRICES:
        await _assert_all_refused(sim_process.url, _bodies_for_price(price)[:1], expected)
    assert "Traceback" not in sim_process.stderr() and "Error" not in sim_process.stderr()


async def test_sizes_and_prices_at_the_bounds_are_accepted(sim: SimServer, rest: WireClient) -> None:
    """The largest size and price pass validation (then fail on margin, as an event)."""
    ok = [
        {"product_code": FX, "child_order_type": "LIMIT", "side": "BUY", "size": 1000, "price": 5_000_000},
        {"product_code": FX, "child_order_type": "LIMIT", "side": "SELL", "size": 0.01, "price": 10_000_000_000},
        {"product_code": SPOT, "child_order_type": "MARKET", "side": "BUY", "size": 999.99999999},
    ]
    for body in ok:
        r = await rest.post("/v1/me/sendchildorder", body)
        assert r.status == 200, r.text
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX)).data
    assert {(row["size"], row["price"]) for row in rows} == {(1000.0, 5_000_000.0), (0.01, 10_000_000_000.0)}
    assert (await rest.get("/v1/getboard", product_code=FX)).status == 200


async def test_float_noise_in_a_size_is_rounded_not_refused(rest: WireClient) -> None:
    """0.1 + 0.2 sent as 0.30000000000000004 is 0.3, not a size with 17 decimals."""
    acc = await rest.order(FX, "BUY", 0.1 + 0.2, 5_000_000)
    rows = (await rest.get("/v1/me/getchildorders", product_code=FX, child_order_acceptance_id=acc)).data
    assert [row["size"] for row in rows] == [0.3]


@pytest.mark.parametrize(
    "raw", [math.nan, math.inf, -math.inf, 10**400, -(10**400), 1e308, True, "1", None, 0.123456789]
)
def test_parse_size_and_price_never_raise_anything_but_engine_errors(raw: Any) -> None:
    """Values JSON cannot carry (NaN, 400-digit integers) for in-process callers of the engine."""
    spec = product_spec(FX)
    for parse in (lambda: parse_size(raw, spec, 1000.0), lambda: parse_price(raw, 1e10)):
        with pytest.raises(EngineError) as ei:
            parse()
        code: ErrorCode = ei.value.code
        assert code.http == 400 and code.status in (-101, -106)
