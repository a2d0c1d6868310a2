"""Upstream ingest: frames per second ``bfsx sim --upstream`` takes from another market's feed.

The FX_BTC_JPY-like stream of ``bench/feed.py`` (per 5 s: one 1,000-level snapshot, 35 diffs, 10
tickers, 40 execution batches) is handed to the paper simulator's upstream ``RealtimeClient``
(``dispatch_frame``: what its read loop calls per frame), in process, with one realtime client of
the paper simulator subscribed to the board diffs and executions (so each frame's diff is also
built and encoded) and ``--orders`` resting paper orders near the touch (the queue model runs on
every print). Measured: µs per frame and frames per second, per kind and overall, against plain
dispatch with a handler that does nothing. Real time for that stream is ~17 frames/s.

Run: ``python -m bench.upstream [--cycles N] [--rounds N] [--orders N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from typing import Any

from bench.feed import PRODUCT, build_stream
from bfsx.bitflyer import channels
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import WireSocket
from bfsx.sim.model import BUY, SELL
from bfsx.sim.server import SimServer
from bfsx.sim.upstream import UpstreamFeed


def _noop(message: Any) -> None:
    return None


def _dispatch_only(frames: list[bytes]) -> float:
    client = RealtimeClient("ws://unused")
    for ch in (channels.BOARD_SNAPSHOT, channels.BOARD, channels.EXECUTIONS, channels.TICKER):
        client.subscribe(ch + PRODUCT, _noop)
    t0 = time.perf_counter()
    for f in frames:
        client.dispatch_frame(f)
    return time.perf_counter() - t0


async def _round(stream: list[tuple[str, bytes]], orders: int) -> dict[str, float]:
    cfg = SimConfig(products=[PRODUCT], upstream={"silence_s": 0.0}, ws_queue=1_000_000)
    # the upstream URL is never dialled: the bench calls the client's dispatch directly
    paper = SimServer(cfg, upstream="ws://127.0.0.1:9/json-rpc")
    feed = paper.feed
    paper.feed = None
    assert isinstance(feed, UpstreamFeed) and paper.upstream_market is not None
    per_kind: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    async with paper:
        sock = await WireSocket.connect(paper.ws_url)
        for ch in (channels.board(PRODUCT), channels.executions(PRODUCT)):
            await sock.subscribe(ch)
        client = feed.client
        client.dispatch_frame(stream[0][1])  # the first snapshot: the book is known
        engine = paper.engine
        acct = next(iter(engine.accounts.values()))
        book = engine.markets[PRODUCT].book
        for i in range(orders):  # resting paper orders a few levels from the touch, both sides
            side = BUY if i % 2 == 0 else SELL
            touch = book.touch(side) or 10_000_000
            req = engine.parse_order({"product_code": PRODUCT, "child_order_type": "LIMIT",
                                      "side": "BUY" if side == BUY else "SELL", "size": 0.001,
                                      "price": touch - side * (1 + i // 2)})
            paper._place(engine.accept(acct, req))
        t_all = time.perf_counter()
        for kind, frame in stream[1:]:
            t0 = time.perf_counter()
            client.dispatch_frame(frame)
            per_kind[kind] += time.perf_counter() - t0
            count[kind] += 1
        total = time.perf_counter() - t_all
        await sock.close()
    out = {f"{k}_us": per_kind[k] / count[k] * 1e6 for k in per_kind}
    out["frames_per_s"] = (len(stream) - 1) / total
    out["us_per_frame"] = total / (len(stream) - 1) * 1e6
    out["fills"] = float(paper.upstream_market.fills)
    out["rejected"] = float(paper.upstream_market.rejected)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=60, help="5-second cycles of the stream (default 60 = 5 min)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--orders", type=int, default=20, help="resting paper orders near the touch")
    args = ap.parse_args()
    stream = build_stream(cycles=args.cycles)
    frames = [f for _, f in stream]
    base = min(_dispatch_only(frames) for _ in range(args.rounds)) / len(frames) * 1e6
    print(f"{len(frames)} frames ({args.cycles} cycles of 5 s); dispatch with a no-op handler: {base:.1f} µs/frame")
    results = [asyncio.run(_round(stream, args.orders)) for _ in range(args.rounds)]
    for key in ("frames_per_s", "us_per_frame", "snapshot_us", "diff_us", "executions_us", "ticker_us"):
        vals = [r[key] for r in results if key in r]
        print(f"  {key:14s} median {statistics.median(vals):10.1f}   runs {', '.join(f'{v:.1f}' for v in vals)}")
    print(f"  paper fills per run {results[-1]['fills']:.0f}, rejected frames {results[-1]['rejected']:.0f}")


if __name__ == "__main__":
    main()
