"""``self.candles``: in a quiet market, empty seconds still come out (carried forward), even when
the strategy registers its candles late (an async ``initialize`` that awaits first)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import bfsx
from bfsx.market.candles import Candle
from bfsx.sim.config import SimConfig

from .conftest import StartBot, wait_for


@pytest.fixture
def sim_config() -> SimConfig:
    # No synthetic prints (no takers, a still price that sweeps nothing): only the test's own order.
    return SimConfig.fast(market={"taker_rate": 0.0, "volatility": 0.0, "jump_probability": 0.0, "noise": 0.0, "impact": 0.0})


class LateCandles(bfsx.Strategy):
    async def initialize(self) -> None:
        # e.g. loading history over REST first: the realtime connection is up before we register
        while not self._rt.realtime.connected.is_set():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        self.seen: list[list[Candle]] = []
        self.candles(1, 20, self.on_candles)

    def on_candles(self, candles: list[Candle]) -> None:
        self.seen.append(candles)


async def test_quiet_seconds_come_out_as_candles_when_registered_late(start_bot: StartBot) -> None:
    s = LateCandles()
    await start_bot(s)
    await wait_for(lambda: hasattr(s, "seen"), what="initialize done")
    await s.buy(0.01)  # the only print: everything after it is quiet
    seen: list[Any] = s.seen
    await wait_for(lambda: len(seen) >= 3, what="three confirmed candles without any further print")
    last = seen[-1]
    traded = [c for c in last if c.count]
    assert len(traded) == 1 and traded[0].buy_volume == pytest.approx(0.01)
    quiet = last[last.index(traded[0]) + 1:]
    assert quiet and all(c.count == 0 and c.volume == 0 and c.close == traded[0].close for c in quiet)
    assert all(b.time - a.time == 1 for a, b in itertools.pairwise(last))
