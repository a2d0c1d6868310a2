"""Fuzzing the ``market/`` consumers of public frames: board snapshots and diffs, executions, tickers.

Messages go in through :class:`MarketFeed`'s own channel handlers, as ``dispatch_frame`` hands them
over. Properties: no handler raises; the book never holds a price that is not a finite number > 0
or a size that is not a finite number >= 0, and stays sorted; a malformed board message changes
nothing; valid snapshots and diffs give the book a naive dict model gives; malformed prints are
dropped and the valid ones reach the totals and the candles exactly once; ticker reads never
raise and are finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from bfsx.bitflyer import channels
from bfsx.market import MarketFeed, OrderBook

P = "FX_BTC_JPY"


class _Source:
    """The two methods MarketFeed needs from a realtime client."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any], None]] = {}

    def subscribe(self, channel: str, handler: Callable[[Any], None]) -> None:
        self.handlers[channel] = handler

    def on_connect(self, cb: Any) -> None:
        pass


def _feed() -> tuple[MarketFeed, dict[str, Callable[[Any], None]]]:
    src = _Source()
    feed = MarketFeed(P, src, candle_clock=False)
    h = src.handlers
    return feed, {"snapshot": h[channels.board_snapshot(P)], "diff": h[channels.board(P)],
                  "executions": h[channels.executions(P)], "ticker": h[channels.ticker(P)]}


_chars = st.characters(exclude_categories=("Cs",))
junk = st.none() | st.booleans() | st.text(_chars, max_size=6) | st.lists(st.integers(), max_size=2) | st.just({})
bad_numbers = st.sampled_from([-1, -0.5, -1e-9, math.inf, -math.inf, math.nan, "100", "nan", None, [], {}, -(2**70)])
any_number = (st.integers(-(2**64), 2**64) | st.floats() | bad_numbers)
# Valid values: whole-yen prices in a small range (so diffs hit existing levels), sizes of 1e-8 steps.
prices = st.integers(1, 60) | st.integers(1, 60).map(float)
sizes = st.integers(1, 300_000_000).map(lambda n: n / 1e8)


def _levels(price: st.SearchStrategy[Any], size: st.SearchStrategy[Any], unique: bool) -> st.SearchStrategy[Any]:
    lv = st.fixed_dictionaries({"price": price, "size": size})
    return st.lists(lv, max_size=12, unique_by=lambda d: d["price"]) if unique else st.lists(lv, max_size=12)


@st.composite
def snapshots(draw: st.DrawFn) -> dict[str, Any]:
    """A valid snapshot: unique prices per side, best first or shuffled, maybe an Itayose price 0."""
    bids = draw(_levels(prices, sizes, unique=True))
    asks = draw(_levels(prices, sizes, unique=True))
    if draw(st.booleans()):
        bids.sort(key=lambda lv: -lv["price"])
        asks.sort(key=lambda lv: lv["price"])
    if draw(st.integers(0, 5)) == 0:
        (bids if draw(st.booleans()) else asks).append({"price": 0, "size": draw(sizes)})
    return {"mid_price": draw(st.integers(0, 61) | st.floats(0, 61)), "bids": bids, "asks": asks}


def diffs() -> st.SearchStrategy[dict[str, Any]]:
    size = sizes | st.just(0) | st.just(0.0)
    price = prices | st.just(0)
    return st.fixed_dictionaries({"mid_price": st.integers(0, 61) | st.floats(0, 61),
                                  "bids": _levels(price, size, unique=False), "asks": _levels(price, size, unique=False)})


