"""Kill-switch test strategy: once the book is ready, buys ``buy`` BTC at market (0 = none; again
on the next tick while refused or failed, e.g. before its first lease) and logs ``ctl_bot ready``; then every tick asks the desk's refusal gate (the real one, nothing is
sent) whether a BUY and a SELL of ``probe_size`` would go out, and logs each change of the answer:
``ctl_bot probe BUY ok`` or ``ctl_bot probe BUY refused: <reason>``. A BUY grows a long position,
a SELL reduces it: pause refuses both, close-only only the BUY, run neither.
"""

from __future__ import annotations

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.ready = False
        self.seen: dict[str, str] = {}
        self.every(0.1, self.tick)

    async def tick(self) -> None:
        if not self.best_bid or not self.best_ask:
            return
        p = self.parameters
        if not self.ready:
            size = float(p.get("buy", 0))
            if size:
                order = await self.buy(size)
                self.log.info("ctl_bot bought %s: %s %s", size, order.state.value, order.reason)
                if order.state.value in ("REFUSED", "FAILED"):
                    return  # e.g. no lease yet at start: again on the next tick
            self.ready = True
            self.log.info("ctl_bot ready")
            return
        mid = (self.best_bid + self.best_ask) / 2
        size = float(p.get("probe_size", 0.01))
        desk = self._rt.desk
        for side, price in (("BUY", round(mid * 0.99)), ("SELL", round(mid * 1.01))):
            why = desk.refusal(side, size, price)  # type: ignore[arg-type]
            answer = "ok" if why is None else f"refused: {why}"
            if self.seen.get(side) != answer:
                self.seen[side] = answer
                self.log.info("ctl_bot probe %s %s", side, answer)
