"""The order book, rebuilt from realtime snapshots and diffs.

What bitFlyer sends and how it is read: docs/bitflyer.md#order-book-snapshots-and-diffs.

Layout, chosen by measurement (``bench/feed.py``): per side, a plain list of prices sorted so that
**the touch is the last element** (bids as prices ascending, asks as negated prices ascending)
and a parallel list holding the level dicts as they arrived (``{"price", "size"}``), so no size is
ever copied out of them.

* A diff level is one C ``bisect`` (O(log n)) plus, for a new or removed level, a ``memmove`` of the
  few elements behind it: bitFlyer's diffs touch levels near the touch, so the cost stays flat
  from 100 to 100,000 levels (a ``SortedDict`` costs ~3x more per diff; a dict keyed by price
  pays float hashing on every snapshot level).
* A snapshot is two C-level passes per side (a reversed copy and ``map(itemgetter("price"))``)
  and a sortedness check: no per-level Python code, no hashing, no new objects per level.
* The best bid / ask are cached after every update, so reading them is a plain attribute read;
  top-N views are slices.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import itemgetter, neg
from typing import Literal

from bfsx.bitflyer.messages import Board, PriceLevel

_INF = math.inf
_PRICE = itemgetter("price")
_SIZE = itemgetter("size")

Side = Literal["bids", "asks", "BUY", "SELL"]


def _load(levels: Sequence[PriceLevel], negate: bool) -> tuple[list[float], list[PriceLevel]]:
    """Ascending keys (prices, or negated prices for asks) and the parallel level dicts of one
    snapshot side, touch last.

    Both sides arrive best first, so one reverse puts the touch last. Asks are keyed by their
    negated price so that one ascending ``bisect`` serves both sides (``bisect(key=neg)`` on a
    descending list costs twice as much per search). Order is not guaranteed on the wire, so
    an unsorted side is sorted (and de-duplicated). An Itayose price-0 level sorts to the far end
    of bids and to the touch of asks, where one check finds it. Empty levels are not scanned for
    (bitFlyer never sends them; that scan would cost as much as the load): a zero-size touch is
    dropped by the prune. Prices and sizes must be finite numbers >= 0 (two C-level passes, no
    Python code per level): else ValueError / TypeError, and the caller keeps its book.
    """
    rows = list(reversed(levels))
    prices = list(map(_PRICE, rows))
    if prices:
        # C-level passes: a sum is NaN or infinite when an element is, and raises on a non-number.
        sizes = list(map(_SIZE, rows))
        if not (-_INF < sum(prices) < _INF and -_INF < sum(sizes) < _INF and min(sizes) >= 0):
            raise ValueError("a board level whose price or size is not a finite number, or a negative size")
    keys = list(map(neg, prices)) if negate else prices
    if keys != sorted(keys) or (keys and not keys[-1 if negate else 0]):
        merged = {lv["price"]: lv for lv in rows if lv["price"] and lv["size"]}
        prices = sorted(merged, reverse=negate)
        keys = [-p for p in prices] if negate else prices
        rows = [merged[p] for p in prices]
    if keys and not (keys[-1] < 0 if negate else keys[0] > 0):  # the lowest price, now sorted
        raise ValueError("a board level with a negative price")
    return keys, rows


def _levels_ok(levels: Sequence[PriceLevel]) -> bool:
    """Every diff level has a finite price >= 0 (0 is ignored) and a finite size >= 0 (0 deletes)."""
    for level in levels:  # noqa: SIM110 - a plain loop: all() over a generator costs more per diff
        if not (0 <= level["price"] < _INF and 0 <= level["size"] < _INF):
            return False
    return True


class OrderBook:
    """One product's book. Feed it :meth:`apply_snapshot` and :meth:`apply_diff` payloads.

    ``best_bid`` / ``best_ask`` / ``mid_price`` are ``0.0`` while the book is empty or not
    :attr:`ready` (no snapshot yet since start, :meth:`clear` or a reconnect).
    """

    __slots__ = ("_ask_keys", "_ask_rows", "_bid_keys", "_bid_rows", "_view_cache", "best_ask",
                 "best_bid", "diffs", "ready", "rejected", "snapshots", "wire_mid")

    def __init__(self) -> None:
        self._bid_keys: list[float] = []  # prices ascending: best bid last
        self._bid_rows: list[PriceLevel] = []  # level dicts, same order
        self._ask_keys: list[float] = []  # negated prices ascending: best ask (as -price) last
        self._ask_rows: list[PriceLevel] = []
        self._view_cache: dict[tuple[str, int], list[tuple[float, float]]] = {}
        #: Best bid price (0.0 when unknown). Updated on every message: read it freely.
        self.best_bid = 0.0
        #: Best ask price (0.0 when unknown).
        self.best_ask = 0.0
        #: ``mid_price`` as the exchange sent it on the last board message.
        self.wire_mid = 0.0
        #: False until the first snapshot, and again after :meth:`clear`. Diffs are ignored meanwhile.
        self.ready = False
        self.snapshots = 0
        self.diffs = 0
        #: Malformed snapshots and diffs dropped whole (see :meth:`apply_snapshot`).
        self.rejected = 0

    # ------------------------------------------------------------------ updates
    def apply_snapshot(self, msg: Board) -> bool:
        """Reset the book to a full snapshot (``lightning_board_snapshot_`` or REST getboard).

        A malformed snapshot (not the getboard shape; a price, size or mid that is not a finite
        number, a negative price or size) changes nothing and returns False (counted in
        :attr:`rejected`)."""
        try:
            mid = msg["mid_price"]
            bids = _load(msg["bids"], False)
            asks = _load(msg["asks"], True)
            ok = 0 <= mid < _INF
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            self.rejected += 1
            return False
        self._bid_keys, self._bid_rows = bids
        self._ask_keys, self._ask_rows = asks
        self.wire_mid = mid
        self.ready = True
        self.snapshots += 1
        self._prune(self.wire_mid)
        return True

    def apply_diff(self, msg: Board) -> bool:
        """Apply a ``lightning_board_`` diff: size is the new total, 0 deletes, price 0 is ignored.

        Ignored while not :attr:`ready` (diffs start before the first snapshot). A malformed diff
        (as for :meth:`apply_snapshot`) changes nothing and returns False (counted in :attr:`rejected`).
        """
        if not self.ready:
            return False
        try:
            ok = 0 <= msg["mid_price"] < _INF and _levels_ok(msg["bids"]) and _levels_ok(msg["asks"])
        except (TypeError, KeyError):
            ok = False
        if not ok:
            self.rejected += 1
            return False
        keys = self._bid_keys
        rows = self._bid_rows
        for level in msg["bids"]:
            price = level["price"]
            i = bisect_right(keys, price)
            if i and keys[i - 1] == price:  # existing level
                if level["size"]:
                    rows[i - 1] = level
                else:
                    del keys[i - 1]
                    del rows[i - 1]
            elif price and level["size"]:
                keys.insert(i, price)
                rows.insert(i, level)
        keys = self._ask_keys
        rows = self._ask_rows
        for level in msg["asks"]:
            price = -level["price"]
            i = bisect_right(keys, price)
            if i and keys[i - 1] == price:
                if level["size"]:
                    rows[i - 1] = level
                else:
                    del keys[i - 1]
                    del rows[i - 1]
            elif price and level["size"]:
                keys.insert(i, price)
                rows.insert(i, level)
        self.wire_mid = mid = msg["mid_price"]
        self.diffs += 1
        # _prune inlined: this runs ~10 times a second and is the book's hot path
        if self._view_cache:
            self._view_cache.clear()
        while keys and ((mid and keys[-1] > -mid) or not rows[-1]["size"]):  # an ask below mid
            keys.pop()
            rows.pop()
        self.best_ask = -keys[-1] if keys else 0.0
        keys = self._bid_keys
        rows = self._bid_rows
        while keys and ((mid and keys[-1] > mid) or not rows[-1]["size"]):
            keys.pop()
            rows.pop()
        self.best_bid = keys[-1] if keys else 0.0
        return True

    def _prune(self, mid: float) -> None:
        """Drop levels on the wrong side of the exchange's mid price, then cache the touch.

        Diffs can miss deletions, leaving stale levels that cross the real touch; every diff's
        ``mid_price`` matches the true book, so a bid *above* it or an ask *below* it is stale.
        The comparisons are strict on purpose: a real best bid is ≤ mid and a real best ask ≥ mid,
        and with whole-yen prices a rounded mid can equal either touch (bid 100 / ask 101 → 100 or
        101), so pruning "at mid" as pybotters does for asks could delete a live best ask.
        """
        if self._view_cache:
            self._view_cache.clear()
        keys = self._bid_keys
        rows = self._bid_rows
        while keys and ((mid and keys[-1] > mid) or not rows[-1]["size"]):
            keys.pop()
            rows.pop()
        self.best_bid = keys[-1] if keys else 0.0
        keys = self._ask_keys
        rows = self._ask_rows
        while keys and ((mid and keys[-1] > -mid) or not rows[-1]["size"]):  # an ask below mid
            keys.pop()
            rows.pop()
        self.best_ask = -keys[-1] if keys else 0.0

    def clear(self) -> None:
        """Forget every level and wait for the next snapshot (used on a reconnect: no stale levels)."""
        self._bid_keys = []
        self._bid_rows = []
        self._ask_keys = []
        self._ask_rows = []
        self._view_cache.clear()
        self.best_bid = self.best_ask = self.wire_mid = 0.0
        self.ready = False

    # ------------------------------------------------------------------ reads
    @property
    def mid_price(self) -> float:
        """(best bid + best ask) / 2 of this book; 0.0 when a side is empty."""
        bid = self.best_bid
        ask = self.best_ask
        return (bid + ask) / 2 if bid and ask else 0.0

    @property
    def spread(self) -> float:
        """best ask − best bid; 0.0 when a side is empty."""
        bid = self.best_bid
        ask = self.best_ask
        return ask - bid if bid and ask else 0.0

    @property
    def best_bid_size(self) -> float:
        return self._bid_rows[-1]["size"] if self._bid_rows else 0.0

    @property
    def best_ask_size(self) -> float:
        return self._ask_rows[-1]["size"] if self._ask_rows else 0.0

    def bids(self, n: int | None = None) -> list[tuple[float, float]]:
        """Top ``n`` bids (all when None) as ``(price, size)``, best first. O(n); cached until the next update."""
        return self._view("b", self._bid_keys, self._bid_rows, n)

    def asks(self, n: int | None = None) -> list[tuple[float, float]]:
        """Top ``n`` asks (all when None) as ``(price, size)``, best first. O(n); cached until the next update."""
        return self._view("a", self._ask_keys, self._ask_rows, n)

    def _view(self, tag: str, keys: list[float], rows: list[PriceLevel], n: int | None) -> list[tuple[float, float]]:
        cached = self._view_cache.get((tag, n or 0))
        if cached is None:
            start = -n if n else 0
            top = keys[start:][::-1]
            prices = map(neg, top) if tag == "a" else top
            cached = list(zip(prices, map(_SIZE, rows[start:][::-1]), strict=True))
            self._view_cache[(tag, n or 0)] = cached
        return cached.copy()

    def size_at(self, side: Side, price: float) -> float:
        """Size resting at ``price`` on a side ("bids"/"BUY" or "asks"/"SELL"); 0.0 if none."""
        if side in ("bids", "BUY"):
            keys, rows = self._bid_keys, self._bid_rows
            i = bisect_right(keys, price)
        else:
            keys, rows = self._ask_keys, self._ask_rows
            price = -price
            i = bisect_right(keys, price)
        return float(rows[i - 1]["size"]) if i and keys[i - 1] == price else 0.0

    def depth(self, side: Side, price_limit: float) -> float:
        """Total size on a side from the touch down to ``price_limit`` inclusive (bids ≥ it, asks ≤ it)."""
        if side in ("bids", "BUY"):
            i = bisect_left(self._bid_keys, price_limit)
            return float(sum(map(_SIZE, self._bid_rows[i:])))
        i = bisect_left(self._ask_keys, -price_limit)
        return float(sum(map(_SIZE, self._ask_rows[i:])))

    def __len__(self) -> int:
        """Number of levels on both sides."""
        return len(self._bid_keys) + len(self._ask_keys)

    @property
    def bid_levels(self) -> int:
        return len(self._bid_keys)

    @property
    def ask_levels(self) -> int:
        return len(self._ask_keys)

    def to_board(self) -> Board:
        """The whole book in getboard's shape (bids descending, asks ascending)."""
        return {
            "mid_price": self.mid_price,
            "bids": [{"price": p, "size": s} for p, s in self.bids()],
            "asks": [{"price": p, "size": s} for p, s in self.asks()],
        }

    def __repr__(self) -> str:
        return (f"OrderBook(ready={self.ready}, bid={self.best_bid}, ask={self.best_ask}, "
                f"levels={len(self._bid_keys)}/{len(self._ask_keys)})")
