"""The market a backtest trades against: a recording replayed, or the simulator's synthetic flow.

Owns the two market sources. Both drive the simulator's matching engine (the bot's orders meet the
market there) and deliver public frames to the bot's realtime handlers, each as ``call_at`` chains
on the virtual loop, so market and bot interleave in time order.

* :class:`SyntheticMarket`: ``sim.flow.SyntheticFlow`` (seeded) steps the engine; its executions,
  board diffs, snapshots and tickers reach the bot after the feed latency, exactly as the
  simulator's server would publish them.
* :class:`ReplayMarket`: a recording (``bfsx record``). Each frame acts twice: on the engine at
  its *exchange* time (receive time minus the feed latency: an executions frame's own
  ``exec_date``, board frames the running estimate) and on the bot at its *receive* time. The
  engine's book mirrors the recorded one (one synthetic order queue per price); a recorded print
  is a synthetic taker of its side, size and price, so it fills the bot's resting orders in
  price-time priority. A level that grows queues the new size behind the bot's order; a level that
  shrinks without a print is a cancel, taken from behind the bot's order (``risk_averse``: the
  queue ahead of it only shrinks by trades) or split in proportion to the squares of the sizes
  ahead and behind (``probabilistic``, hftbacktest's power-2 queue model, as an expectation).
  What the bot's own takers took from a mirrored level stays taken (later recorded sizes there are
  shown less it) until the level goes away, as in ``sim.upstream``: the recorded market never saw
  it go and would not have refilled it for a second order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

from bfsx import clock
from bfsx.backtest.exchange import BacktestEngine, BacktestRealtime
from bfsx.bitflyer import channels, timestamps
from bfsx.record.format import Drop, Frame, Gap, Marker, Record
from bfsx.sim import views
from bfsx.sim.book import Book, Level
from bfsx.sim.config import MarketConfig
from bfsx.sim.flow import SyntheticFlow
from bfsx.sim.model import BUY, SAT, SELL, SIDE_OF, Order, to_sats

QueueModel = Literal["risk_averse", "probabilistic"]
QUEUE_MODELS: tuple[QueueModel, ...] = ("risk_averse", "probabilistic")
FEED_LATENCY_EWMA = 0.1  # weight of each new print in the feed-latency estimate
NS = 1_000_000_000


class SyntheticMarket:
    """The simulator's seeded synthetic market for ``hours`` of virtual time."""

    def __init__(self, engine: BacktestEngine, product: str, cfg: MarketConfig, seed: int, hours: float,
                 realtime: BacktestRealtime, feed_latency_s: float) -> None:
        self.engine = engine
        self.product = product
        self.cfg = cfg
        self.realtime = realtime
        self.feed_latency_s = feed_latency_s
        self.end_mono_s = clock.monotonic() + hours * 3600.0
        self.flow = SyntheticFlow(engine, cfg, seed)
        self.frames = 0
        self.on_end: Callable[[], None] = lambda: None
        self._ch_exec = channels.executions(product)
        self._ch_board = channels.board(product)
        self._ch_snapshot = channels.board_snapshot(product)
        self._ch_ticker = channels.ticker(product)
        self._pending: list[tuple[str, Any]] = []  # frames published at _pending_t, on their way
        self._pending_t = -1.0

    def feed_latency(self) -> float:
        return self.feed_latency_s

    def model(self) -> dict[str, Any]:
        return {"market": "synthetic", "feed_latency_ms": self.feed_latency_s * 1000,
                "queue": "engine price-time priority (the synthetic flow's own queue)"}

    def mid(self) -> float | None:
        return self.engine.markets[self.product].book.mid()

    def public(self, product: str, rows: list[dict[str, Any]]) -> None:
        """The engine's public executions (the flow's and the bot's own takers), published late."""
        if product == self.product and rows:
            self._deliver(self._ch_exec, rows)

    def _deliver(self, channel: str, message: Any) -> None:
        """Publish one frame: it reaches the bot ``feed_latency_s`` later. Frames of one instant
        travel together (one timer for all of them: the feed latency is constant)."""
        self.frames += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now != self._pending_t:
            self._pending, self._pending_t = [], now
            loop.call_later(self.feed_latency_s, self._arrive, self._pending)
        self._pending.append((channel, message))

    def _arrive(self, frames: list[tuple[str, Any]]) -> None:
        dispatch = self.realtime.dispatch
        for channel, message in frames:
            dispatch(channel, message)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.cfg
        if cfg.diff_interval == cfg.step_seconds:  # the default: one timer per step for both
            self._every(loop, cfg.step_seconds, self._step_and_diff)
        else:
            self._every(loop, cfg.step_seconds, self._step)
            self._every(loop, cfg.diff_interval, self._diff)
        self._every(loop, cfg.snapshot_interval, self._snapshot, first=0.0)
        if self.realtime.handlers.get(self._ch_ticker):
            self._every(loop, cfg.ticker_interval, self._ticker)

    def _every(self, loop: asyncio.AbstractEventLoop, interval_s: float, fn: Callable[[], None],
               first: float | None = None) -> None:
        """``fn`` at ``first`` (default one interval) and every ``interval_s`` after, on exact
        multiples (no drift), until the end; the step chain calls :attr:`on_end` there."""
        start = loop.time() + (interval_s if first is None else first)
        is_step = fn in (self._step, self._step_and_diff)

        def fire(k: int) -> None:
            t = start + k * interval_s
            if t > self.end_mono_s:
                if is_step:
                    self.on_end()
                return
            fn()
            loop.call_at(start + (k + 1) * interval_s, fire, k + 1)

        loop.call_at(start, fire, 0)

    def _step(self) -> None:
        self.flow.step()
        self.engine.expire_due()

    def _step_and_diff(self) -> None:
        self._step()
        self._diff()

    def _diff(self) -> None:
        diff = views.take_diff(self.engine, self.product)
        if diff is not None and self.realtime.handlers.get(self._ch_board):
            self._deliver(self._ch_board, diff)

    def _snapshot(self) -> None:
        if self.realtime.handlers.get(self._ch_snapshot):
            self._deliver(self._ch_snapshot, views.board(self.engine, self.product, self.cfg.snapshot_depth, ws=True))

    def _ticker(self) -> None:
        self._deliver(self._ch_ticker, views.ticker(self.engine, self.product, ws=True))


