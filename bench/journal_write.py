"""Cost of journaling on the event loop: one ``record_fill`` / ``record_order`` (one SQLite WAL
commit each) and a whole events frame in one ``record_batch`` transaction, with ``synchronous=NORMAL`` (the default) and ``FULL``, plus the in-memory work a fill
costs after it (tracker + FIFO position).

    .venv/bin/python bench/journal_write.py [--n 5000] [--dir /tmp] [--gap-ms 10]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, Order, OrderTracker
from bfsx.account.position import Position


def _percentiles(samples: list[float]) -> str:
    s = sorted(samples)
    p = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1e6  # noqa: E731
    return f"p50 {p(0.50):7.1f} µs   p99 {p(0.99):8.1f} µs   mean {statistics.fmean(s) * 1e6:7.1f} µs"


def _timed(n: int, op: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        op(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dir", default=None, help="where the database goes (default: a temp dir)")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="idle time between writes in the spaced run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for sync in ("NORMAL", "FULL"):
            n = args.n if sync == "NORMAL" else max(200, args.n // 10)
            j = Journal(Path(tmp) / f"bench-{sync}.db", synchronous=sync)  # type: ignore[arg-type]
            fills = [
                Fill(exec_id=i + 1, acceptance_id=f"JRF20260923-030000-{i:06d}", side="BUY", price=10_000_000.0 + i,
                     size=0.01, time=1_790_000_000.0 + i, product="FX_BTC_JPY")
                for i in range(n)
            ]
            orders = [Order.new("FX_BTC_JPY", "BUY", 0.01, 10_000_000.0) for _ in range(n)]
            for i, o in enumerate(orders):
                o.acceptance_id = f"JRF20260923-030000-{i:06d}"
            rf = _timed(n, lambda i, j=j, fills=fills: j.record_fill(fills[i]))
            ro = _timed(n, lambda i, j=j, orders=orders: j.record_order(orders[i]))
            dup = _timed(n, lambda i, j=j, fills=fills: j.record_fill(fills[i]))
            # What one taker frame brings (3 fills + its order row): one transaction vs one commit each.
            frames = [
                ([Fill(exec_id=10 * n + 3 * i + k, acceptance_id=o.acceptance_id or "", side="BUY", price=1e7,
                       size=0.01, time=1_790_000_000.0 + i, product="FX_BTC_JPY") for k in range(3)], o)
                for i, o in enumerate(orders)
            ]
            half = n // 2
            per_row = _timed(half, lambda i, j=j, fr=frames: [j.record_fill(f) for f in fr[i][0]] + [j.record_order(fr[i][1])])
            batch = _timed(half, lambda i, j=j, fr=frames, h=half: j.record_batch(fr[h + i][0], (fr[h + i][1],)))
            print(f"synchronous={sync:6s} n={n}")
            print(f"  record_fill (new)        {_percentiles(rf)}")
            print(f"  record_fill (duplicate)  {_percentiles(dup)}")
            print(f"  record_order (upsert)    {_percentiles(ro)}")
            print(f"  frame of 3 fills + order, one commit per row  {_percentiles(per_row)}")
            print(f"  frame of 3 fills + order, record_batch        {_percentiles(batch)}")
            j.close()
        # A bot writes now and then, not in a tight loop: after an idle gap every instruction runs
        # from cold caches. Compare with a plain in-memory SQLite insert under the same gaps.
        gap, n = args.gap_ms / 1000, 300
        j = Journal(Path(tmp) / "bench-gaps.db")
        mem = sqlite3.connect(":memory:", isolation_level=None)
        mem.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b REAL)")
        jt, mt = [], []
        for i in range(n):
            f = Fill(exec_id=i + 1, acceptance_id="JRF20260923-030000-000001", side="BUY", price=1e7, size=0.01,
                     time=1_790_000_000.0 + i, product="FX_BTC_JPY")
            t0 = time.perf_counter()
            j.record_fill(f)
            jt.append(time.perf_counter() - t0)
            time.sleep(gap)
            t0 = time.perf_counter()
            mem.execute("INSERT INTO t VALUES (?, ?)", (i, 1.5))
            mt.append(time.perf_counter() - t0)
            time.sleep(gap)
        print(f"synchronous=NORMAL, {args.gap_ms:g} ms between writes, n={n}")
        print(f"  record_fill (new)        {_percentiles(jt)}")
        print(f"  :memory: insert baseline {_percentiles(mt)}")
        j.close()
        tracker, pos = OrderTracker("FX_BTC_JPY"), Position()
        o = Order.new("FX_BTC_JPY", "BUY", 1e6, 10_000_000.0)
        o.acceptance_id = "JRF20260923-030000-999999"
        tracker.accepted(o)
        events = [
            {"product_code": "FX_BTC_JPY", "child_order_id": "JFX20260923-030000-999999F",
             "child_order_acceptance_id": o.acceptance_id, "event_date": "2026-09-23T03:31:27.0873222Z",
             "event_type": "EXECUTION", "exec_id": 10**9 + i, "side": "BUY" if i % 2 else "SELL",
             "price": 10_000_000.0 + i % 50, "size": 0.01, "commission": 0.0, "sfd": 0.0, "outstanding_size": 1.0}
            for i in range(args.n)
        ]

        def step(i: int) -> None:
            fill, _ = tracker.apply_event(events[i])  # type: ignore[arg-type]
            assert fill is not None
            pos.apply_fill(fill)

        print("in memory, tight loop")
        print(f"  tracker.apply_event + position.apply_fill  {_percentiles(_timed(args.n, step))}")


if __name__ == "__main__":
    main()
