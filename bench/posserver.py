"""Position-server ingest: signed UDP reports from 100 simulated bots, and report-to-total latency.

A separate process plays 100 bots (one :class:`~bfsx.posserver.protocol.Sender` each, a realistic
report with API budget readings, ~480 bytes) and sends real UDP datagrams on loopback to an
in-process :class:`~bfsx.posserver.server.PosServer` (checks disabled, so only ingest runs):

(a) in-process ceiling — ``on_datagram`` (verify HMAC, decode, replay guard, registry) in a loop;
(b) ingest rate — the sender sends pre-encoded reports in bursts of ``--burst`` (they fit in the
    socket buffer), waiting for the server to apply each burst: applied reports per second of
    server wall time (first to last apply of a burst, summed), and any loss. Bursts keep the
    sender's CPU out of the server's way on a small machine (2 cores here);
(c) latency — reports encoded and sent at a steady rate (100 bots × ``--per-bot-rate``/s); for
    each, server wall clock after the market total is recomputed minus the time signed into the
    report by the sender (same host, same clock): p50 / p99 / max.

Run: ``python -m bench.posserver [--bots 100] [--reports 1000] [--seconds 5] [--per-bot-rate 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

from bfsx.bitflyer.budget import ApiBudget
from bfsx.config import TradeConfig
from bfsx.posserver import protocol as p
from bfsx.posserver.server import PosServer

SECRET = "bench-secret"
MARKET = "FX_BTC_JPY"


def _reports(bots: int) -> list[p.Report]:
    snap = ApiBudget().snapshot()
    return [p.Report(bot=f"bench-bot-{i:03d}", market=MARKET, position=0.0, base_position=0.0, profit=12345.0,
                     realized=678.0, pid=10_000 + i, budget=snap) for i in range(bots)]


def _burst_sender(port: int, bots: int, per_bot: int, burst: int, conn: Any) -> None:
    """Child process: pre-encode every report, then send one burst per "go" from the parent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(("127.0.0.1", port))
    senders = [p.Sender(SECRET) for _ in range(bots)]
    base = _reports(bots)
    data = [senders[i].encode(replace(base[i], position=k * 0.001)) for k in range(per_bot) for i in range(bots)]
    conn.send(len(data))
    for start in range(0, len(data), burst):
        if conn.recv() != "go":
            break
        chunk = data[start:start + burst]
        for d in chunk:
            sock.send(d)
        conn.send(len(chunk))
    conn.send(0)
    sock.close()


def _sender(port: int, bots: int, per_bot: int, rate: float, out: Any) -> None:
    """Child process: encode and send ``per_bot`` reports per bot at ``rate`` per second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    senders = [p.Sender(SECRET) for _ in range(bots)]
    base = _reports(bots)
    sent = 0
    interval = 1.0 / rate
    t0 = time.perf_counter()
    nxt = t0
    for k in range(per_bot):
        for i in range(bots):
            sock.send(senders[i].encode(replace(base[i], position=k * 0.001)))
            sent += 1
            nxt += interval
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.perf_counter() - t0
    sock.close()
    out.put((sent, elapsed, len(base[0].bot), len(senders[0].encode(base[0]))))


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class _Probe:
    """The server's ``on_report`` hook: time of each apply and its latency from the signed time."""

    def __init__(self, server: PosServer) -> None:
        self.server = server
        self.first = self.last = 0.0
        self.latencies: list[float] = []
        self.measure = False
        self.totals = 0.0

    def __call__(self, msg: p.Report, applied: str) -> None:
        now = time.time()
        if not self.first:
            self.first = now
        self.last = now
        if self.measure and msg.header is not None:
            # The total the console / check would read right now, recomputed from every bot.
            self.totals = float(self.server.registry.total(msg.market))
            self.latencies.append(time.time() - msg.header.time)