class ReplayMarket:
    """A recording replayed against the engine (exchange time) and the bot (receive time)."""

    def __init__(self, engine: BacktestEngine, product: str, records: Iterator[Record], epoch_start_ns: int,
                 realtime: BacktestRealtime, queue: QueueModel, end_ns: int | None = None) -> None:
        self.engine = engine
        self.product = product
        self.realtime = realtime
        self.queue = queue
        self.mkt = engine.markets[product]
        self.book: Book = self.mkt.book
        self._records = records
        self._start_ns = epoch_start_ns
        self._base_s = clock.monotonic()  # the virtual loop's time of the first frame
        self.end_mono_s = self._base_s + (end_ns - epoch_start_ns) / NS if end_ns is not None else math.inf
        self.on_end: Callable[[], None] = lambda: None
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._last_exch_s = self._base_s
        self._lookahead: tuple[float, float, Record] | None = None
        self._exhausted = False
        self._ended = False
        self._queue_unknown = False  # set by a gap until the next snapshot
        # side -> price -> sats the bot's takers took from the mirrored level: the recorded market
        # never saw them go, so its later sizes there are shown less this, until the level goes
        self._taken: dict[int, dict[int, int]] = {BUY: {}, SELL: {}}
        engine.on_taken = self._took
        self._latency_s: float | None = None
        self.frames = 0
        self.prints = 0
        self.gaps = 0
        self.latency_samples = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self._channels = {
            channels.executions(product): 0, channels.board(product): 1,
            channels.board_snapshot(product): 2, channels.ticker(product): 3,
        }
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- what the runner reads
    def feed_latency(self) -> float:
        """The current estimate of the feed latency (receive time − exec_date), seconds."""
        return self._latency_s or 0.0

    def model(self) -> dict[str, Any]:
        mean = self.latency_sum_s / self.latency_samples if self.latency_samples else 0.0
        return {
            "market": "replay", "queue": self.queue,
            "feed_latency": "measured: receive time - exec_date of each executions frame; board frames use "
                            f"the running estimate (EWMA, weight {FEED_LATENCY_EWMA})",
            "feed_latency_mean_ms": round(mean * 1000, 3), "feed_latency_max_ms": round(self.latency_max_s * 1000, 3),
            "frames": self.frames, "prints": self.prints, "gaps": self.gaps,
        }

    def mid(self) -> float | None:
        return self.book.mid()

    def public(self, product: str, rows: list[dict[str, Any]]) -> None:
        return None  # the recorded prints are the market's; the engine's echo of them is not sent

    # ----------------------------------------------------------------- the timeline
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.call_at(self._base_s, self._pump)

    def _read(self) -> None:
        """Read the recording while the next frame may act before what is already queued."""
        heap = self._heap
        while not self._exhausted:
            if self._lookahead is None:
                self._lookahead = self._next()
                if self._lookahead is None:
                    self._exhausted = True
                    return
            t_exch, t_recv, rec = self._lookahead
            if heap and t_exch > heap[0][0]:
                return  # everything unread acts later than the head: keep memory bounded
            self._lookahead = None
            heapq.heappush(heap, (t_exch, next(self._seq), 0, rec))
            heapq.heappush(heap, (t_recv, next(self._seq), 1, rec))

    def _next(self) -> tuple[float, float, Record] | None:
        """The next record of this product with its exchange and receive times (mono seconds)."""
        for rec in self._records:
            if type(rec) is Frame:
                kind = self._channels.get(rec.channel)
                if kind is None:
                    continue
                t_recv = self._base_s + (rec.recv_ns - self._start_ns) / NS
                if t_recv > self.end_mono_s:
                    return None
                lat = self._latency_s or 0.0
                if kind == 0 and rec.message:
                    try:
                        exec_s = self._base_s + timestamps.parse_epoch(rec.message[-1]["exec_date"]) - self._start_ns / NS
                    except (KeyError, TypeError, IndexError):
                        continue
                    sample = max(0.0, t_recv - exec_s)
                    self.latency_samples += 1
                    self.latency_sum_s += sample
                    self.latency_max_s = max(self.latency_max_s, sample)
                    self._latency_s = sample if self._latency_s is None else (
                        self._latency_s + FEED_LATENCY_EWMA * (sample - self._latency_s))
                    lat = sample
                t_exch = max(self._last_exch_s, t_recv - lat)
                self._last_exch_s = t_exch
                return t_exch, t_recv, rec
            if type(rec) in (Gap, Drop) or (type(rec) is Marker and rec.kind == "disconnect"):
                t = max(self._last_exch_s, self._base_s + (rec.recv_ns - self._start_ns) / NS)
                return t, t, rec
        return None

    def _pump(self) -> None:
        assert self._loop is not None
        heap = self._heap
        now = self._loop.time() + 1e-9
        while True:
            self._read()
            if not heap:
                if not self._ended:
                    self._ended = True
                    self.on_end()
                return
            t = heap[0][0]
            if t > now:
                self._loop.call_at(t, self._pump)
                return
            _, _, to_bot, rec = heapq.heappop(heap)
            if to_bot:
                self._to_bot(rec)
            else:
                self._to_engine(rec)

    # ----------------------------------------------------------------- the bot's side (receive time)
    def _to_bot(self, rec: Record) -> None:
        if type(rec) is Frame:
            self.frames += 1
            self.realtime.dispatch(rec.channel, rec.message)
        elif type(rec) is Marker:
            self.realtime.drop()
        else:  # a gap or a drop: the connection is back, the runtime resyncs, the feed waits for a snapshot
            self.gaps += 1
            self.realtime.drop()
            self.realtime.reconnect()

    # ----------------------------------------------------------------- the engine's side (exchange time)
    def _to_engine(self, rec: Record) -> None:
        if type(rec) is not Frame:
            if type(rec) is not Marker:
                self._clear_mirror()  # levels changed unseen: the next snapshot rebuilds them
            return
        kind = self._channels[rec.channel]
        msg = rec.message
        try:
            if kind == 0:
                self._prints(msg)
            elif kind == 1:
                self._levels(msg, snapshot=False)
            elif kind == 2:
                self._levels(msg, snapshot=True)
                self._queue_unknown = False
        except (KeyError, TypeError, ValueError):
            pass  # a malformed recorded frame changes nothing more than it already did
        book = self.book
        book.dirty_bids.clear()  # no diff is published from the mirror: keep the sets empty
        book.dirty_asks.clear()
        self.engine.expire_due()

    def _prints(self, rows: list[dict[str, Any]]) -> None:
        engine, when = self.engine, self.engine.now()
        for row in rows:
            side = SIDE_OF.get(row.get("side", ""))
            price = row["price"]
            if side is None or not price > 0:
                continue  # an itayose print (no taker side) takes no resting order
            self.prints += 1
            p = int(price)
            self._drop_stale(-side, p)
            taker = engine.new_synthetic(self.product, side, 0, to_sats(row["size"]), when)
            engine.match(taker, p, when)
        engine.synthetic_filled.clear()  # nobody requotes mirrored liquidity: the next diff says what is left
        engine.flush()

    def _drop_stale(self, side: int, price: int) -> None:
        """A taker printed at ``price``: no mirrored order better than it can still be resting (the
        diff that removed it is late); the bot's own orders there stay and fill (traded through)."""
        m = self.book.side(side)
        if side == SELL:
            stale = list(m.irange(maximum=price, inclusive=(True, False)))
        else:
            stale = list(m.irange(minimum=price, inclusive=(False, True)))
        taken = self._taken[side]
        for p in stale:
            self._set_level(side, p, 0, m[p])
            taken.pop(p, None)

    def _took(self, side: int, price: int, sats: int) -> None:
        taken = self._taken[side]
        taken[price] = taken.get(price, 0) + sats

    def _levels(self, msg: dict[str, Any], *, snapshot: bool) -> None:
        when = self.engine.now()
        set_level = self._set_level
        for side, key in ((BUY, "bids"), (SELL, "asks")):
            m = self.book.side(side)
            get = m.get
            taken = self._taken[side]
            if snapshot:
                target = {int(r["price"]): round(r["size"] * SAT) for r in msg[key]}
                if target:  # levels the snapshot's range no longer shows are gone
                    for p in [p for p in m.irange(min(target), max(target)) if p not in target]:
                        set_level(side, p, 0, m[p], when)
                for p in [p for p in taken if p not in target]:
                    del taken[p]
                items: Any = target.items()
            else:
                items = ((int(r["price"]), round(r["size"] * SAT)) for r in msg[key])
            for p, size in items:
                if taken:
                    took = taken.get(p)
                    if took is not None:
                        if size <= 0:
                            del taken[p]  # the level went: what the bot took from it is forgotten
                        else:
                            size = max(0, size - took)
                lvl = get(p)
                if lvl is not None:
                    orders = lvl.orders
                    if len(orders) == 1 and orders[0].remaining == size and orders[0].account is None:
                        continue  # unchanged (most levels of a snapshot): nothing to do
                set_level(side, p, size, lvl, when)

    def _clear_mirror(self) -> None:
        for side in (BUY, SELL):
            m = self.book.side(side)
            for p in list(m.prices()):
                self._set_level(side, p, 0, m[p])
        # What traded or queued while unseen is unknown: the next snapshot's sizes go ahead of
        # the bot's resting orders (risk-averse), not behind them.
        self._queue_unknown = True
        for taken in self._taken.values():
            taken.clear()

    def _set_level(self, side: int, price: int, target: int, lvl: Level | None, when: Any = None) -> None:
        """Make the mirrored (synthetic) size at ``price`` equal ``target``, the bot's orders untouched."""
        book = self.book
        if lvl is None:
            if target > 0:
                book.add(self.engine.new_synthetic(self.product, side, price, target, when or self.engine.now()))
            return
        orders = lvl.orders
        if len(orders) == 1 and orders[0].account is None:  # the usual level: only the market's
            only: Order = orders[0]
            if target <= 0:
                book.remove(only)
            elif target != only.remaining:
                book.shrink(only, only.remaining - target)  # a negative shrink grows it in place
            return
        current = sum(o.remaining for o in orders if o.account is None)
        delta = target - current
        if delta > 0:  # new size joins the back of the queue, behind the bot's orders
            order = self.engine.new_synthetic(self.product, side, price, delta, when or self.engine.now())
            book.add(order)
            if self._queue_unknown:  # after a gap: ahead of them
                orders.remove(order)
                orders.appendleft(order)
            return
        if delta == 0:
            return
        need = -delta
        snapshot = list(orders)
        first_own = next((i for i, o in enumerate(snapshot) if o.account is not None), len(snapshot))
        ahead = [o for o in snapshot[:first_own]]
        behind = [o for o in snapshot[first_own:] if o.account is None]
        from_ahead = 0
        if self.queue == "probabilistic" and ahead:
            a = sum(o.remaining for o in ahead)
            b = current - a
            from_ahead = round(need * a * a / (a * a + b * b)) if a or b else 0
        else:
            b = sum(o.remaining for o in behind)
            from_ahead = max(0, need - b)  # the level cannot be smaller than the queue ahead of us
        from_ahead = min(from_ahead, need)
        self._take(ahead, from_ahead)
        left = self._take(behind, need - from_ahead)
        if left:
            self._take(ahead, left)

    def _take(self, orders: list[Order], amount: int) -> int:
        """Remove ``amount`` from the back of ``orders`` (resting synthetic orders); returns what was left over."""
        book = self.book
        for o in reversed(orders):
            if amount <= 0:
                break
            if not o.resting:
                continue
            q = min(o.remaining, amount)
            amount -= q
            if q == o.remaining:
                book.remove(o)
            else:
                book.shrink(o, q)
        return amount
