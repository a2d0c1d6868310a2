"""Crash-window test strategy. Once the book is ready it logs ``crash armed``; then, as soon as the
file named by the ``trigger`` parameter exists, it sends two orders at once and logs ``crash sent``
when both replies are back: a market buy of ``taker`` BTC (fills at once) and a sell of ``resting``
BTC ``distance`` JPY above the ask (stays on the book). Without ``trigger`` (the restart) it sends
nothing and logs ``crash restarted`` with what it found.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.state = "waiting"
        self.go = False
        self.every(0.05, self.watch)
        self.every(0.05, self.tick)

    def watch(self) -> None:
        trigger = self.parameters.get("trigger")
        self.go = bool(trigger) and Path(trigger).exists()

    async def tick(self) -> None:
        if self.state == "done" or not self.best_bid or not self.best_ask:
            return
        p = self.parameters
        if not p.get("trigger"):
            self.state = "done"
            self.log.info("crash restarted: position %s, %d open orders", self.position, len(self.open_orders))
            return
        if self.state == "waiting":
            self.state = "armed"
            self.log.info("crash armed")
        if not self.go:
            return
        self.state = "done"
        ask = self.best_ask
        orders = await asyncio.gather(
            self.buy(float(p.get("taker", 0.03))),
            self.sell(float(p.get("resting", 0.02)), round(ask + float(p.get("distance", 30000)))),
        )
        self.log.info("crash sent %s", [(o.state, o.acceptance_id) for o in orders])
