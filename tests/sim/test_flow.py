"""The synthetic market: determinism with a seed, and makers get filled on the default market."""

from __future__ import annotations

import asyncio
from typing import Any

from bfsx.sim.config import SimConfig
from bfsx.sim.engine import Engine
from bfsx.sim.flow import SyntheticFlow
from bfsx.sim.hooks import WireClient, WireSocket
from bfsx.sim.model import SIDE_NAME
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"


def _replay(cfg: SimConfig, n: int, product: str = FX) -> list[tuple[int, str, int, float]]:
    """The first ``n`` public executions of ``product``, stepping the flow without any clock."""
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    hist = engine.markets[product].history
    for _ in range(100_000):
        if len(hist) >= n:
            break
        flow.step()
    return [(x[0], SIDE_NAME[x[1]], x[2], x[3] / 1e8) for x in list(hist)[:n]]


def _rows(rows: list[dict[str, Any]]) -> list[tuple[int, str, int, float]]:
    return [(r["id"], r["side"], int(r["price"]), r["size"]) for r in sorted(rows, key=lambda r: r["id"])]


def test_same_seed_same_executions() -> None:
    a = _replay(SimConfig.fast(seed=42), 200)
    b = _replay(SimConfig.fast(seed=42), 200)
    c = _replay(SimConfig.fast(seed=43), 200)
    assert a == b and len(a) == 200
    assert a != c
    assert len({side for _, side, _, _ in a}) == 2  # both sides trade


def test_book_is_never_crossed_and_ladder_is_deep() -> None:
    cfg = SimConfig(seed=5)
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    for _ in range(600):  # one minute of market
        flow.step()
        for mkt in engine.markets.values():
            bid, ask = mkt.book.touch(1), mkt.book.touch(-1)
            assert bid is not None and ask is not None and bid < ask
            assert len(mkt.book.bids) >= 300 and len(mkt.book.asks) >= 300
    assert all(m.volume > 0 for m in engine.markets.values())


async def test_server_replays_the_seeded_sequence_whatever_the_timing() -> None:
    cfg = SimConfig.fast(seed=9)
    expected = _replay(cfg, 40)
    async with SimServer(cfg) as sim:
        ws = await WireSocket.connect(sim.ws_url)
        try:
            await ws.subscribe("lightning_executions_FX_BTC_JPY")
            async with WireClient(sim.url) as c:
                while len((await c.get("/v1/getexecutions", product_code=FX, count=40)).data) < 40:
                    await asyncio.sleep(0.05)
                first = (await c.get("/v1/getexecutions", product_code=FX, count=500)).data
        finally:
            await ws.close()
    assert _rows(first)[:40] == expected


async def test_a_bid_at_the_touch_fills_on_the_default_market() -> None:
    """A 0.01 BTC bid resting at the touch fills (here: waits up to 60 s)."""
    async with SimServer(SimConfig(seed=3)) as sim, WireClient(sim.url, "demo-key-1", "demo-secret-1") as c:
        ws = await WireSocket.connect(sim.ws_url)
        try:
            await ws.auth("demo-key-1", "demo-secret-1")
            await ws.subscribe("child_order_events")
            bid = (await c.get("/v1/getticker", product_code=FX)).data["best_bid"]
            acc = await c.order(FX, "BUY", 0.01, bid)
            fills = await ws.wait_for(
                lambda: [e for e in ws.events(acc) if e["event_type"] == "EXECUTION" and e["outstanding_size"] == 0],
                timeout=60,
            )
            assert fills[0]["price"] == bid  # a maker fill at its own price
        finally:
            await ws.close()


def test_user_market_orders_move_the_mid() -> None:
    cfg = SimConfig.fast(seed=4, market={"volatility": 0, "noise": 0, "jump_probability": 0, "impact": 1e-4})
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    acct = engine.accounts["demo-key-1"]
    start = engine.markets[FX].fair_mid
    engine.place(engine.accept(acct, {"product_code": FX, "child_order_type": "MARKET", "side": "BUY", "size": 0.5}))
    flow.step()
    assert engine.markets[FX].fair_mid > start * (1 + 0.4e-4)


def _ladder_bounds(flow: SyntheticFlow, product: str = FX) -> dict[int, tuple[int, int, int, int]]:
    """Per side: (lowest, highest) synthetic quote price now and (lo, hi) of the range the mid asks for."""
    mkt = flow.engine.markets[product]
    out = {}
    for side, ladder in flow.ladders[product].items():
        prices = list(ladder.quotes)
        lo, hi = flow._range(mkt.fair_mid, side)
        out[side] = (min(prices), max(prices), lo, hi)
    return out


def test_the_far_end_lags_the_mid_by_at_most_the_slack_and_the_near_end_follows_it() -> None:
    slack, sp = 20, 50
    cfg = SimConfig(seed=11, market={"far_levels_slack": slack, "level_fill_probability": 1.0,
                                     "churn_per_second": 0, "taker_rate": 0, "refill_rate": 1e9})
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    lagged = 0
    for _ in range(3000):  # five minutes of market
        flow.step()
        for side, (low, high, lo, hi) in _ladder_bounds(flow).items():
            if side == 1:  # bids: the top is exactly the range's, the bottom at most `slack` lower
                assert high <= hi and high >= hi - sp  # (a swept top quote may be a hole)
                assert lo - slack * sp <= low <= lo
                lagged += low < lo
            else:  # asks: the bottom follows, the top may lag by `slack`
                assert low >= lo and low <= lo + sp
                assert hi <= high <= hi + slack * sp
                lagged += high > hi
    assert lagged > 1000  # the slack is used: the far end often stays where it was


def test_no_slack_moves_the_whole_ladder_with_the_mid() -> None:
    cfg = SimConfig(seed=11, market={"far_levels_slack": 0, "level_fill_probability": 1.0,
                                     "churn_per_second": 0, "taker_rate": 0, "refill_rate": 1e9})
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    for _ in range(1000):
        flow.step()
        for side, (low, high, lo, hi) in _ladder_bounds(flow).items():
            assert lo <= low and high <= hi
            assert (low == lo) if side == 1 else (high == hi)


def test_far_levels_slack_must_be_a_bounded_whole_number_of_levels() -> None:
    import pytest
    from pydantic import ValidationError

    for bad in (-1, 5001, 2.5, "many", float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            SimConfig(market={"far_levels_slack": bad})
    assert SimConfig(market={"far_levels_slack": 0}).market.far_levels_slack == 0
    assert SimConfig().market.far_levels_slack == 20
