"""Order books of the simulated exchange: price levels in time priority, the per-product market
state around a book, and the order-rate counter behind the natural health.

Owns :class:`Level` (the FIFO queue at one price), :class:`Book` (bids and asks, depth, the prices
changed since the last diff), :class:`Market` (book, last trade, public history, ticker counters) and
:class:`OrderRate`. The engine (:mod:`bfsx.sim.engine`) matches against them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bfsx.bitflyer.products import ProductSpec
from bfsx.sim.model import BUY, SELL, Order


class Level:
    """FIFO queue of orders at one price."""

    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: deque[Order] = deque()
        self.total = 0


class PriceLevels(dict[int, Level]):
    """One side of a book: price -> :class:`Level`, with the prices also kept in a sorted list.

    A book holds hundreds to a few thousand prices, where inserting into a plain list (bisect, a
    C-level memmove) costs less than ``SortedDict``'s Python-level tree: the synthetic flow adds and
    removes ~12 prices per 0.1 s step (measured: SortedDict was ~15 % of the flow's time). Add and
    remove prices only with ``[price] = level`` and ``del [price]`` (what every caller does): the
    other dict mutators would leave :meth:`prices` behind, so they refuse.
    """

    __slots__ = ("_prices",)

    def __init__(self) -> None:
        super().__init__()
        self._prices: list[int] = []

    def __setitem__(self, price: int, level: Level) -> None:
        if price not in self:
            insort(self._prices, price)
        dict.__setitem__(self, price, level)

    def __delitem__(self, price: int) -> None:
        dict.__delitem__(self, price)
        prices = self._prices
        del prices[bisect_left(prices, price)]

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("PriceLevels: set and delete prices with [] only")

    pop = popitem = setdefault = update = clear = _refuse

    def prices(self) -> list[int]:
        """Every price, lowest first (the book's own list: do not change it)."""
        return self._prices

    def peekitem(self, index: int = -1) -> tuple[int, Level]:
        """``(price, level)`` at ``index`` of :meth:`prices` (0 = lowest, -1 = highest)."""
        price = self._prices[index]
        return price, dict.__getitem__(self, price)

    def irange(self, minimum: int | None = None, maximum: int | None = None,
               inclusive: tuple[bool, bool] = (True, True), reverse: bool = False) -> list[int]:
        """The prices within ``[minimum, maximum]`` (each bound in or out by ``inclusive``), lowest
        first or with ``reverse`` highest first; a new list."""
        prices = self._prices
        lo = 0 if minimum is None else (bisect_left if inclusive[0] else bisect_right)(prices, minimum)
        hi = len(prices) if maximum is None else (bisect_right if inclusive[1] else bisect_left)(prices, maximum)
        out = prices[lo:hi]
        if reverse:
            out.reverse()
        return out


class Book:
    """Bids and asks as price -> Level, with the set of prices changed since the last diff."""

    def __init__(self) -> None:
        self.bids = PriceLevels()
        self.asks = PriceLevels()
        self.dirty_bids: set[int] = set()
        self.dirty_asks: set[int] = set()
        self.depth = {BUY: 0, SELL: 0}

    def side(self, side: int) -> PriceLevels:
        return self.bids if side == BUY else self.asks

    def touch(self, side: int) -> int | None:
        """Best price on ``side`` (BUY = best bid)."""
        prices = self.bids._prices if side == BUY else self.asks._prices
        if not prices:
            return None
        return prices[-1] if side == BUY else prices[0]

    def mark(self, side: int, price: int) -> None:
        (self.dirty_bids if side == BUY else self.dirty_asks).add(price)

    def add(self, order: Order) -> None:
        side, price, rem = order.side, order.price, order.remaining
        if side == BUY:
            m, dirty = self.bids, self.dirty_bids
        else:
            m, dirty = self.asks, self.dirty_asks
        lvl = m.get(price)
        if lvl is None:
            lvl = m[price] = Level()
        lvl.orders.append(order)
        lvl.total += rem
        self.depth[side] += rem
        order.resting = True
        dirty.add(price)

    def remove(self, order: Order) -> None:
        side, price, rem = order.side, order.price, order.remaining
        if side == BUY:
            m, dirty = self.bids, self.dirty_bids
        else:
            m, dirty = self.asks, self.dirty_asks
        lvl: Level = m[price]
        orders = lvl.orders
        if orders[-1] is order:  # the newest (a synthetic requote, a cancel just after placing): O(1)
            orders.pop()
        else:
            orders.remove(order)
        lvl.total -= rem
        self.depth[side] -= rem
        order.resting = False
        if not orders:
            del m[price]
        dirty.add(price)

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
        prices = m.prices()
        if depth is not None:
            prices = (prices[-depth:] if depth > 0 else []) if side == BUY else prices[:max(depth, 0)]
        for price in reversed(prices) if side == BUY else prices:
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
