"""Self-trade test strategy: keeps one BUY of ``size`` resting one yen above the best bid (so it
is the best bid: a market sell of the account meets it first) and re-places it whenever none is
open; logs ``quoter resting <price>`` for each one placed and ``quoter refused: <reason>`` when
the desk refuses (e.g. paused by the position server).
"""

from __future__ import annotations

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.refused = ""
        self.every(0.2, self.tick)

    async def tick(self) -> None:
        if not self.best_bid or not self.best_ask or self.open_orders:
            return
        price = self.best_bid + 1 if self.best_bid + 1 < self.best_ask else self.best_bid
        order = await self.buy(float(self.parameters.get("size", 0.01)), price)
        if order.state.value in ("REFUSED", "FAILED"):
            if order.reason != self.refused:
                self.refused = order.reason
                self.log.info("quoter refused: %s", order.reason)
            return
        self.refused = ""
        self.log.info("quoter resting %s", price)
