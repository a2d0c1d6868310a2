"""Lease test strategy: tries ``rate`` small orders a second (default 4) for ``seconds`` seconds.

``mode: rest`` (default): LIMIT BUY/SELL 0.01 3 % from the touch (never filled; inside the default price_band), keeping at most
``keep`` open, the oldest cancelled; ``mode: maker``: the same at the touch (the market's takers
fill them, later); ``mode: market``: MARKET 0.01 alternately BUY and SELL (every order fills).
When the time is up, every open order is cancelled. Logs ``spam ready`` once trading and ``spam done: tried N accepted M refused R
failed F`` when the time is up (refused = by the bot itself, e.g. its lease; failed = the
exchange said no).
"""

from __future__ import annotations

import time

import bfsx
from bfsx.account.orders import OrderState


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        p = self.parameters
        self.rate = float(p.get("rate", 4.0))
        self.seconds = float(p.get("seconds", 10.0))
        self.mode = str(p.get("mode", "rest"))
        self.keep = int(p.get("keep", 3))
        self.started = 0.0
        self.tried = self.accepted = self.refused = self.failed = 0
        self.buy_next = True
        self.done = False
        self.every(1.0 / self.rate, self.tick)

    async def tick(self) -> None:
        if self.done or not self.best_bid or not self.best_ask:
            return
        now = time.monotonic()
        if not self.started:
            self.started = now
            self.log.info("spam ready")
        if now - self.started >= self.seconds:
            self.done = True
            await self.cancel_all()
            self.log.info("spam done: tried %d accepted %d refused %d failed %d",
                          self.tried, self.accepted, self.refused, self.failed)
            return
        self.tried += 1
        side_buy, self.buy_next = self.buy_next, not self.buy_next
        if self.mode == "market":
            order = await (self.buy(0.01) if side_buy else self.sell(0.01))
        elif self.mode == "maker":
            price = self.best_bid if side_buy else self.best_ask
            order = await (self.buy(0.01, price) if side_buy else self.sell(0.01, price))
        else:
            price = round(self.best_bid * 0.97) if side_buy else round(self.best_ask * 1.03)  # inside price_band
            order = await (self.buy(0.01, price) if side_buy else self.sell(0.01, price))
        if order.state == OrderState.REFUSED:
            self.refused += 1
        elif order.state == OrderState.FAILED:
            self.failed += 1
        else:
            self.accepted += 1
        resting = [o for o in self.open_orders if o.acceptance_id]
        for o in resting[: max(0, len(resting) - self.keep)]:
            await self.cancel(o)
