"""Order books of the simulated exchange: price levels in time priority, the per-product market
state around a book, and the order-rate counter behind the natural health.

Owns :class:`Level` (the FIFO queue at one price), :class:`Book` (bids and asks, depth, the prices
changed since the last diff), :class:`Market` (book, last trade, public history, ticker counters) and
:class:`OrderRate`. The engine (:mod:`bfsx.sim.engine`) matches against them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sortedcontainers import SortedDict

from bfsx.bitflyer.products import ProductSpec
from bfsx.sim.model import BUY, SELL, Order


class Level:
    """FIFO queue of orders at one price."""

    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: deque[Order] = deque()
        self.total = 0


class Book:
    """Bids and asks as price -> Level, with the set of prices changed since the last diff."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.dirty_bids: set[int] = set()
        self.dirty_asks: set[int] = set()
        self.depth = {BUY: 0, SELL: 0}

    def side(self, side: int) -> SortedDict:
        return self.bids if side == BUY else self.asks

    def touch(self, side: int) -> int | None:
        """Best price on ``side`` (BUY = best bid)."""
        m = self.side(side)
        if not m:
            return None
        price: int = m.peekitem(-1 if side == BUY else 0)[0]
        return price

    def mark(self, side: int, price: int) -> None:
        (self.dirty_bids if side == BUY else self.dirty_asks).add(price)

    def add(self, order: Order) -> None:
        m = self.side(order.side)
        lvl = m.get(order.price)
        if lvl is None:
            lvl = m[order.price] = Level()
        lvl.orders.append(order)
        lvl.total += order.remaining
        self.depth[order.side] += order.remaining
        order.resting = True
        self.mark(order.side, order.price)

    def remove(self, order: Order) -> None:
        m = self.side(order.side)
        lvl: Level = m[order.price]
        lvl.orders.remove(order)
        lvl.total -= order.remaining
        self.depth[order.side] -= order.remaining
        order.resting = False
        if not lvl.orders:
            del m[order.price]
        self.mark(order.side, order.price)

    def shrink(self, order: Order, by: int) -> None:
        """Reduce a resting order in place (keeps its queue position)."""
        lvl: Level = self.side(order.side)[order.price]
        order.remaining -= by
        lvl.total -= by
        self.depth[order.side] -= by
        self.mark(order.side, order.price)

    def mid(self) -> float | None:
        b, a = self.touch(BUY), self.touch(SELL)
        if b is not None and a is not None:
            return (a + b) / 2
        one = b if a is None else a
        return None if one is None else float(one)

    def levels(self, side: int, depth: int | None = None) -> Iterator[tuple[int, int]]:
        m = self.side(side)
        keys: Iterable[int] = reversed(m.keys()) if side == BUY else m.keys()
        for n, price in enumerate(keys):
            if depth is not None and n >= depth:
                return
            yield price, m[price].total


@dataclass(slots=True)
class Market:
    """Per-product state: the book, last trade, public history and ticker counters."""

    spec: ProductSpec
    book: Book
    history: deque[tuple[int, int, int, int, datetime, str, str]]
    ltp: int = 0
    volume: int = 0
    tick_id: int = 0
    fair_mid: float = 0.0  # the synthetic flow's latent price
    extra: dict[str, Any] = field(default_factory=dict)


class OrderRate:
    """Orders accepted per whole second, for the natural health: two counters, no per-order memory."""

    __slots__ = ("_current", "_previous", "_second")

    def __init__(self) -> None:
        self._second = 0
        self._current = 0
        self._previous = 0

    def hit(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0
            self._current = 0
            self._second = second
        self._current += 1

    def last_second(self, now: float) -> int:
        """Orders in the last whole second before ``now``."""
        second = int(now)
        if second == self._second:
            return self._previous
        return self._current if second == self._second + 1 else 0
