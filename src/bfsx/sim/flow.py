"""Seeded synthetic market: a latent mid that random-walks with jumps, a liquidity ladder that
follows it, and random taker flow (see docs/simulator.md for the model and what it gets wrong).

Each :meth:`SyntheticFlow.step` advances every product by ``step_seconds`` and draws all its random
numbers from one ``random.Random(seed)``. The server calls it on a timer, but the *sequence* of
steps never depends on timing, so the same seed replays the same public executions as long as no
user order changes the book.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

from bfsx.sim.book import Market
from bfsx.sim.config import MarketConfig
from bfsx.sim.engine import Engine
from bfsx.sim.model import BUY, SAT, SELL, Order, to_sats

_BIG = 10**18  # size of a sweep order: bounded by its limit price, not by size
_CHURN_MIN_SATS = to_sats(0.002)  # a churn shrinks only a quote bigger than this


class Ladder:
    """The synthetic quotes of one side: at most one synthetic order per grid price."""

    def __init__(self, side: int) -> None:
        self.side = side
        # price -> Order. Every key is a grid price within [lo, hi], so what leaves the range is found
        # by walking the grid between the old and new bounds: no sorted map needed (measured: a
        # SortedDict cost ~20 % of the flow's time in a backtest).
        self.quotes: dict[int, Order] = {}
        self.holes: set[int] = set()  # grid prices whose quote was taken, waiting to refill
        self.lo: int | None = None
        self.hi: int | None = None


class _StepConstants:
    """What every step of ``cfg`` computes the same way, computed once (the same floats)."""

    __slots__ = ("churn_limit", "decay", "jump_per_step", "noise_step", "refill_per_step", "taker_limit", "vol_step")

    def __init__(self, cfg: MarketConfig) -> None:
        dt = cfg.step_seconds
        self.vol_step = cfg.volatility * math.sqrt(dt)
        self.jump_per_step = cfg.jump_probability * dt
        self.decay = math.exp(-cfg.reversion * dt)
        self.noise_step = cfg.noise * math.sqrt(1.0 - self.decay * self.decay)
        self.refill_per_step = 1.0 - math.exp(-cfg.refill_rate * dt)
        churn, takers = cfg.churn_per_second * dt, cfg.taker_rate * dt
        self.churn_limit = math.exp(-churn) if churn > 0 else 1.0  # exp(-lam) of the Poisson draws
        self.taker_limit = math.exp(-takers) if takers > 0 else 1.0


class SyntheticFlow:
    """Drives the synthetic side of every market of ``engine``."""

    def __init__(self, engine: Engine, cfg: MarketConfig, seed: int | None) -> None:
        self.engine = engine
        self.cfg = cfg
        self.rng = random.Random(seed)
        self._random = self.rng.random
        self._level_rate = 1.0 / cfg.level_size_mean
        self._churn_rate = 8.0 / cfg.levels
        self._k = _StepConstants(cfg)
        self._far_slack = cfg.far_levels_slack * cfg.level_spacing  # JPY
        self.steps = 0
        self.ladders: dict[str, dict[int, Ladder]] = {}
        self.walk: dict[str, list[float]] = {}  # product -> [anchor, deviation]
        when = engine.now()
        for code, mkt in engine.markets.items():
            mkt.fair_mid = float(cfg.start_for(code))
            self.walk[code] = [mkt.fair_mid, 0.0]
            mkt.ltp = round(mkt.fair_mid)
            self.ladders[code] = {BUY: Ladder(BUY), SELL: Ladder(SELL)}
            for side in (BUY, SELL):
                self._requote(mkt, self.ladders[code][side], when)
            mkt.book.dirty_bids.clear()  # the opening book is a snapshot, not a diff
            mkt.book.dirty_asks.clear()
        engine.flush()

    # ------------------------------------------------------------------ random helpers
    def _poisson(self, limit: float) -> int:
        """A Poisson draw (Knuth's method) of mean ``lam``, given ``limit = exp(-lam)`` (none for lam <= 0)."""
        if limit >= 1.0:
            return 0
        rnd = self._random
        k, p = 0, rnd()
        while p > limit:
            k += 1
            p *= rnd()
        return k

    def _level_size(self) -> int:
        # random.expovariate inlined (the same draw), rounded to 0.0001 BTC in integers: one per
        # synthetic quote. Equal to to_sats(max(0.001, round(btc, 4))) but for a float within an
        # ulp of a rounding tie (the decimal rounding and x * 10000 may then pick apart)
        btc = -math.log(1.0 - self._random()) / self._level_rate
        return max(100_000, round(btc * 10_000) * 10_000)

    def _taker_size(self) -> int:
        btc = min(self.cfg.taker_size_max, max(0.001, round(self.rng.expovariate(1.0 / self.cfg.taker_size_mean), 4)))
        return to_sats(btc)

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        """Advance every market by one step and flush the resulting executions."""
        self.steps += 1
        filled, self.engine.synthetic_filled = self.engine.synthetic_filled, []
        if not self.engine.is_open():
            return  # maintenance: the book is frozen, nothing trades
        when = self.engine.now()
        for code, mkt in self.engine.markets.items():
            self._step_market(mkt, self.ladders[code], filled, when)
        self.engine.flush()

    def _step_market(self, mkt: Market, ladders: dict[int, Ladder], filled: list[Order], when: datetime) -> None:
        cfg, rng, k = self.cfg, self.rng, self._k
        # fair mid = anchor (random walk with jumps) x exp(deviation) (Ornstein-Uhlenbeck): the
        # deviation is the short-term back-and-forth that lets resting quotes get filled
        state = self.walk[mkt.spec.code]
        taken = self.engine.user_flow.pop(mkt.spec.code, 0)
        if taken:  # permanent impact of users' market-taking volume
            state[0] *= math.exp(cfg.impact * taken / SAT)
        anchor = state[0] * math.exp(k.vol_step * rng.gauss(0.0, 1.0))
        if rng.random() < k.jump_per_step:
            anchor *= math.exp(rng.gauss(0.0, cfg.jump_size))
        dev = state[1] * k.decay + k.noise_step * rng.gauss(0.0, 1.0)
        state[0], state[1] = max(anchor, 1000.0), dev
        mkt.fair_mid = state[0] * math.exp(dev)
        self._sweep(mkt, when)
        if filled:
            self._holes(mkt, ladders, filled)
        for side in (BUY, SELL):
            self._requote(mkt, ladders[side], when)
        self._refill(mkt, ladders, when, k.refill_per_step)
        for _ in range(self._poisson(k.churn_limit)):
            self._churn(mkt, ladders[BUY if rng.random() < 0.5 else SELL], when)
        for _ in range(self._poisson(k.taker_limit)):
            side = BUY if rng.random() < 0.5 else SELL
            taker = self.engine.new_synthetic(mkt.spec.code, side, 0, self._taker_size(), when)
            self.engine.match(taker, None, when)

    def _holes(self, mkt: Market, ladders: dict[int, Ladder], filled: list[Order]) -> None:
        """Quotes taken by trades leave holes that refill over time (queue position is lost)."""
        code = mkt.spec.code
        for order in filled:
            if order.product != code:
                continue
            ladder = ladders[order.side]
            if ladder.quotes.get(order.price) is order:
                del ladder.quotes[order.price]
                ladder.holes.add(order.price)

    def _sweep(self, mkt: Market, when: datetime) -> None:
        """The price moved through resting orders: asks at or below the fair mid are lifted and bids
        at or above it are hit (user orders included), printing executions at the makers' prices."""
        book, mid = mkt.book, mkt.fair_mid
        ask = book.touch(SELL)
        if ask is not None and ask <= mid:
            taker = self.engine.new_synthetic(mkt.spec.code, BUY, 0, _BIG, when)
            self.engine.match(taker, math.floor(mid), when)
        bid = book.touch(BUY)
        if bid is not None and bid >= mid:
            taker = self.engine.new_synthetic(mkt.spec.code, SELL, 0, _BIG, when)
            self.engine.match(taker, math.ceil(mid), when)

    def _range(self, mid: float, side: int) -> tuple[int, int]:
        cfg = self.cfg
        sp = cfg.level_spacing
        if side == BUY:
            top = math.floor((mid - cfg.half_spread) / sp) * sp
            return top - (cfg.levels - 1) * sp, top
        top = math.ceil((mid + cfg.half_spread) / sp) * sp
        return top, top + (cfg.levels - 1) * sp

    def _add(self, mkt: Market, ladder: Ladder, price: int, when: datetime) -> None:
        order = self.engine.new_synthetic(mkt.spec.code, ladder.side, price, self._level_size(), when)
        mkt.book.add(order)
        ladder.quotes[price] = order
        if ladder.holes:
            ladder.holes.discard(price)

    def _pull(self, mkt: Market, ladder: Ladder, price: int) -> None:
        order: Order = ladder.quotes.pop(price)
        if order.resting:
            mkt.book.remove(order)

    def _requote(self, mkt: Market, ladder: Ladder, when: datetime) -> None:
        """Move the ladder with the mid: pull quotes that left the range, quote the new grid prices.

        The near end (the touch) follows the mid exactly. The far end follows it only when it lags
        by more than ``far_levels_slack`` levels, and is then trimmed back to ``levels``: deep
        quotes do not move with every tick (on a real book nor here), and a ladder that shifted its
        far end with every 50-yen wiggle of the mid spent a third of the flow's work, and of the
        diffs' levels, on quotes hundreds of levels deep."""
        lo, hi = self._range(mkt.fair_mid, ladder.side)
        old_lo, old_hi = ladder.lo, ladder.hi
        if old_lo is not None and old_hi is not None:
            slack = self._far_slack
            if ladder.side == BUY:  # the far end is the lowest bid
                if lo - slack <= old_lo <= lo:
                    lo = old_lo
            elif hi <= old_hi <= hi + slack:  # the far end is the highest ask
                hi = old_hi
        if lo == old_lo and hi == old_hi:
            return  # the mid stayed within the same grid step (most steps)
        q = ladder.quotes
        sp = self.cfg.level_spacing
        fill = self.cfg.level_fill_probability
        rnd = self._random
        if old_lo is None or old_hi is None:
            for price in range(lo, hi + 1, sp):
                if rnd() < fill:
                    self._add(mkt, ladder, price, when)
            ladder.lo, ladder.hi = lo, hi
            return
        if old_lo < lo or old_hi > hi:
            # the grid prices that left the range, lowest first (the order a sorted map gave)
            if old_lo < lo:
                for price in range(old_lo, min(lo, old_hi + sp), sp):
                    if price in q:
                        self._pull(mkt, ladder, price)
            if old_hi > hi:
                for price in range(max(hi + sp, old_lo), old_hi + 1, sp):
                    if price in q:
                        self._pull(mkt, ladder, price)
            if ladder.holes:
                ladder.holes = {p for p in ladder.holes if lo <= p <= hi}
        # only the grid prices the move uncovered (all prices are multiples of sp), lowest first
        if lo < old_lo:
            for price in range(lo, min(old_lo, hi + sp), sp):
                if price not in q and rnd() < fill:
                    self._add(mkt, ladder, price, when)
        if hi > old_hi:
            for price in range(max(old_hi + sp, lo), hi + 1, sp):
                if price not in q and rnd() < fill:
                    self._add(mkt, ladder, price, when)
        ladder.lo, ladder.hi = lo, hi

    def _refill(self, mkt: Market, ladders: dict[int, Ladder], when: datetime, prob: float) -> None:
        for side in (BUY, SELL):
            ladder = ladders[side]
            for price in sorted(ladder.holes):
                if self.rng.random() < prob:
                    self._add(mkt, ladder, price, when)

    def _churn(self, mkt: Market, ladder: Ladder, when: datetime) -> None:
        """A synthetic maker changes one level: shrink in place, requeue, withdraw, or add."""
        if ladder.lo is None or ladder.hi is None:
            return
        cfg, rnd = self.cfg, self._random
        # random.expovariate and random.uniform inlined (the same draws and arithmetic)
        k = min(cfg.levels - 1, int(-math.log(1.0 - rnd()) / self._churn_rate))
        price = ladder.hi - k * cfg.level_spacing if ladder.side == BUY else ladder.lo + k * cfg.level_spacing
        r = rnd()
        order: Order | None = ladder.quotes.get(price)
        if order is None or not order.resting:
            if order is not None:
                del ladder.quotes[price]
            self._add(mkt, ladder, price, when)
        elif r < 0.4 and order.remaining > _CHURN_MIN_SATS:
            cut = int(order.remaining * (0.1 + (0.6 - 0.1) * rnd()))
            mkt.book.shrink(order, cut)
        elif r < 0.75:
            self._pull(mkt, ladder, price)
            self._add(mkt, ladder, price, when)  # a size change loses queue position
        else:
            self._pull(mkt, ladder, price)
