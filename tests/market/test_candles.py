"""CandleBuilder against candles computed independently from the same prints."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bfsx.bitflyer import timestamps
from bfsx.market import Candle, CandleBuilder

START = datetime(2026, 9, 23, 3, 31, 27, 87322, tzinfo=UTC)


def make_prints(seed: int, n_batches: int) -> list[list[dict[str, Any]]]:
    """Execution batches as the realtime API sends them: ids increasing, 7-digit Z dates, quiet
    stretches of several seconds, batches that straddle a second, Itayose prints with side ""."""
    rng = random.Random(seed)
    t = START
    price = 10_000_000.0
    next_id = 2_652_079_303
    batches = []
    for _ in range(n_batches):
        gap = rng.choice((0.0, 0.05, 0.2, 0.4, 0.9)) if rng.random() < 0.9 else rng.uniform(2.0, 9.0)
        t += timedelta(seconds=gap)
        batch = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.15:
                t += timedelta(seconds=rng.uniform(0.0, 0.6))  # a batch spanning a bucket boundary
            price += rng.choice((-50.0, -1.0, 0.0, 0.0, 1.0, 50.0))
            side = rng.choice(("BUY", "SELL", "BUY", "SELL", ""))
            batch.append({"id": next_id, "side": side, "price": price, "size": round(rng.uniform(0.001, 0.5), 8),
                          "exec_date": timestamps.ws(t),
                          "buy_child_order_acceptance_id": "JRF20260923-033125-086253",
                          "sell_child_order_acceptance_id": "JRF20260923-033126-086262"})
            next_id += 1
        batches.append(batch)
    return batches


def reference(batches: list[list[dict[str, Any]]], timescale: float) -> list[Candle]:
    """Every bucket from the first print's to the last print's, empty ones carried forward."""
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for batch in batches:
        for e in batch:
            epoch = timestamps.parse(e["exec_date"]).timestamp()
            by_bucket.setdefault(math.floor(epoch / timescale), []).append(e)
    first, last = min(by_bucket), max(by_bucket)
    out: list[Candle] = []
    for b in range(first, last + 1):
        prints = by_bucket.get(b)
        if prints is None:
            c = out[-1].close
            out.append(Candle(b * timescale, c, c, c, c))
            continue
        prices = [e["price"] for e in prints]
        out.append(Candle(b * timescale, prices[0], max(prices), min(prices), prices[-1],
                          sum(e["size"] for e in prints),
                          sum(e["size"] for e in prints if e["side"] == "BUY"),
                          sum(e["size"] for e in prints if e["side"] == "SELL"),
                          len(prints)))
    return out


def assert_candles_equal(got: list[Candle], want: list[Candle]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.time, g.open, g.high, g.low, g.close, g.count) == pytest.approx(
            (w.time, w.open, w.high, w.low, w.close, w.count)), (g, w)
        assert (g.volume, g.buy_volume, g.sell_volume) == pytest.approx((w.volume, w.buy_volume, w.sell_volume))


@pytest.mark.parametrize("timescale", [1, 5, 60, 0.5, 2.5])
def test_candles_equal_reference(timescale: float) -> None:
    batches = make_prints(seed=11, n_batches=1500)
    want = reference(batches, timescale)
    confirmed: list[int] = []
    builder = CandleBuilder(timescale, maxlen=100_000, callback=lambda candles: confirmed.append(len(candles)))
    for batch in batches:
        builder.apply(batch)
    # every bucket but the last is confirmed; the last is the current (unconfirmed) candle
    assert_candles_equal(builder.candles, want[:-1])
    assert builder.current is not None
    assert_candles_equal([builder.current], want[-1:])
    assert confirmed == list(range(1, len(want)))  # one callback per confirmed candle, in order
    if timescale <= 5:
        assert any(c.count == 0 for c in want), "the stream must contain empty buckets"
    assert builder.late == 0


def test_several_builders_fed_by_fold_agree_with_apply() -> None:
    """MarketFeed sums each batch once and calls fold(); that must equal apply()."""
    batches = make_prints(seed=12, n_batches=600)
    by_apply, by_fold = CandleBuilder(1, 10_000), CandleBuilder(1, 10_000)
    for batch in batches:
        by_apply.apply(batch)
        buy = sum(e["size"] for e in batch if e["side"] == "BUY")
        sell = sum(e["size"] for e in batch if e["side"] == "SELL")
        by_fold.fold(batch, buy, sell, sum(e["size"] for e in batch))
    assert_candles_equal(by_fold.candles, by_apply.candles)
    assert_candles_equal(by_fold.candles, reference(batches, 1)[:-1])


def test_history_is_bounded_even_across_a_long_gap() -> None:
    batches = make_prints(seed=13, n_batches=400)
    builder = CandleBuilder(1, maxlen=50)
    for batch in batches:
        builder.apply(batch)
    want = reference(batches, 1)
    assert len(builder) == 50 and builder.maxlen == 50
    assert_candles_equal(builder.candles, want[-51:-1])
    # an hour without prints: only the last maxlen empty candles are built
    late = dict(batches[-1][-1])
    late["exec_date"] = timestamps.ws(timestamps.parse(late["exec_date"]) + timedelta(hours=1))
    late["id"] += 1
    builder.apply([late])
    assert len(builder) == 50
    assert all(c.count == 0 and c.open == c.close == want[-1].close for c in builder.candles)
    assert builder.candles[-1].time == builder.current.time - 1  # type: ignore[union-attr]


def test_advance_confirms_quiet_seconds() -> None:
    seen: list[Candle] = []
    builder = CandleBuilder(1, maxlen=100, callback=lambda candles: seen.append(candles[-1]))
    t0 = datetime(2026, 9, 23, 3, 0, 0, 250000, tzinfo=UTC)
    builder.advance(t0.timestamp())  # nothing yet: nothing to confirm
    assert builder.current is None and not seen
    builder.apply([{"id": 1, "side": "BUY", "price": 100.0, "size": 0.5, "exec_date": timestamps.ws(t0)}])
    builder.advance(t0.timestamp() + 0.5)  # same second: still open
    assert not seen
    builder.advance(t0.timestamp() + 3.0)  # three seconds later: 03:00:00, :01, :02 confirmed
    assert [c.time for c in seen] == [t0.timestamp() - 0.25 + i for i in range(3)]
    assert [(c.open, c.close, c.volume, c.count) for c in seen] == [(100.0, 100.0, 0.5, 1), (100.0, 100.0, 0.0, 0),
                                                                    (100.0, 100.0, 0.0, 0)]
    assert builder.current is not None and builder.current.count == 0
    # a print in the open (placeholder) bucket sets its open/high/low properly
    builder.apply([{"id": 2, "side": "SELL", "price": 90.0, "size": 0.1,
                    "exec_date": timestamps.ws(t0 + timedelta(seconds=3.1))}])
    cur = builder.current
    assert (cur.open, cur.high, cur.low, cur.close, cur.sell_volume, cur.count) == (90.0, 90.0, 90.0, 90.0, 0.1, 1)


def test_late_prints_are_counted_not_folded() -> None:
    builder = CandleBuilder(1, maxlen=10)
    t0 = datetime(2026, 9, 23, 3, 0, 0, tzinfo=UTC)
    e = {"id": 1, "side": "BUY", "price": 100.0, "size": 1.0, "exec_date": timestamps.ws(t0)}
    builder.apply([e])
    builder.apply([{**e, "id": 2, "price": 101.0, "exec_date": timestamps.ws(t0 + timedelta(seconds=1))}])
    builder.apply([{**e, "id": 3, "price": 999.0, "exec_date": timestamps.ws(t0 + timedelta(milliseconds=500))}])
    assert builder.late == 1
    assert [(c.high, c.volume) for c in builder.candles] == [(100.0, 1.0)]


def test_rest_timestamps_are_accepted() -> None:
    """REST exec_date has no Z and a 0-3 digit fraction (docs/bitflyer.md#timestamps)."""
    builder = CandleBuilder(0.5, maxlen=10)
    rows = [{"id": i, "side": "BUY", "price": 100.0 + i, "size": 1.0, "exec_date": d}
            for i, d in enumerate(("2015-07-08T02:43:34.1", "2015-07-08T02:43:34.823", "2015-07-08T02:43:35"))]
    for row in rows:
        builder.apply([row])
    want = reference([rows], 0.5)
    assert_candles_equal(builder.candles, want[:-1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        CandleBuilder(0, 10)
    with pytest.raises(ValueError):
        CandleBuilder(1, 0)
