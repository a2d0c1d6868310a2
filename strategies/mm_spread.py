"""Market making on the spread: quote both sides near the touch when the spread is wide enough,
skew the quotes against the position, cap the position, and cancel stale quotes.

Every parameter is documented in ``mm_spread.yaml`` and reloads live.
"""

from __future__ import annotations

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self._quoted_at: dict[str, float] = {}
        self.every(self.parameters.get("interval", 1.0), self.requote)

    def _p(self, key: str, default: float) -> float:
        return float(self.parameters.get(key, default))

    async def requote(self) -> None:
        bid, ask = self.best_bid, self.best_ask
        if not bid or not ask or ask <= bid:
            return  # no book yet: never quote on unknown data
        lot = self._p("lot", 0.01)
        max_pos = self._p("max_position", 0.05)
        min_spread = self._p("min_spread", 300)
        skew_jpy = self._p("skew", 200)
        stale_after = self._p("stale_after", 5.0)
        api_floor = self._p("api_floor", 100)

        if self.api_remaining < api_floor:
            self.log.info("API budget low (%d): not quoting", self.api_remaining)
            await self.cancel_all()
            return

        pos = self.position
        skew = skew_jpy * pos / max_pos if max_pos else 0.0
        spread = ask - bid
        want_bid = want_ask = None
        if spread >= min_spread:
            want_bid = round(bid + 1 - skew) if pos < max_pos - 1e-9 else None
            want_ask = round(ask - 1 - skew) if pos > -max_pos + 1e-9 else None
            if want_bid is not None and want_ask is not None and want_bid >= want_ask:
                want_bid, want_ask = round(bid - skew), round(ask - skew)

        now = self.time()
        keep: dict[str, bool] = {"BUY": False, "SELL": False}
        cancels = []
        for order in self.open_orders:
            want = want_bid if order.side == "BUY" else want_ask
            age = now - self._quoted_at.get(order.acceptance_id or "", now)
            if want is None or order.price is None or abs(order.price - want) > self._p("tolerance", 100) or age > stale_after:
                cancels.append(self.cancel(order))
            else:
                keep[order.side] = True
        for c in cancels:
            await c
        if want_bid is not None and not keep["BUY"]:
            await self._quote("BUY", min(lot, max_pos - pos), want_bid)
        if want_ask is not None and not keep["SELL"]:
            await self._quote("SELL", min(lot, max_pos + pos), want_ask)

    async def _quote(self, side: str, size: float, price: float) -> None:
        if size < 0.001:
            return
        order = await (self.buy(size, price) if side == "BUY" else self.sell(size, price))
        if order.acceptance_id:
            self._quoted_at[order.acceptance_id] = self.time()
            if len(self._quoted_at) > 1000:  # bounded: forget the oldest quotes
                for key in list(self._quoted_at)[:500]:
                    del self._quoted_at[key]
