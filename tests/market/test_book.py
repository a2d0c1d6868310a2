"""OrderBook against an independent dict-based reference, on realistic bitFlyer board messages."""

from __future__ import annotations

import random
from operator import neg
from typing import Any

import pytest
from sortedcontainers import SortedDict, SortedList

from bfsx.market import OrderBook

Level = dict[str, float]


def lv(price: float, size: float) -> Level:
    return {"price": float(price), "size": size}


def board(mid: float, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> dict[str, Any]:
    return {"mid_price": float(mid), "bids": [lv(p, s) for p, s in bids], "asks": [lv(p, s) for p, s in asks]}


class Reference:
    """The book semantics of docs/bitflyer.md#order-book-snapshots-and-diffs, written the obvious
    way on SortedDicts."""

    def __init__(self) -> None:
        self.bids = SortedDict()
        self.asks = SortedDict()
        self.ready = False
        self.pruned = 0

    def snapshot(self, msg: dict[str, Any]) -> None:
        self.bids = SortedDict({x["price"]: x["size"] for x in msg["bids"] if x["price"] and x["size"]})
        self.asks = SortedDict({x["price"]: x["size"] for x in msg["asks"] if x["price"] and x["size"]})
        self.ready = True
        self.prune(msg["mid_price"])

    def diff(self, msg: dict[str, Any]) -> None:
        if not self.ready:
            return
        for side, book in (("bids", self.bids), ("asks", self.asks)):
            for x in msg[side]:
                if not x["price"]:
                    continue
                if x["size"]:
                    book[x["price"]] = x["size"]
                else:
                    book.pop(x["price"], None)
        self.prune(msg["mid_price"])

    def prune(self, mid: float) -> None:
        while self.bids and self.bids.peekitem(-1)[0] > mid:
            self.bids.popitem(-1)
            self.pruned += 1
        while self.asks and self.asks.peekitem(0)[0] < mid:
            self.asks.popitem(0)
            self.pruned += 1

    def views(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return list(reversed(self.bids.items())), list(self.asks.items())


class Market:
    """A random but bitFlyer-like book: whole-yen prices, diffs of 3-5 levels near the touch,
    deletions, new levels, touch moves, and now and then a missed deletion (stale level)."""

    def __init__(self, seed: int, levels: int) -> None:
        self.rng = random.Random(seed)
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        p = 9_999_900
        for _ in range(levels):
            self.bids[float(p)] = self.size()
            p -= self.rng.randint(1, 30)
        p = 10_000_100
        for _ in range(levels):
            self.asks[float(p)] = self.size()
            p += self.rng.randint(1, 30)
        self.stale = 0
        # prices ordered from the touch outwards, for picking levels near the touch
        self.order = {"bids": SortedList(self.bids, key=neg), "asks": SortedList(self.asks)}

    def size(self) -> float:
        return round(self.rng.uniform(0.001, 2.0), 8)

    def mid(self) -> float:
        return (self.order["bids"][0] + self.order["asks"][0]) / 2

    def snapshot(self) -> dict[str, Any]:
        return board(self.mid(), sorted(self.bids.items(), reverse=True), sorted(self.asks.items()))

    def diff(self) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}
        for _ in range(rng.randint(3, 5)):
            side = rng.choice(("bids", "asks"))
            book = self.bids if side == "bids" else self.asks
            ordered = self.order[side]
            r = rng.random()
            if r < 0.04 and len(book) > 20:  # a sweep: the touch levels go, the other side steps in
                swept = list(ordered[: rng.randint(1, 4)])
                for price in swept:
                    ordered.remove(price)
                    del book[price]
                    if rng.random() < 0.3:
                        self.stale += 1  # a missed deletion: once the other side steps over it, it crosses
                    else:
                        out[side][price] = 0.0
                opposite = "asks" if side == "bids" else "bids"
                if swept[-1] not in (self.asks if side == "bids" else self.bids):
                    self.order[opposite].add(swept[-1])
                new = self.asks if side == "bids" else self.bids
                new[swept[-1]] = out[opposite][swept[-1]] = self.size()
            elif r < 0.3 and len(book) > 5:
                index = min(int(rng.expovariate(0.3)), len(ordered) - 1)
                price = ordered[index]
                del book[price]
                ordered.remove(price)
                if index or rng.random() > 0.1:
                    out[side][price] = 0.0
                else:  # the deletion of the touch is missed: a stale level that mid_price exposes
                    self.stale += 1
            elif r < 0.55:  # a new level, sometimes improving the touch
                step = rng.randint(-3, 40)
                price = float(ordered[0] - step if side == "bids" else ordered[0] + step)
                if (side == "bids" and price >= self.order["asks"][0]) or (side == "asks" and price <= self.order["bids"][0]):
                    continue
                if price not in book:
                    ordered.add(price)
                book[price] = out[side][price] = self.size()
            else:
                price = ordered[min(int(rng.expovariate(0.2)), len(ordered) - 1)]
                book[price] = out[side][price] = self.size()
        msg = board(self.mid(), list(out["bids"].items()), list(out["asks"].items()))
        rng.shuffle(msg["bids"])  # order is not guaranteed on the wire
        return msg


def assert_same(book: OrderBook, ref: Reference) -> None:
    bids, asks = ref.views()
    assert book.bids() == bids
    assert book.asks() == asks
    assert book.best_bid == (bids[0][0] if bids else 0.0)
    assert book.best_ask == (asks[0][0] if asks else 0.0)


def test_snapshot_and_diffs_match_reference() -> None:
    market = Market(seed=3, levels=1000)
    book, ref = OrderBook(), Reference()
    for msg in (market.snapshot(),):
        book.apply_snapshot(msg)
        ref.snapshot(msg)
    assert book.ready and book.bid_levels == 1000 and book.ask_levels == 1000
    for i in range(3000):
        if i % 500 == 499:
            msg = market.snapshot()
            book.apply_snapshot(msg)
            ref.snapshot(msg)
        msg = market.diff()
        book.apply_diff(msg)
        ref.diff(msg)
        bids, asks = ref.views()
        assert (book.best_bid, book.best_ask) == (bids[0][0], asks[0][0])
        if i % 50 == 0:
            assert_same(book, ref)
    assert_same(book, ref)
    assert book.diffs == 3000 and book.snapshots == 7
    assert market.stale > 10 and ref.pruned > 5  # the stream did exercise the crossing prune


def test_diffs_before_the_first_snapshot_are_ignored() -> None:
    book = OrderBook()
    book.apply_diff(board(100.5, [(100, 1.0)], [(101, 1.0)]))
    assert not book.ready
    assert len(book) == 0 and book.best_bid == 0.0 and book.mid_price == 0.0
    book.apply_snapshot(board(100.5, [(100, 2.0), (99, 1.0)], [(101, 3.0)]))
    assert book.ready and book.bids() == [(100.0, 2.0), (99.0, 1.0)] and book.asks() == [(101.0, 3.0)]


def test_size_is_the_new_total_and_zero_deletes() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0), (99, 1.0), (98, 1.0)], [(101, 1.0), (102, 1.0)]))
    book.apply_diff(board(100.5, [(99, 0.25), (98, 0.0), (97, 4.0)], [(102, 0.0), (103, 0.5)]))
    assert book.bids() == [(100.0, 1.0), (99.0, 0.25), (97.0, 4.0)]
    assert book.asks() == [(101.0, 1.0), (103.0, 0.5)]
    # deleting a level that is not there changes nothing
    book.apply_diff(board(100.5, [(42, 0.0)], [(4242, 0.0)]))
    assert book.bids(2) == [(100.0, 1.0), (99.0, 0.25)] and book.ask_levels == 2
    # deleting the touch moves it
    book.apply_diff(board(100.0, [(100, 0.0)], [(101, 0.0)]))
    assert (book.best_bid, book.best_ask) == (99.0, 103.0)
    assert book.best_bid_size == 0.25 and book.best_ask_size == 0.5
    assert book.spread == 4.0 and book.mid_price == 101.0


