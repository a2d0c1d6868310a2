"""Kill -9 test strategy: with ``place: true``, once the book is ready, rests a ladder of small
orders on both sides near the touch (the synthetic takers fill them over the next seconds) and
logs ``maker placed N``. With ``place: false`` (the restart) it sends nothing and logs
``maker restarted`` with what it found, so every fill after the restart is one of the old orders.
"""

from __future__ import annotations

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.done = False
        self.every(0.1, self.tick)

    async def tick(self) -> None:
        if self.done or not self.best_bid or not self.best_ask:
            return
        self.done = True
        if not self.parameters.get("place"):
            self.log.info("maker restarted: position %s, %d open orders", self.position, len(self.open_orders))
            return
        bid, ask = self.best_bid, self.best_ask
        for i in range(6):
            await self.buy(0.01, round(bid - 60 * i))
            await self.sell(0.01, round(ask + 60 * i))
        self.log.info("maker placed %d", len(self.open_orders))