@st.composite
def spoiled(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A board message made malformed in one place."""
    msg = draw(base)
    where = draw(st.sampled_from(["mid", "side", "level", "price", "size", "missing", "whole"]))
    if where == "whole":
        return draw(junk | st.lists(st.fixed_dictionaries({"price": prices, "size": sizes}), max_size=3))
    if where == "mid":
        msg["mid_price"] = draw(bad_numbers)
    elif where == "missing":
        msg.pop(draw(st.sampled_from(["mid_price", "bids", "asks"])))
    elif where == "side":
        msg[draw(st.sampled_from(["bids", "asks"]))] = draw(junk.filter(lambda v: v not in ([], "", {})) | st.integers())
    else:
        side = msg[draw(st.sampled_from(["bids", "asks"]))]
        level: Any = {"price": draw(prices), "size": draw(sizes)}
        if where == "level":
            level = draw(junk | st.fixed_dictionaries({"price": prices}) | st.fixed_dictionaries({"size": sizes}))
        else:
            level[where] = draw(bad_numbers.filter(lambda v: v is not None or where == "size") | st.none())
        side.insert(draw(st.integers(0, len(side))), level)
    return msg


def _book_state(book: OrderBook) -> Any:
    return (book.ready, book.wire_mid, book.bids(), book.asks(), book.best_bid, book.best_ask, book.snapshots,
            book.diffs)


def _check_invariants(book: OrderBook) -> None:
    for side, levels in (("bids", book.bids()), ("asks", book.asks())):
        ps = [p for p, _ in levels]
        assert ps == sorted(ps, reverse=side == "bids"), side
        for p, s in levels:
            assert not isinstance(p, bool) and isinstance(p, int | float) and 0 < p < math.inf, (side, p)
            assert isinstance(s, int | float) and 0 <= s < math.inf, (side, s)
    for v in (book.best_bid, book.best_ask, book.mid_price, book.spread, book.best_bid_size, book.best_ask_size,
              book.wire_mid):
        assert math.isfinite(v)
    assert book.best_bid == (book.bids()[0][0] if book.bids() else 0.0)
    assert book.best_ask == (book.asks()[0][0] if book.asks() else 0.0)
    assert math.isfinite(book.depth("bids", 0)) and math.isfinite(book.depth("asks", math.inf))


# ---------------------------------------------------------------------------------------- board

_chaos_levels = st.lists(st.fixed_dictionaries({"price": any_number, "size": any_number}) | junk, max_size=8)
_chaos = st.fixed_dictionaries({"mid_price": any_number, "bids": _chaos_levels, "asks": _chaos_levels}) | junk


@example(msgs=[("snapshot", {"mid_price": 0, "bids": [{"price": -5, "size": 1}], "asks": []})])
@example(msgs=[("snapshot", {"mid_price": 0, "bids": [{"price": 10, "size": -1.0}], "asks": []})])
@example(msgs=[("snapshot", {"mid_price": 0, "bids": [], "asks": []}),
               ("diff", {"mid_price": 0, "bids": [{"price": math.inf, "size": 1}], "asks": []})])
@example(msgs=[("snapshot", {"mid_price": 0, "bids": [], "asks": []}),
               ("diff", {"mid_price": 0, "bids": [{"price": 5, "size": "1"}], "asks": []})])
@given(msgs=st.lists(st.tuples(st.sampled_from(["snapshot", "diff"]), _chaos | snapshots() | diffs()), max_size=12))
def test_board_handlers_never_raise_and_the_book_stays_sane(msgs: list[tuple[str, Any]]) -> None:
    feed, h = _feed()
    for kind, msg in msgs:
        h[kind](msg)
        _check_invariants(feed.book)


@given(steps=st.lists(st.tuples(st.booleans(), st.booleans(), snapshots(), diffs()), min_size=1, max_size=12),
       bad=st.data())
def test_malformed_board_messages_change_nothing(steps: list[tuple[bool, bool, Any, Any]], bad: st.DataObject) -> None:
    feed, h = _feed()
    book = feed.book
    for good, is_snapshot, snap, diff in steps:
        kind = "snapshot" if is_snapshot else "diff"
        if good:
            h[kind](snap if is_snapshot else diff)
            continue
        msg = bad.draw(spoiled(snapshots() if is_snapshot else diffs()))
        before, rejected = _book_state(book), book.rejected
        h[kind](msg)
        assert _book_state(book) == before, msg
        assert book.rejected == rejected + (1 if is_snapshot or book.ready else 0)


def _prune(bids: dict[float, float], asks: dict[float, float], mid: float) -> None:
    if mid:
        for p in [p for p in bids if p > mid]:
            del bids[p]
        for p in [p for p in asks if p < mid]:
            del asks[p]


@given(first=snapshots(), steps=st.lists(st.tuples(st.integers(0, 7), snapshots(), diffs()), max_size=15))
def test_valid_snapshots_and_diffs_match_a_dict_model(first: Any, steps: list[tuple[int, Any, Any]]) -> None:
    feed, h = _feed()
    book = feed.book
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for n, snap, diff in [(0, first, None), *steps]:
        if n == 0:  # one snapshot in eight
            h["snapshot"](snap)
            bids = {lv["price"]: lv["size"] for lv in snap["bids"] if lv["price"]}
            asks = {lv["price"]: lv["size"] for lv in snap["asks"] if lv["price"]}
            _prune(bids, asks, snap["mid_price"])
        else:
            h["diff"](diff)
            for side, model in (("bids", bids), ("asks", asks)):
                for lv in diff[side]:
                    if not lv["price"]:
                        continue
                    if lv["size"]:
                        model[lv["price"]] = lv["size"]
                    else:
                        model.pop(lv["price"], None)
            _prune(bids, asks, diff["mid_price"])
        assert book.ready and book.rejected == 0
        assert book.bids() == sorted(bids.items(), reverse=True)
        assert book.asks() == sorted(asks.items())
        assert book.best_bid == max(bids, default=0.0) and book.best_ask == min(asks, default=0.0)
        assert book.to_board()["bids"] == [{"price": p, "size": s} for p, s in sorted(bids.items(), reverse=True)]


# ----------------------------------------------------------------------------------- executions

_dates = st.builds(lambda m, s, frac, z: f"2026-09-23T03:{m:02d}:{s:02d}{frac}{z}", st.integers(30, 33),
                   st.integers(0, 59), st.sampled_from(["", ".1", ".087", ".0873222"]), st.sampled_from(["", "Z"]))
_ids = st.integers(1, 2**62)


def prints() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "id": _ids, "side": st.sampled_from(["BUY", "SELL", ""]), "price": prices, "size": sizes, "exec_date": _dates,
        "buy_child_order_acceptance_id": st.just("JRF20260923-033127-000001"),
        "sell_child_order_acceptance_id": st.just("JRF20260923-033127-000002"),
    })


_BAD_PRINT: dict[str, list[Any]] = {
    "price": [0, -1, math.inf, math.nan, "5", None, [], True and "x"],
    "size": [0, 0.0, -0.1, math.inf, math.nan, "0.1", None, {}],
    "side": ["buy", None, 1, ["BUY"], "BOTH"],
    "id": ["12", 1.5, None, [1]],
    "exec_date": ["", "yesterday", "2026-13-45T99:99:99Z", "2026-09-23T03:31:27.1e9Z", "2026-09-23T03:31:27.0_1",
                  "2026-09-23 03:31:27", None, 20260923, "9999-99-99T00:00:00"],
}


@st.composite
def bad_prints(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 6)) == 0:
        return draw(junk | st.integers())
    e = draw(prints())
    key = draw(st.sampled_from(sorted(_BAD_PRINT)))
    if draw(st.integers(0, 4)) == 0:
        e.pop(key)
    else:
        e[key] = draw(st.sampled_from(_BAD_PRINT[key]))
    return e


_tagged = prints().map(lambda e: (True, e)) | bad_prints().map(lambda e: (False, e))


@example(batches=[[(False, {"id": 1, "side": "BUY", "price": 5, "size": 0.1, "exec_date": "2026-09-23T03:31:27.1e9Z"}),
                   (True, {"id": 2, "side": "BUY", "price": 5, "size": 0.1, "exec_date": "2026-09-23T03:31:27Z"})]])
@example(batches=[[(False, {"id": 1, "side": "SELL", "price": "5", "size": 0.1, "exec_date": "2026-09-23T03:31:27Z"})]])
@given(batches=st.lists(st.lists(_tagged, max_size=6), max_size=10))
def test_malformed_prints_are_dropped_and_valid_ones_counted_once(batches: list[list[tuple[bool, Any]]]) -> None:
    feed, h = _feed()
    whole = feed.add_candles(1.0, 10_000)
    half = feed.add_candles(0.5, 10_000)
    seen: list[Any] = []
    feed.on_executions.append(lambda batch: seen.extend(batch))
    valid: list[dict[str, Any]] = []
    for batch in batches:
        h["executions"]([e for _, e in batch])
        valid.extend(e for ok, e in batch if ok)
    ex = feed.executions
    assert list(ex.prints) == valid == seen
    assert ex.count == len(valid)
    vol = sum((Decimal(repr(e["size"])) for e in valid), Decimal(0))
    assert math.isclose(ex.volume, float(vol), rel_tol=1e-9, abs_tol=1e-12)
    assert ex.ltp == (valid[-1]["price"] if valid else 0.0)
    for builder in (whole, half):
        counted = sum(c.count for c in builder.candles) + (builder.current.count if builder.current else 0)
        assert counted + builder.late == len(valid)
        for c in [*builder.candles, *([builder.current] if builder.current else [])]:
            assert all(math.isfinite(v) for v in (c.open, c.high, c.low, c.close, c.volume, c.time))


# ---------------------------------------------------------------------------------------- ticker

_ticker_keys = ["ltp", "best_bid", "best_ask", "volume", "state", "timestamp", "product_code", "tick_id"]


@given(msgs=st.lists(st.dictionaries(st.sampled_from(_ticker_keys), any_number | junk, max_size=8) | junk, max_size=5))
def test_ticker_reads_never_raise_and_are_finite(msgs: list[Any]) -> None:
    feed, h = _feed()
    for msg in msgs:
        h["ticker"](msg)
        t = feed.ticker
        for v in (t.ltp, t.best_bid, t.best_ask, t.volume):
            assert type(v) is float and math.isfinite(v)
        assert type(t.state) is str and type(t.timestamp) is str
        assert t.age(now=0.0) == t.age(now=0.0)
