"""RestClient against the real simulator (in-process ``SimServer`` over loopback sockets)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from bfsx.bitflyer import errors, ids, limits
from bfsx.bitflyer.budget import ApiBudget
from bfsx.bitflyer.messages import CollateralChange
from bfsx.bitflyer.rest import OrderUnknown, RestClient, paged
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks
from bfsx.sim.hooks import eventually as wait_until
from bfsx.sim.server import SimServer

FX, SPOT = "FX_BTC_JPY", "BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"




def open_orders(sim: SimServer, key: str = KEY) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = sim.state()["accounts"][key]["open_orders"]
    return rows


async def far_bid(rest: RestClient) -> int:
    """A price far below the market: the order rests, never fills."""
    t = await rest.get_ticker(FX)
    return int(t["best_bid"] * 0.8)


async def test_every_method_returns_the_right_shape(sim: SimServer) -> None:
    async with RestClient(sim.url, KEY, SECRET) as rest:
        markets = await rest.get_markets()
        assert {m["product_code"] for m in markets} == {FX, SPOT}
        assert all(isinstance(m["market_type"], str) for m in markets)
        assert isinstance(await rest.get_markets("usa"), list)
        board = await rest.get_board(FX)
        assert board["mid_price"] > 0 and board["bids"] and board["asks"]
        assert board["bids"][0]["price"] < board["asks"][0]["price"]
        assert set(board["bids"][0]) == {"price", "size"}
        ticker = await rest.get_ticker(FX)
        assert ticker["product_code"] == FX and ticker["best_bid"] < ticker["best_ask"] and ticker["ltp"] > 0
        execs = await rest.get_executions(FX, count=3)
        while len(execs) < 3:  # a fresh market: let it trade a little
            await asyncio.sleep(0.1)
            execs = await rest.get_executions(FX, count=3)
        assert execs[0]["id"] > execs[-1]["id"]  # newest first
        assert set(execs[0]) >= {"id", "side", "price", "size", "exec_date",
                                  "buy_child_order_acceptance_id", "sell_child_order_acceptance_id"}
        older = await rest.get_executions(FX, count=3, before=execs[0]["id"])
        assert all(e["id"] < execs[0]["id"] for e in older)
        state = await rest.get_board_state(FX)
        assert state["state"] == "RUNNING" and state["health"] == "NORMAL"
        assert (await rest.get_health(FX))["status"] == "NORMAL"

        perms = await rest.get_permissions()
        assert "/v1/me/sendchildorder" in perms and all(isinstance(p, str) for p in perms)
        bal = {b["currency_code"]: b for b in await rest.get_balance()}
        assert bal["JPY"]["amount"] == 10_000_000 and bal["BTC"]["amount"] == 1
        coll = await rest.get_collateral()
        assert set(coll) >= {"collateral", "open_position_pnl", "require_collateral", "keep_rate"}
        assert await rest.get_positions(FX) == []
        assert await rest.net_position(FX) == Decimal(0)
        assert await rest.net_position(SPOT) == Decimal(1)
        assert "commission_rate" in await rest.get_trading_commission(SPOT)

        price = await far_bid(rest)
        acc = await rest.send_child_order(FX, "BUY", 0.01, price, minute_to_expire=10)
        assert ids.ACCEPTANCE_RE.match(acc)
        rows = await wait_until(lambda: [o for o in open_orders(sim) if o["child_order_acceptance_id"] == acc])
        assert rows[0]["price"] == price
        mine = await rest.get_child_orders(FX, acceptance_id=acc)
        assert len(mine) == 1 and mine[0]["child_order_state"] == "ACTIVE"
        assert mine[0]["side"] == "BUY" and mine[0]["size"] == 0.01 and ids.CHILD_ORDER_RE.match(mine[0]["child_order_id"])
        assert [o["child_order_acceptance_id"] for o in await rest.get_child_orders(FX, state="ACTIVE")] == [acc]
        assert await rest.cancel_child_order(FX, acceptance_id=acc) is None
        await wait_until(lambda: not open_orders(sim))

        # A market order opens a position: getpositions, net_position, private executions agree.
        acc2 = await rest.send_child_order(FX, "SELL", 0.03)
        net = await wait_until(lambda: sim.state()["accounts"][KEY]["positions"][FX]["net"])
        assert await rest.net_position(FX) == Decimal(repr(net)) == Decimal("-0.03")
        lots = await rest.get_positions(FX)
        assert lots and all(lot["side"] == "SELL" for lot in lots)
        fills = await rest.get_my_executions(FX, acceptance_id=acc2)
        assert fills and sum(Decimal(repr(f["size"])) for f in fills) == Decimal("0.03")
        assert set(fills[0]) >= {"id", "child_order_id", "side", "price", "size", "commission", "exec_date",
                                 "child_order_acceptance_id"}

        await rest.send_child_order(FX, "BUY", 0.01, await far_bid(rest))
        await wait_until(lambda: open_orders(sim))
        await rest.cancel_all_child_orders(FX)
        await wait_until(lambda: not open_orders(sim))


async def test_collateral_history_is_typed_and_pages_like_the_other_lists(sim: SimServer) -> None:
    hooks = SimHooks(sim.url)
    for amount in (9_000_000, 9_500_000, 8_000_000):  # a withdrawal, a deposit, a withdrawal
        await hooks.set_account(KEY, amount)
    async with RestClient(sim.url, KEY, SECRET) as rest:
        rows = await rest.get_collateral_history()
        assert [(r["reason_code"], r["change"], r["amount"]) for r in rows] == [
            ("WITHDRAWAL", -1_500_000, 8_000_000), ("DEPOSIT", 500_000, 9_500_000),
            ("WITHDRAWAL", -1_000_000, 9_000_000), ("DEPOSIT", 10_000_000, 10_000_000)]
        assert all(r["currency_code"] == "JPY" and r["date"] for r in rows)
        assert sum(r["change"] for r in rows) == (await rest.get_collateral())["collateral"]

        async def fetch(before: int | None) -> list[CollateralChange]:
            return await rest.get_collateral_history(count=3, before=before)

        pages = [page async for page in paged(fetch, count=3, max_pages=5)]
        assert [len(p) for p in pages] == [3, 1] and [r for p in pages for r in p] == rows
        assert await rest.get_collateral_history(after=rows[1]["id"]) == rows[:1]


async def test_rate_limit_headers_count_down_in_the_budget(sim: SimServer) -> None:
    budget = ApiBudget()
    async with RestClient(sim.url, KEY, SECRET, budget=budget) as rest:
        await rest.get_balance()
        assert budget.private.reading_at > 0  # a header reading, not a local guess
        assert budget.private_remaining == limits.PRIVATE_LIMIT - 1
        await asyncio.gather(*(rest.get_collateral() for _ in range(4)))
        assert budget.private_remaining == limits.PRIVATE_LIMIT - 5
        assert budget.order_remaining == limits.ORDER_LIMIT
        price = await far_bid(rest)
        await rest.send_child_order(FX, "BUY", 0.01, price)
        assert budget.orders.reading_at > 0
        assert budget.order_remaining == limits.ORDER_LIMIT - 1
        assert budget.private_remaining == limits.PRIVATE_LIMIT - 6
        assert budget.small_orders_last_minute == 1
        await rest.get_board(FX)  # public: the key's bucket does not move
        assert budget.private_remaining == limits.PRIVATE_LIMIT - 6
        reset = budget.snapshot().private_reset
        assert time.time() < reset <= time.time() + limits.WINDOW_SECONDS + 1


async def test_over_limit_pauses_the_budget() -> None:
    async with SimServer(SimConfig.fast(limits={"private": 4})) as sim:
        budget = ApiBudget(reserve=1, pause_seconds=30)
        async with RestClient(sim.url, KEY, SECRET, budget=budget) as rest:
            for left in (3, 2, 1, 0):
                await rest.get_balance()
                assert budget.private_remaining == left
            assert not budget.can_order(1.0)
            with pytest.raises(errors.RateLimitError) as ei:
                await rest.get_balance()
            assert ei.value.status == -1
            assert budget.paused() and budget.over_limit_count == 1
            assert budget.advice() == "pause"


async def test_overload_208_is_retried_until_accepted_once(sim: SimServer) -> None:
    async with RestClient(sim.url, KEY, SECRET, retries=12, backoff=0.005, backoff_max=0.02) as rest:
        price = await far_bid(rest)
        await sim.set_faults(http_error_rate=0.6)  # http_error_status 500 -> -208 bodies
        accepted = [await rest.send_child_order(FX, "BUY", 0.01, price - i) for i in range(5)]
        await sim.set_faults(http_error_rate=0.0)
        assert rest.retried > 0
        await wait_until(lambda: len(open_orders(sim)) == 5)
        # Each order is on the book exactly once: a -208 was "not accepted", so retrying is safe.
        assert sorted(o["child_order_acceptance_id"] for o in open_orders(sim)) == sorted(accepted)
        await sim.set_faults(http_error_rate=1.0)
        with pytest.raises(errors.OverloadError):
            await rest.send_child_order(FX, "BUY", 0.01, price)
        await sim.set_faults(http_error_rate=0.0)
        assert len(open_orders(sim)) == 5


async def test_timed_out_order_is_resolved_by_lookup(sim: SimServer) -> None:
    async with RestClient(sim.url, KEY, SECRET, timeout=0.3, lookup_timeout=5.0,
                          lookup_interval=0.1, lookup_polls=5) as rest:
        price = await far_bid(rest)
        # An identical order placed just before, with a normal reply: it must not be mistaken for
        # the lost one (this client returned its id already).
        first = await rest.send_child_order(FX, "BUY", 0.01, price)
        await sim.set_faults(latency_ms=1000)  # longer than the client timeout; the sim still accepts
        sent_posts = rest.requests
        lost = await rest.send_child_order(FX, "BUY", 0.01, price)
        await sim.set_faults(latency_ms=0)
        assert rest.lookups >= 1
        # The lookups were GETs; the order was POSTed once.
        assert rest.requests - sent_posts == 1 + rest.lookups
        assert lost != first
        rows = await wait_until(lambda: len(open_orders(sim)) == 2 and open_orders(sim))
        assert sorted(o["child_order_acceptance_id"] for o in rows) == sorted([first, lost])
        # A caller's own known ids are excluded too: a third order whose reply is lost, with the
        # caller declaring `lost` as known (while `first` is known to the client).
        fresh = RestClient(sim.url, KEY, SECRET, timeout=0.3, lookup_timeout=5.0, lookup_interval=0.1,
                           lookup_polls=3)
        async with fresh:
            await sim.set_faults(latency_ms=1000)
            with pytest.raises(OrderUnknown) as ei:  # `first` and the new one both match
                await fresh.send_child_order(FX, "BUY", 0.01, price, known_ids={lost})
            await sim.set_faults(latency_ms=0)
        assert first in ei.value.candidates and lost not in ei.value.candidates
        assert len(ei.value.candidates) == 2


async def test_lost_order_with_failing_lookups_is_unknown(sim: SimServer) -> None:
    async with RestClient(sim.url, KEY, SECRET, timeout=0.2, lookup_timeout=0.2, lookup_interval=0.01,
                          lookup_polls=2, retries=1) as rest:
        price = await far_bid(rest)
        await sim.set_faults(latency_ms=600)
        with pytest.raises(OrderUnknown, match="lookups failed"):
            await rest.send_child_order(FX, "BUY", 0.01, price)
        await sim.set_faults(latency_ms=0)


async def test_typed_errors(sim: SimServer) -> None:
    async with RestClient(sim.url, KEY, SECRET) as rest:
        with pytest.raises(errors.OrderRejected) as ei:
            await rest.send_child_order(FX, "BUY", 0.0001, 1_000_000)
        assert ei.value.status == -110 and "minimum order size" in ei.value.message
        with pytest.raises(errors.ApiError) as ei2:
            await rest.get_board("NOPE_JPY")
        assert ei2.value.status == -100
    async with RestClient(sim.url, KEY, "wrong-secret") as bad:
        with pytest.raises(errors.AuthError) as ei3:
            await bad.get_balance()
        assert ei3.value.status == -500 and ei3.value.http_status == 401
        assert "Invalid signature" in str(ei3.value)
        assert "wrong-secret" not in str(ei3.value)
    assert open_orders(sim) == []
