"""Invariant 2 (each fill counted exactly once) through the whole runtime, in-process.

1,000 random orders with 20 % of the private events dropped, then a forced reconnect → resync:
the bot's self position equals the exchange's and its fills are exactly the account's fills.
Events that beat the HTTP reply (``latency_ms``): parked, applied once.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest

from bfsx.account.orders import Order, OrderState
from bfsx.bitflyer.rest import RestClient
from bfsx.bot import resync
from bfsx.bot.runtime import BotRuntime
from bfsx.bot.strategy import Strategy
from bfsx.config import StrategyConfig
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

from .conftest import StartBot, wait_for

KEY, SECRET = "stress-key", "stress-secret"
TAKER, TAKER_SECRET = "taker-key", "taker-secret"


@pytest.fixture
def sim_config() -> SimConfig:
    # A fresh account nobody else trades, with room for 1,000 orders (limits are not the subject).
    return SimConfig.fast(
        accounts=[{"api_key": KEY, "api_secret": SECRET, "jpy": 10_000_000_000},
                  {"api_key": TAKER, "api_secret": TAKER_SECRET, "jpy": 10_000_000_000}],
        limits={"private": 1_000_000, "orders": 1_000_000, "small_orders": 1_000_000},
        account_history=50_000,
    )


def exchange_fills(sim: SimServer) -> dict[int, float]:
    """exec id -> signed size of every fill of the account, from the simulator's own records."""
    return {f.exec_id: (f.size if f.side > 0 else -f.size) / 1e8 for f in sim.engine.accounts[KEY].fills}


def exchange_net(sim: SimServer) -> Decimal:
    return Decimal(repr(sim.state()["accounts"][KEY]["positions"]["FX_BTC_JPY"]["net"]))


def journal_exec_ids(rt: BotRuntime) -> list[int]:
    fills, _, _ = rt.journal.load()
    return [f.exec_id for f in fills]


# These tests are about lost and early events, not the pre-trade limits: orders of up to 0.3 BTC,
# positions of a few BTC with hundreds of resting orders and bursts of ten orders at once must pass.
NO_RISK_LIMITS = StrategyConfig(max_order_size=1, max_position=10_000, max_orders_per_second=1000)


async def random_order(s: Strategy, rng: random.Random) -> Order:
    bid, ask = s.best_bid, s.best_ask
    # Sizes above 0.1 BTC: the small-order limit (100 / min) is not what this test is about.
    size = round(rng.uniform(0.11, 0.3), 2)
    # Lean against the position so it stays within a few BTC.
    side = "BUY" if rng.random() < 0.5 - max(-0.4, min(0.4, s.position / 10)) else "SELL"
    kind = rng.random()
    price: float | None
    if kind < 0.15:
        price = None  # market
    elif kind < 0.45:
        price = round(ask + 100) if side == "BUY" else round(bid - 100)  # marketable limit
    else:
        # Resting, filled later by the synthetic takers or cancelled; far enough from the touch that
        # the bot's own takers rarely reach them (the exchange refuses a self trade).
        gap = rng.randint(1000, 4000)
        price = round(bid - gap) if side == "BUY" else round(ask + gap)
    return await (s.buy(size, price) if side == "BUY" else s.sell(size, price))