def test_itayose_price_zero_levels_are_ignored() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0), (0, 5.0)], [(0, 3.0), (101, 1.0), (102, 2.0)]))
    assert book.bids() == [(100.0, 1.0)] and book.asks() == [(101.0, 1.0), (102.0, 2.0)]
    book.apply_diff(board(100.5, [(0, 7.0)], [(0, 1.0), (0, 0.0)]))
    assert book.bids() == [(100.0, 1.0)] and book.asks() == [(101.0, 1.0), (102.0, 2.0)]
    assert book.best_ask == 101.0


def test_levels_crossing_mid_are_pruned() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0), (99, 1.0)], [(101, 1.0), (102, 1.0)]))
    # the exchange moved up; the deletion of our old best ask 101 was missed, a new bid appeared
    book.apply_diff(board(103.5, [(103, 1.0)], [(104, 1.0)]))
    assert book.best_ask == 104.0 and book.asks() == [(104.0, 1.0)]
    assert book.best_bid == 103.0
    # and down: stale bids above the new mid go
    book.apply_diff(board(98.5, [(98, 2.0)], [(99, 1.0)]))
    assert book.bids() == [(98.0, 2.0)]
    assert book.asks() == [(99.0, 1.0), (104.0, 1.0)]
    assert book.wire_mid == 98.5


