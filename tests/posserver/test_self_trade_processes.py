"""A foreign buy on an account whose bot quotes the best bid, with real processes: the correcting
market sell would trade with the bot's own bid, so the exchange refuses it (-159). The server asks
the market's bots to step aside, the bot (a real ``bfsx trade`` process) cancels its bid and holds
off, the next correction goes through, and the bot quotes again. Without the step-aside every
correction would be refused for as long as the bot quotes, and the foreign exposure would stay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bfsx.sim.hooks import eventually as wait_for

from .test_controls_processes import FX, Harness, _hand_trade, running_harness

QUOTER = Path(__file__).parent / "strategies" / "quoter.py"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def still_market(tmp_path: Path) -> AsyncIterator[Harness]:
    """A ``bfsx sim`` process whose mid stands still and where nobody takes: the bot's bid stays
    the best bid and unfilled, so the correcting sell meets it first (every time)."""
    still = {"volatility": 0, "noise": 0, "jump_probability": 0, "taker_rate": 0, "churn_per_second": 0}
    async with running_harness(tmp_path, still) as h:
        yield h


async def test_a_correction_blocked_by_a_bots_own_bid_goes_through_after_the_bot_steps_aside(
        still_market: Harness) -> None:
    h = still_market
    server = await h.start_server()
    h.start_bot("quoter", strategy=QUOTER, parameters={"size": 0.01})
    await wait_for(lambda: "quoter resting" in h.log("quoter") and len(server.registry.bots) == 1
                   and server.results.get(FX) is not None and server.results[FX].exchange == h.total(),
                   60, what="the quoter's bid resting, its position counted")
    await _hand_trade(h, "BUY", 0.05)  # behind the bot's back: the correction must sell 0.05
    try:
        await wait_for(lambda: server.counters["self_trade_steps"] >= 1, 30,
                       what="the correction refused as a self trade, the bots asked to step aside")
    except AssertionError as e:
        raise AssertionError(f"{e}: counters {dict(server.counters)}, result {server.results.get(FX)}, "
                             f"alerts {h.alerts}\n{h.log('quoter')[-3000:]}") from None
    await wait_for(lambda: "of mine cancelled" in h.log("quoter"), 15, what="the quoter cancelled its bid")
    await wait_for(lambda: server.counters["corrections"] >= 1 and h.net() == h.total() + server.base_of(FX),
                   30, what="the correction through: exchange = Σ bots")
    assert server.controls.aside_since(FX) is None and server.controls.bot_control(FX).mode == "run"
    log = h.log("quoter")
    assert "position server: mode pause (pause:self-trade)" in log
    assert "quoter refused: paused by the position server" in log or "of mine cancelled" in log
    # It quotes again, and the account stays where the bots say.
    marks = h.marks()
    await wait_for(lambda: "quoter resting" in h.log("quoter")[marks["quoter"]:], 20, what="quoting again")
    assert h.net() == h.total() + server.base_of(FX)
    kinds = [k for k, _ in h.alerts]
    assert kinds.count("self_trade") == server.counters["self_trade_steps"] >= 1
    assert "freeze" not in kinds and Decimal(0) <= abs(h.net()) <= Decimal("0.2")