async def test_1000_random_orders_with_20pct_of_events_dropped_then_resync(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s, apikey=KEY, secret=SECRET, strategy_config=NO_RISK_LIMITS)
    await sim.set_faults(drop_private_events=0.2)
    rng = random.Random(2024)
    orders: list[Order] = []
    cancels = 0
    while len(orders) < 1000:
        # Ten at a time, concurrently: replies and events of several orders interleave.
        orders += await asyncio.gather(*(random_order(s, rng) for _ in range(10)))
        # Cancels: a few at random, and the resting orders the market came close to (the exchange
        # would refuse the bot's next taker order as a self trade against them).
        near = [o for o in s.open_orders if o.price and abs(o.price - s.mid_price) < 1000]
        picked = {id(o): o for o in [*near, *rng.sample(s.open_orders, min(3, len(s.open_orders)))]}
        for o in picked.values():
            cancels += await s.cancel(o)
    accepted = [o for o in orders if o.acceptance_id]
    # The exchange refuses the orders that would trade with the bot's own resting ones: fine.
    assert len(accepted) > 800
    assert {o.reason for o in orders if not o.acceptance_id} <= {"-159: You cannot place an order as it is the Self Trade."}
    assert cancels > 100
    assert sim.state()["events_dropped"] > 200  # the fault really bit

    await sim.set_faults(drop_private_events=0.0)
    await s.cancel_all()  # every order the bot may still think open (some were cancelled unseen)
    await wait_for(lambda: not sim.state()["accounts"][KEY]["open_orders"], what="no open order on the exchange")
    truth = exchange_fills(sim)
    assert len(truth) > 100

    # Forced reconnect: the runtime resyncs (getchildorders + getexecutions) on every reconnect.
    before = rt.realtime.reconnects
    await sim.set_faults(close_websockets=True)
    await wait_for(lambda: rt.realtime.reconnects > before and rt.realtime.connected.is_set(), what="reconnect")
    await wait_for(lambda: rt.position.exact_size == exchange_net(sim), timeout=30,
                   what=f"self position {rt.position.exact_size} == exchange {exchange_net(sim)}")
    ids = journal_exec_ids(rt)
    assert len(ids) == len(set(ids)), "a fill was journaled twice"
    assert set(ids) == set(truth), "the journal must hold exactly the account's fills"
    assert rt.fills_applied == len(truth)
    assert rt.fills_recovered > 0, "some fills can only have come from a resync (their events were dropped)"
    assert sum(Decimal(repr(v)) for v in truth.values()) == rt.position.exact_size
    # Every order the tracker still calls open is open on the exchange (none are).
    assert rt.tracker.open_orders == []


@pytest.mark.parametrize("latency_ms", [150])
async def test_events_before_the_http_reply_are_parked_and_counted_once(
    sim: SimServer, start_bot: StartBot, latency_ms: int
) -> None:
    s = Strategy()
    rt = await start_bot(s, apikey=KEY, secret=SECRET, strategy_config=NO_RISK_LIMITS)
    await sim.set_faults(latency_ms=latency_ms)
    # Marketable orders: ORDER + EXECUTION events go out on the socket at once, the reply 150 ms later.
    orders: list[Any] = []
    for _ in range(4):
        orders += await asyncio.gather(
            s.buy(0.01), s.sell(0.01), s.buy(0.02, round(s.best_ask + 300)), s.sell(0.02, round(s.best_bid - 300)),
        )
    await sim.set_faults(latency_ms=0)
    assert all(o.acceptance_id for o in orders), [o.reason for o in orders]
    assert rt.tracker.parked_applied > 0, "events should have arrived before the replies"
    await wait_for(lambda: all(o.state is OrderState.FILLED for o in orders), what="every order FILLED")
    truth = exchange_fills(sim)
    assert rt.fills_applied == len(truth) and rt.tracker.parked == 0
    assert rt.position.exact_size == exchange_net(sim) == Decimal("0")
    for o in orders:
        assert o.filled_size == o.size


async def test_fill_lost_while_connected_is_recovered_without_a_reconnect(
    sim: SimServer, start_bot: StartBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resting order whose fill event is lost looks like any quiet resting order: only the
    # periodic settle (SETTLE_INTERVAL, 60 s in production) can find the fill without a reconnect.
    monkeypatch.setattr(resync, "SETTLE_INTERVAL", 0.5)
    monkeypatch.setattr(resync, "ORDER_AUDIT_INTERVAL", 0.1)
    s = Strategy()
    rt = await start_bot(s, apikey=KEY, secret=SECRET)
    resting = await s.buy(0.01, round(s.best_bid - 300))
    await wait_for(lambda: resting.state is OrderState.ACTIVE, what="resting order ACTIVE")
    await sim.set_faults(drop_private_events=1.0)
    async with RestClient(sim.url, TAKER, TAKER_SECRET) as rest:  # another account sweeps down to it
        board = await rest.get_board("FX_BTC_JPY")
        depth = sum(b["size"] for b in board["bids"] if b["price"] >= (resting.price or 0))
        await rest.send_child_order("FX_BTC_JPY", "SELL", round(depth + 0.5, 8), resting.price, time_in_force="IOC")
    await wait_for(lambda: exchange_fills(sim), what="the resting order filled on the exchange")
    await sim.set_faults(drop_private_events=0.0)
    assert rt.position.exact_size == 0 and resting.is_open  # the bot saw nothing
    await wait_for(lambda: rt.position.exact_size == exchange_net(sim) != 0, what="the lost fill recovered")
    assert resting.state is OrderState.FILLED and rt.fills_recovered == len(exchange_fills(sim))
    assert rt.realtime.reconnects == 0
    await wait_for(lambda: not rt.tracker.unsettled_orders, what="nothing left unsettled")
