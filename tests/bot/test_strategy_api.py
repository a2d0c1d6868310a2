"""The Strategy API (README.md) through a running BotRuntime against the in-process simulator:
callbacks (plain and async) fire, orders return Order objects, local refusals are results, and
every state property reads local state."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from decimal import Decimal

import pytest

from bfsx.account.orders import Order, OrderState
from bfsx.bitflyer.states import HEALTH_LEVELS
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.runtime import BotRuntime
from bfsx.bot.strategy import Strategy
from bfsx.cli import UserError
from bfsx.config import StrategyConfig
from bfsx.market.candles import Candle
from bfsx.sim.server import SimServer

from .conftest import STRATEGIES, StartBot, wait_for

KEY = "demo-key-1"
ALL_DAY = StrategyConfig.model_validate({"no_trade": ["00:00-12:00", "12:00-24:00"]})


def exchange_net(sim: SimServer) -> float:
    return float(sim.state()["accounts"][KEY]["positions"]["FX_BTC_JPY"]["net"])


def orders_sent(rt: BotRuntime) -> int:
    """Order requests that went out (sendchildorder is counted in the order bucket)."""
    return rt.budget.orders.sent


async def test_every_callback_kind_fires_plain_and_async(start_bot: StartBot) -> None:
    s = load_strategy_class(STRATEGIES / "api_probe.py")()
    await start_bot(s, strategy_config=StrategyConfig(parameters={"lot": 0.01}))
    kinds = ["every_plain", "every_async", "every_aligned", "candles_plain", "candles_async",
             "executions_plain", "executions_async", "board_plain", "board_async"]
    calls = s.calls  # type: ignore[attr-defined]
    await wait_for(lambda: all(calls[k] > 0 for k in kinds), what=f"every callback kind ({dict(calls)})")
    assert calls["every_plain"] > 1 and calls["every_async"] > 1

    order = await s.buy(0.01)  # market
    assert isinstance(order, Order) and order.acceptance_id and order.acceptance_id.startswith("JRF")
    await wait_for(lambda: calls["fill_plain"] > 0 and calls["fill_async"] > 0, what="on_fill, plain and async")
    fills = s.fills  # type: ignore[attr-defined]
    assert sum(f.size for f in fills) == pytest.approx(0.01)
    assert all(f.acceptance_id == order.acceptance_id and f.side == "BUY" for f in fills)
    await wait_for(lambda: order.state is OrderState.FILLED, what="the market order FILLED")
    assert order.filled_size == pytest.approx(0.01)

    # Self-built 1 s candles: consecutive buckets, volumes split by taker side.
    candles: list[Candle] = s.last_candles  # type: ignore[attr-defined]
    assert candles and all(isinstance(c, Candle) for c in candles)
    assert all(b.time - a.time == 1 for a, b in itertools.pairwise(candles))
    assert all(c.low <= c.open <= c.high and c.volume == pytest.approx(c.buy_volume + c.sell_volume) for c in candles)
    assert len(s.candle_store.candles) <= 5  # type: ignore[attr-defined]


async def test_orders_and_state_properties(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s, strategy_config=StrategyConfig(parameters={"lot": 0.01, "name": "x"}))
    assert s.position == 0 and s.average_price == 0 and s.realized_profit == 0
    assert s.product == "FX_BTC_JPY" and s.parameters == {"lot": 0.01, "name": "x"}
    assert isinstance(s.log, logging.Logger) and s.log.name.endswith("testbot")
    await wait_for(lambda: s.ltp > 0, what="a first print")
    assert 0 < s.best_bid < s.mid_price < s.best_ask
    bids, asks = s.board.bids(3), s.board.asks(3)
    assert len(bids) == 3 and bids[0][0] == s.best_bid and bids[0][0] > bids[1][0] > bids[2][0]
    assert len(asks) == 3 and asks[0][0] == s.best_ask and asks[0][0] < asks[1][0]
    assert s.health in HEALTH_LEVELS
    assert 0 < s.api_remaining <= 500

    bought = await s.buy(0.02)
    await wait_for(lambda: s.position == pytest.approx(0.02), what="position 0.02")
    assert bought.state is OrderState.FILLED
    assert s.average_price == pytest.approx(bought.average_price)
    assert s.profit == pytest.approx(s.realized_profit + s.unrealized_profit)
    assert Decimal(repr(exchange_net(sim))) == rt.position.exact_size

    resting = await s.sell(0.01, round(s.best_ask + 50_000))
    assert resting.acceptance_id and resting.is_open
    assert resting in s.open_orders
    other = await s.buy(0.01, round(s.best_bid - 50_000))
    assert await s.cancel(resting.acceptance_id) is True  # by id
    await wait_for(lambda: resting.state is OrderState.CANCELLED, what="cancelled")
    assert s.open_orders == [other]
    assert await s.cancel_all() == 1
    await wait_for(lambda: not s.open_orders, what="cancel_all done")
    assert other.state is OrderState.CANCELLED

    closing = await s.close_position()
    assert closing is not None and closing.side == "SELL" and closing.size == pytest.approx(0.02)
    await wait_for(lambda: s.position == 0, what="flat")
    assert exchange_net(sim) == 0
    assert await s.close_position() is None  # already flat
    assert s.realized_profit != 0 or s.average_price == 0


async def test_local_refusals_are_results_not_exceptions(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s)
    await s.buy(0.01)
    await wait_for(lambda: s.position == pytest.approx(0.01), what="a long position")
    resting = await s.buy(0.01, round(s.best_bid - 50_000))
    sent = orders_sent(rt)

    def refused(order: Order, why: str) -> bool:
        return order.state is OrderState.REFUSED and why in order.reason and order.acceptance_id is None

    assert refused(await s.buy(0.0001), "below the minimum")
    assert refused(await s.buy(0.01, 0.0), "invalid price")  # a touch read before the book existed

    rt.strategy_config = StrategyConfig(close_position=True)  # close-only mode
    assert refused(await s.buy(0.01), "close-only")
    assert refused(await s.sell(0.02), "close-only")  # would turn the position short
    assert orders_sent(rt) == sent
    reducing = await s.sell(0.01)  # reduces: allowed
    assert reducing.acceptance_id
    await wait_for(lambda: s.position == 0, what="closed")

    rt.strategy_config = ALL_DAY  # inside a no-trade window
    assert refused(await s.sell(0.01, round(s.best_ask + 50_000)), "no-trade window")

    rt.strategy_config = StrategyConfig()
    rt.budget.reserve = 10_000  # below the reserve: no new order, cancels still go
    sent = orders_sent(rt)
    assert refused(await s.buy(0.01), "API budget")
    assert orders_sent(rt) == sent
    assert await s.cancel(resting) is True
    await wait_for(lambda: resting.state is OrderState.CANCELLED, what="cancel while below the reserve")


async def test_health_stop_refuses_orders(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s)
    await sim.set_faults(health="STOP")
    await wait_for(lambda: s.health == "STOP", what="health STOP polled")
    sent = orders_sent(rt)
    order = await s.buy(0.01)
    assert order.state is OrderState.REFUSED and "health" in order.reason
    assert orders_sent(rt) == sent
    await sim.set_faults(health=None)
    await wait_for(lambda: s.health == "NORMAL", what="health back")
    assert (await s.buy(0.01)).acceptance_id


async def test_over_limit_reply_pauses_new_orders_but_not_cancels(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    # One health poll at start only, so the injected errors cannot turn the health UNKNOWN first.
    rt = await start_bot(s, health_interval=30, over_limit_pause=60)
    resting = await s.buy(0.01, round(s.best_bid - 50_000))
    await sim.set_faults(http_error_rate=1.0, http_error_status=429)
    rejected = await s.buy(0.01)
    await sim.set_faults(http_error_rate=0.0)
    assert rejected.state is OrderState.FAILED and "-1" in rejected.reason
    assert rt.budget.paused()
    paused = await s.buy(0.01)
    assert paused.state is OrderState.REFUSED and "API budget" in paused.reason
    assert await s.cancel(resting) is True
    await wait_for(lambda: resting.state is OrderState.CANCELLED, what="cancel during the pause")


async def test_maintenance_closes_with_1012_then_reconnects_and_resyncs(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s)
    resting = await s.buy(0.01, round(s.best_bid - 50_000))
    await wait_for(lambda: resting.state is OrderState.ACTIVE, what="resting order ACTIVE")
    # Its CANCEL event is lost: only a resync can tell the bot.
    await sim.set_faults(drop_private_events=1.0)
    assert await s.cancel(resting)
    await wait_for(lambda: not sim.state()["accounts"][KEY]["open_orders"], what="cancelled on the exchange")
    await sim.set_faults(drop_private_events=0.0)
    assert resting.is_open
    connects = rt.realtime.connects
    await sim.set_faults(maintenance=True)
    await wait_for(lambda: rt.realtime.last_close_code == 1012, what="close code 1012")
    await wait_for(lambda: rt.health.state == "CLOSED", what="board CLOSED")
    during = await s.buy(0.01)
    assert during.state is OrderState.REFUSED
    await sim.set_faults(maintenance=False)
    await wait_for(lambda: rt.realtime.connects > connects and rt.realtime.connected.is_set(), what="reconnected")
    await wait_for(lambda: resting.state is OrderState.CANCELLED, what="the resync settles the cancelled order")
    await wait_for(lambda: rt.health.state == "RUNNING", what="board RUNNING")
    # After a reconnect the book is cleared: orders wait for its fresh snapshot (no order on unknown data)
    await wait_for(lambda: rt.feed.book.ready, what="a fresh book after the reconnect")
    assert (await s.buy(0.01)).acceptance_id


def test_load_strategy_class_errors_are_one_line(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "none.py").write_text("x = 1\n")
    (d / "broken.py").write_text("import bfsx\nclass MyStrategy(bfsx.Strategy):\n    def f(:\n")
    for name, text in (("missing.py", "not found"), ("none.py", "no class derived"), ("broken.py", "SyntaxError")):
        with pytest.raises(UserError) as e:
            load_strategy_class(d / name)
        assert text in str(e.value) and "\n" not in str(e.value)


async def test_status_line_every_interval_and_off_at_zero(start_bot: StartBot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s = Strategy()
    rt = await start_bot(s, status_interval=0.1)
    bought = await s.buy(0.01)
    await wait_for(lambda: s.position == 0.01, what="the market buy filled")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("status: ")]

    await wait_for(lambda: any("position +0.01 @ " in m for m in lines()), what="a status line with the fill")
    last = [m for m in lines() if "position +0.01 @ " in m][-1]
    assert f"@ {bought.average_price:,.0f} |" in last and "fills 1 |" in last and "open orders 0 |" in last
    assert "health NORMAL" in last and "API " in last and "profit today " in last
    rt.trade = rt.trade.model_copy(update={"status_interval": 0.0})  # as a live reload does
    await asyncio.sleep(0.3)  # a line already being written may still land
    count = len(lines())
    await asyncio.sleep(0.5)
    assert len(lines()) == count  # off


ABSURD = [
    (math.nan, None, "below the minimum"),
    (math.inf, None, "above the maximum"),
    (-math.inf, None, "below the minimum"),
    (-0.01, None, "below the minimum"),
    (1e12, None, "above the maximum"),  # a price passed as the size (BFS-X's price-first order)
    (1000.00000001, None, "above the maximum"),
    (0.01, math.nan, "invalid price"),
    (0.01, math.inf, "invalid price"),
    (0.01, -1.0, "invalid price"),
    ("0.01", None, "size must be a number"),
    (None, None, "size must be a number"),
    (True, None, "size must be a number"),
    (0.01, "5000000", "price must be a number"),
]


async def test_absurd_numbers_are_refused_locally_as_results(start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s)
    sent = orders_sent(rt)
    for size, price, why in ABSURD:
        for order in (await s.buy(size, price), await s.sell(size, price)):
            assert order.state is OrderState.REFUSED and why in order.reason, (size, price, order.reason)
            assert order.acceptance_id is None
    assert orders_sent(rt) == sent and rt.tracker.in_flight == 0 and rt.journal.open_intents() == []
    # int and Decimal sizes are numbers: accepted and sent
    assert (await s.buy(Decimal("0.01"))).acceptance_id
    assert orders_sent(rt) == sent + 1


async def test_pre_trade_risk_limits_refuse_as_results(sim: SimServer, start_bot: StartBot) -> None:
    """max_order_size, max_position (open orders count), price_band, max_orders_per_second and an
    unknown market: each refuses locally with its reason and nothing reaches the exchange."""
    s = Strategy()
    rt = await start_bot(s)
    sent = orders_sent(rt)

    def refused(order: Order, why: str) -> bool:
        return order.state is OrderState.REFUSED and why in order.reason and order.acceptance_id is None

    # BFS-X's price-first call ported unchanged: buy(price, size) asks for millions of BTC at 0.01 JPY.
    assert refused(await s.buy(s.best_bid, 0.01), "above the maximum")
    assert refused(await s.buy(5.0, 0.01), "max_order_size")  # the default (0.1 BTC) catches a smaller mistake
    assert refused(await s.sell(0.01, round(s.best_ask * 10)), "price_band")
    assert orders_sent(rt) == sent

    rt.strategy_config = StrategyConfig(max_order_size=0.05, max_position=0.03, price_band=0.05)
    assert refused(await s.buy(0.06, round(s.best_bid - 20_000)), "max_order_size 0.05")
    far_bid = round(s.best_bid * 0.97)
    first = await s.buy(0.02, far_bid)
    assert first.acceptance_id
    # 0.02 open + 0.02 more would be long 0.04 if both filled: over max_position 0.03
    assert refused(await s.buy(0.02, far_bid), "max_position 0.03")
    assert (await s.sell(0.02, round(s.best_ask * 1.03))).acceptance_id  # the other side does not grow it
    mid = s.mid_price
    assert refused(await s.sell(0.01, round(mid * 1.06)), "price_band 0.05")
    assert refused(await s.buy(0.01, round(mid * 0.94)), "price_band 0.05")

    rt.strategy_config = StrategyConfig(max_orders_per_second=2)
    await s.cancel_all()
    await asyncio.sleep(1.0)  # the orders above leave the one-second window
    results = [await s.sell(0.01, round(s.best_ask * 1.02)) for _ in range(3)]
    assert [bool(o.acceptance_id) for o in results] == [True, True, False]
    assert refused(results[2], "max_orders_per_second 2")

    rt.feed.book.clear()  # as after a reconnect, before the fresh snapshot
    sent = orders_sent(rt)
    assert refused(await s.buy(0.01), "market price unknown")  # a market order too
    assert orders_sent(rt) == sent
    await s.cancel_all()
