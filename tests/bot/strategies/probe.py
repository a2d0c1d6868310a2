"""Process-test strategy: once the book is ready, optionally buys at market, then rests a few
orders far from the touch, and logs ``probe ready N``. Parameters (all optional):

- ``market_buy``: size of a market buy sent first (0 = none)
- ``resting``: resting orders to place, alternating buy / sell (default 2)
- ``distance``: JPY between the touch and the nearest resting order (default 20000)
- ``log_handlers``: log the root logger's handlers (class and rotation)
- ``leak_secret``: log the API key and secret at DEBUG, to prove the log redacts them
"""

from __future__ import annotations

import logging

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.done = False
        p = self.parameters
        if p.get("log_handlers"):
            for h in logging.getLogger().handlers:
                self.log.info("probe handler %s when=%s", type(h).__name__, getattr(h, "when", "-"))
        if p.get("leak_secret"):
            self.log.debug("probe leak key=%s secret=%s", self._rt.trade.api_key(), self._rt.trade.api_secret())
        self.every(0.1, self.tick)

    async def tick(self) -> None:
        if self.done or not self.best_bid or not self.best_ask:
            return
        self.done = True
        p = self.parameters
        if p.get("market_buy"):
            order = await self.buy(float(p["market_buy"]))
            self.log.info("probe market %s %s", order.state, order.acceptance_id)
        distance = float(p.get("distance", 20000))
        for i in range(int(p.get("resting", 2))):
            if i % 2 == 0:
                order = await self.buy(0.01, round(self.best_bid - distance - 10 * i))
            else:
                order = await self.sell(0.01, round(self.best_ask + distance + 10 * i))
            self.log.info("probe order %s %s %s", order.side, order.state, order.acceptance_id)
        self.log.info("probe ready %d", len(self.open_orders))