async def _run(bots: int, per_bot: int, seconds: float, per_bot_rate: float, burst: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TradeConfig.model_validate({
            "endpoint": "http://127.0.0.1:9", "pos_server": ["127.0.0.1", 51000], "pos_server_secret": SECRET,
            "pos_server_check_interval": 3600, "console_output": False,
        }).model_copy(update={"pos_server": ("127.0.0.1", 0)})
        server = PosServer(cfg, state_dir=tmp, console=False)
        await server.start()
        try:
            probe = _Probe(server)
            server.on_report = probe
            ctx = mp.get_context("spawn")

            # (a) in-process ceiling: the same work per datagram, no sockets.
            senders = [p.Sender(SECRET) for _ in range(bots)]
            base = _reports(bots)
            n = max(20_000, bots * 200)
            data = [senders[k % bots].encode(replace(base[k % bots], position=(k // bots) * 0.001)) for k in range(n)]
            addr = ("127.0.0.1", 1)
            t0 = time.process_time()
            for d in data:
                server.on_datagram(d, addr)
            cpu = time.process_time() - t0
            results["inproc_reports_per_s"] = n / cpu
            results["inproc_us_per_report"] = cpu / n * 1e6
            results["datagram_bytes"] = float(len(data[0]))
            server.guard = p.ReplayGuard()  # the sender processes use fresh boot ids anyway
            server.registry.clear()

            # (b) ingest over real UDP from another process, in bursts.
            loop = asyncio.get_running_loop()
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_burst_sender, args=(server.port, bots, per_bot, burst, child))
            proc.start()
            await loop.run_in_executor(None, parent.recv)  # encoded, ready
            sent = applied = 0
            span = 0.0
            while True:
                before = server.counters["reports"]
                probe.first = probe.last = 0.0
                parent.send("go")
                n = await loop.run_in_executor(None, parent.recv)
                if not n:
                    break
                sent += n
                await _settle(server, until=before + n)
                applied += server.counters["reports"] - before
                span += probe.last - probe.first
            await loop.run_in_executor(None, proc.join)
            results.update(sent=float(sent), applied=float(applied), udp_reports_per_s=applied / max(span, 1e-9),
                           lost_pct=100.0 * (sent - applied) / max(sent, 1), bots=float(len(server.registry.bots)))
            q = ctx.Queue()

            # (c) latency at a steady rate. New sender processes reuse the bot ids with new boots: forget
            # the previous ones, or the server would refuse the newcomers as second live senders.
            server.registry.clear()
            rate = bots * per_bot_rate
            per = max(1, int(seconds * per_bot_rate))
            probe.measure = True
            before = server.counters["reports"]
            proc = ctx.Process(target=_sender, args=(server.port, bots, per, rate, q))
            proc.start()
            sent2, _, _, _ = await asyncio.get_running_loop().run_in_executor(None, q.get)
            proc.join()
            await _settle(server)
            lat = [x * 1e6 for x in probe.latencies]
            results.update(latency_rate=float(rate), latency_n=float(len(lat)), p50_us=_pct(lat, 0.5),
                           p99_us=_pct(lat, 0.99), max_us=max(lat) if lat else float("nan"),
                           mean_us=statistics.fmean(lat) if lat else float("nan"),
                           latency_lost=float(sent2 - (server.counters["reports"] - before)))
            results["bad_packets"] = float(sum(server.bad.values()))
        finally:
            server.on_report = None
            await server.stop()
    return results


async def _settle(server: PosServer, quiet: float = 0.5, until: int | None = None) -> None:
    """Wait until ``until`` reports were applied, or none came for ``quiet`` seconds (lost ones)."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet:
        n = server.counters["reports"]
        if until is not None and n >= until:
            return
        if n != last:
            last, since = n, time.monotonic()
        await asyncio.sleep(0.002 if until is not None else 0.05)


def run(bots: int, per_bot: int, seconds: float, per_bot_rate: float, burst: int = 2000) -> dict[str, float]:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    r = asyncio.run(_run(bots, per_bot, seconds, per_bot_rate, burst))
    print(f"position server ingest — {bots} bots, signed reports of {r['datagram_bytes']:.0f} bytes (HMAC-SHA256)")
    print(f"  (a) in-process verify+decode+apply : {r['inproc_reports_per_s']:>10,.0f} reports/s CPU "
          f"({r['inproc_us_per_report']:.1f} µs each)")
    print(f"  (b) UDP from another process       : {r['udp_reports_per_s']:>10,.0f} reports/s applied "
          f"({r['applied']:,.0f} of {r['sent']:,.0f} sent in bursts of {burst}; lost {r['lost_pct']:.2f}%; "
          f"{r['bots']:.0f} bots registered)")
    print(f"  (c) report-to-total latency at {r['latency_rate']:,.0f} reports/s : p50 {r['p50_us']:.0f} µs, "
          f"p99 {r['p99_us']:.0f} µs, max {r['max_us']:.0f} µs (n={r['latency_n']:,.0f}, lost {r['latency_lost']:.0f})")
    print(f"  bad packets counted: {r['bad_packets']:.0f}")
    return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.posserver", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bots", type=int, default=100, help="simulated bots (default 100)")
    ap.add_argument("--reports", type=int, default=500, help="reports per bot in the ingest run (default 500)")
    ap.add_argument("--burst", type=int, default=2000, help="datagrams per burst in the ingest run (default 2000)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the latency run (default 5)")
    ap.add_argument("--per-bot-rate", type=float, default=20.0, help="reports per bot per second, latency run")
    args = ap.parse_args(argv)
    run(args.bots, args.reports, args.seconds, args.per_bot_rate, args.burst)


if __name__ == "__main__":
    main()