def test_touch_equal_to_a_rounded_mid_is_kept() -> None:
    """bid 100 / ask 101: a mid rounded to either touch must not delete it (strict prune)."""
    for mid in (100.0, 101.0, 100.5):
        book = OrderBook()
        book.apply_snapshot(board(mid, [(100, 1.0), (99, 1.0)], [(101, 1.0), (102, 1.0)]))
        book.apply_diff(board(mid, [(99, 2.0)], [(102, 2.0)]))
        assert (book.best_bid, book.best_ask) == (100.0, 101.0), mid


def test_every_snapshot_resets_the_book() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0), (90, 1.0)], [(101, 1.0), (110, 1.0)]))
    book.apply_diff(board(100.5, [(95, 1.0)], [(105, 1.0)]))
    book.apply_snapshot(board(200.5, [(200, 1.0)], [(201, 1.0)]))
    assert book.bids() == [(200.0, 1.0)] and book.asks() == [(201.0, 1.0)] and len(book) == 2


def test_unsorted_snapshot_is_sorted() -> None:
    rng = random.Random(5)
    bids = [(float(1000 - i), 1.0 + i) for i in range(200)]
    asks = [(float(1001 + i), 1.0 + i) for i in range(200)]
    rng.shuffle(bids)
    rng.shuffle(asks)
    book = OrderBook()
    book.apply_snapshot(board(1000.5, bids, asks))
    assert book.bids() == sorted(bids, reverse=True)
    assert book.asks() == sorted(asks)
    book.apply_diff(board(1000.5, [(1000, 0.0)], [(1001, 0.0), (1001.5, 0.1)]))
    assert book.best_bid == 999.0 and book.best_ask == 1001.5


def test_views_depth_and_size_at() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0), (99, 2.0), (98, 3.0)], [(101, 0.5), (102, 1.5), (105, 2.5)]))
    assert book.bids(2) == [(100.0, 1.0), (99.0, 2.0)]
    assert book.asks(1) == [(101.0, 0.5)]
    assert book.bids(10) == book.bids() == [(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)]
    view = book.asks(2)
    view.append((1.0, 1.0))  # a caller's copy: the book is untouched
    assert book.asks(2) == [(101.0, 0.5), (102.0, 1.5)]
    assert book.depth("bids", 99) == 3.0 and book.depth("BUY", 98) == 6.0 and book.depth("bids", 100.5) == 0.0
    assert book.depth("asks", 102) == 2.0 and book.depth("SELL", 104) == 2.0 and book.depth("asks", 110) == 4.5
    assert book.size_at("bids", 99) == 2.0 and book.size_at("SELL", 105) == 2.5 and book.size_at("asks", 103) == 0.0
    assert book.to_board() == {"mid_price": 100.5,
                               "bids": [lv(100, 1.0), lv(99, 2.0), lv(98, 3.0)],
                               "asks": [lv(101, 0.5), lv(102, 1.5), lv(105, 2.5)]}
    book.apply_diff(board(100.5, [(100, 4.0)], []))
    assert book.bids(1) == [(100.0, 4.0)]  # views follow updates (cache invalidated)


def test_clear_forgets_everything_until_the_next_snapshot() -> None:
    book = OrderBook()
    book.apply_snapshot(board(100.5, [(100, 1.0)], [(101, 1.0)]))
    book.clear()
    assert not book.ready and len(book) == 0 and book.best_bid == book.best_ask == 0.0
    book.apply_diff(board(100.5, [(100, 1.0)], [(101, 1.0)]))
    assert len(book) == 0
    book.apply_snapshot(board(100.5, [(100, 1.0)], [(101, 1.0)]))
    assert book.ready and len(book) == 2


@pytest.mark.parametrize("levels", [10, 100_000])
def test_big_and_small_books(levels: int) -> None:
    market = Market(seed=levels, levels=levels)
    book, ref = OrderBook(), Reference()
    msg = market.snapshot()
    book.apply_snapshot(msg)
    ref.snapshot(msg)
    for _ in range(500):
        msg = market.diff()
        book.apply_diff(msg)
        ref.diff(msg)
    bids, asks = ref.views()
    assert book.bids(50) == bids[:50] and book.asks(50) == asks[:50]
    assert book.bid_levels == len(bids) and book.ask_levels == len(asks)
    assert book.depth("bids", bids[-1][0]) == pytest.approx(sum(s for _, s in bids))
