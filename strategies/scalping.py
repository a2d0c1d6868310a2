"""A fast scalper on self-built second candles: when taker volume is one-sided and the price moves
with it, enter with a limit order (at the far touch by default, so it fills at a capped price);
leave on take-profit, stop-loss or a time limit.

Every parameter is documented in ``scalping.yaml`` and reloads live.
"""

from __future__ import annotations

from typing import Any

import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        p = self.parameters
        self._entry_at = 0.0
        self._entry_order: Any = None
        self.bars = self.candles(float(p.get("timescale", 3)), int(p.get("num_candles", 60)), self.on_candle)
        self.every(0.5, self.manage)

    def _p(self, key: str, default: float) -> float:
        return float(self.parameters.get(key, default))

    async def on_candle(self, candles: Any) -> None:
        lookback = int(self._p("lookback", 3))
        bars = list(self.bars.candles)[-lookback:]
        if len(bars) < lookback or abs(self.position) >= 0.001 or self.open_orders:
            return
        buy = sum(b.buy_volume for b in bars)
        sell = sum(b.sell_volume for b in bars)
        total = buy + sell
        if total < self._p("min_volume", 0.05):
            return
        imbalance = (buy - sell) / total
        move = bars[-1].close - bars[0].open
        lot = self._p("lot", 0.01)
        threshold = self._p("imbalance", 0.4)
        bid, ask = self.best_bid, self.best_ask
        if not bid or not ask:
            return
        # "take": a limit at the far touch (fills now, price capped); "join": a limit at the near touch.
        take = self.parameters.get("entry", "take") == "take"
        if imbalance > threshold and move > 0:
            self._entry_order = await self.buy(lot, ask if take else bid)
        elif imbalance < -threshold and move < 0:
            self._entry_order = await self.sell(lot, bid if take else ask)
        else:
            return
        self._entry_at = self.time()

    async def manage(self) -> None:
        now = self.time()
        pos = self.position
        # An entry that did not fill quickly is no longer a good entry.
        if abs(pos) < 0.001:
            if self.open_orders and now - self._entry_at > self._p("entry_timeout", 4):
                await self.cancel_all()
            return
        if not self.ltp or not self.average_price:
            return
        edge = (self.ltp - self.average_price) * (1 if pos > 0 else -1)
        held = now - self._entry_at
        reason = None
        if edge <= -self._p("stop_loss", 1500):
            reason = "stop-loss"
        elif edge >= self._p("take_profit", 1000):
            reason = "take-profit"
        elif held > self._p("max_hold", 30):
            reason = "time exit"
        if reason:
            await self.cancel_all()
            order = await self.close_position()
            if order is not None:
                self.log.info("%s: closed %.3f at edge %.0f JPY after %.1fs", reason, pos, edge, held)
