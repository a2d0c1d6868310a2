"""Chaos soak: the simulator, the position server and three bots under a fault every minute.

Processes (each its own ``bfsx`` process, as in ``bench/soak.py``): ``bfsx sim`` (``SimConfig.fast()``,
seeded), ``bfsx pos-server`` and the demo's three bots on one account (``mm_fx`` and ``scalp_fx`` on
FX_BTC_JPY, ``mm_spot`` on BTC_JPY with a base of 1 BTC), with the demo's short timings
(``bfsx.demo.fleet_trade_config``: reports every second, checks every 3 s, correction after 3).

Every ``--fault-every`` seconds one fault is drawn (seeded; a shuffled bag, so every kind comes up
once before any repeats): ``drop`` (50 % of private events dropped), ``close_1011`` (every realtime
socket closed with 1011: a server cannot send 1006, which a client only sees when the TCP
connection ends without a close frame; ``faults.py`` refuses 1004-1006, so 1011 "internal error"
is the nearest abnormal close a server can send), ``close_1012``, ``http_500`` (30 % of /v1
requests answered 500), ``latency`` (1500 ms on every /v1 reply), ``maintenance``, ``health_stop``,
``kill_bot`` (kill -9 one bot, restart it 5 s later from its journal), ``kill_server`` (kill -9 the
position server, restart it 5 s later), ``hand_trade`` (a signed 0.03 BTC market order on the
account through ``bfsx.sim.hooks.WireClient``: only the server can see it) and ``collateral``
(the FX collateral halved, restored after the window). A fault holds for a third of the slot, then
is cleared; the bench waits (bounded) for invariant 1 to hold twice running on every market.

Invariant 1 per market, sampled every ``--sample`` s: exchange net (``/_sim/state``) = Σ bots'
positions + base (the server's STATUS_QUERY), to within the minimum order size (spot BTC commission
leaves a residue below 0.001 that no order can correct). A *drift* is a stretch of samples above
that tolerance; its peak |diff| and its length are kept. When the server is down there is no
reading (the stretch is not counted).

Report (stdout table and ``DIR/chaos.json``): fills per bot (journals), corrections and other
server counters (summed over server restarts), drifts (max |diff|, longest), over-limit answers per
API key and bucket (``limits_refused``), RSS per process (start / end / max, over restarts),
invariant 1 after each fault (pass/fail and time to settle), restarts.

Run: ``python -m bench.chaos [--minutes 30] [--seed N] [--fault-every 60] [--out DIR]``. From
``make bench`` (``python -m bench``, which sets ``BFSX_BENCH_SUITE=1``) the defaults are 3 minutes
and a fault every 20 s, so the suite stays short; ``BFSX_CHAOS_MINUTES`` overrides the duration in
both cases. Only loopback. Readings: docs/BENCHMARKS.md, "Chaos soak".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.soak import count_fills, rss_kb
from bfsx.bitflyer.products import get_product
from bfsx.demo import API_KEY, API_SECRET, BOTS, POS_SECRET, fleet_trade_config
from bfsx.net import free_port
from bfsx.posserver.client import PosServerUnavailable, query_status
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks, WireClient

REPO = Path(__file__).resolve().parent.parent
FAULTS = ("drop", "close_1011", "close_1012", "http_500", "latency", "maintenance", "health_stop",
          "kill_bot", "kill_server", "hand_trade", "collateral")
HAND_SIZE = 0.03
EVICT_AFTER = 120.0  # the demo's pos_server_evict_after (fleet_trade_config)
RESTART_AFTER = 5.0  # seconds between a kill -9 and the restart


def tolerance(market: str) -> float:
    spec = get_product(market)
    return float(spec.min_size) if spec is not None else 1e-8


@dataclass
class Proc:
    name: str
    args: list[str]
    popen: subprocess.Popen[bytes] | None = None
    journal: Path | None = None
    restarts: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (t, KB) over every incarnation
    rss_start: int | None = None


@dataclass
class Drift:
    market: str
    started: float
    peak: float = 0.0
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


@dataclass
class FaultResult:
    n: int
    kind: str
    at: float  # seconds since start
    detail: str
    settled: bool = False
    settle_s: float | None = None  # seconds from the clear to invariant 1 holding twice
    diffs: dict[str, float] = field(default_factory=dict)  # last diff per market at the verdict
    drift_peak: float = 0.0  # max |diff| seen in this fault's slot
    journal_ok: bool | None = None  # invariant 1 from the bots' journals at the verdict
    journal_diffs: dict[str, float] = field(default_factory=dict)


class Chaos:
    def __init__(self, folder: Path, minutes: float, every: float, seed: int, sample: float) -> None:
        self.folder = folder
        self.seconds = minutes * 60
        self.every = every
        self.window = max(3.0, every / 3)
        self.sample_every = sample
        self.rng = random.Random(seed)
        self.seed = seed
        self.sim_port, self.pos_port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.hooks = SimHooks(self.sim_url)
        self.procs: dict[str, Proc] = {}
        self.restarting: set[str] = set()
        self.t0 = 0.0
        self.faults: list[FaultResult] = []
        self.drifts: list[Drift] = []
        self.open_drift: dict[str, Drift] = {}
        self.last_diff: dict[str, float] = {}
        self.samples_ok = 0
        self.samples_bad = 0
        self.samples_none = 0  # no reading (server down / not yet reporting)
        self.counter_base: dict[str, int] = {}  # counters of dead server incarnations
        self.counters: dict[str, int] = {}  # of the live one
        self.server_incarnation_seen = 0
        self.status: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.slot_peak = 0.0
        self.errors: list[str] = []
        self._stop = False

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        print(f"[{self.now():7.1f}s] {text}", flush=True)

    # ------------------------------------------------------------------ processes
    def _write(self, name: str, data: dict[str, Any]) -> Path:
        path = self.folder / "config" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def spawn(self, p: Proc) -> None:
        log = self.folder / "out" / f"{p.name}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            p.popen = subprocess.Popen(
                [sys.executable, "-m", "bfsx.cli", *p.args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.folder, start_new_session=True,
            )

    def kill9(self, p: Proc) -> None:
        assert p.popen is not None
        with contextlib.suppress(ProcessLookupError):
            p.popen.send_signal(signal.SIGKILL)
        p.popen.wait(10)

    async def restart(self, p: Proc) -> None:
        self.restarting.add(p.name)  # the watchdog in the sampler leaves it alone meanwhile
        try:
            self.kill9(p)
            if p.name == "pos-server":
                self.server_down()
            await asyncio.sleep(RESTART_AFTER)
            p.restarts += 1
            self.spawn(p)
        finally:
            self.restarting.discard(p.name)

    def server_down(self) -> None:
        """Bank the dead server's counters: a new one starts from zero."""
        for k, v in self.counters.items():
            self.counter_base[k] = self.counter_base.get(k, 0) + v
        self.counters = {}

    async def wait_sim(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with s.get(f"{self.sim_url}/v1/gethealth") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError("the simulator did not start")

    async def wait_server(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", self.pos_port)
                w.close()
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the position server did not listen")

    async def start(self) -> None:
        sim_yaml = self._write("sim.yaml", {**SimConfig.fast().model_dump(mode="json", exclude_unset=True),
                                            "seed": self.seed})
        self.procs["sim"] = Proc("sim", ["sim", "--port", str(self.sim_port), "--config", str(sim_yaml), "--quiet"])
        self.spawn(self.procs["sim"])
        await self.wait_sim()
        state = self.folder / "state"
        common = {**fleet_trade_config(self.sim_port, self.pos_port), "console_output": False}
        # The hand trades go either way and a halved collateral may loss-cut: the reduce-only rule
        # would freeze a market on half of them and leave it to an operator, so this soak corrects
        # everything (BFS-X's rule) and measures the healing; tests/posserver/test_controls_processes.py
        # covers the freeze.
        server_yaml = self._write("pos_server.yaml", {**common, "log_folder": str(state / "pos_server"),
                                                      "pos_server_correct_all": True})
        self.procs["pos-server"] = Proc("pos-server", ["pos-server", str(server_yaml)])
        self.spawn(self.procs["pos-server"])
        await self.wait_server()
        for bot in BOTS:
            py, yml = REPO / "strategies" / f"{bot.strategy}.py", REPO / "strategies" / f"{bot.strategy}.yaml"
            bot_yaml = self._write(f"{bot.name}.yaml", {
                **common, "product": bot.product, "bot_name": bot.name, "base_position": bot.base_position,
                "strategy_py": str(py), "strategy_yaml": str(yml), "log_folder": str(state / bot.name),
            })
            p = Proc(bot.name, ["trade", str(bot_yaml)], journal=state / bot.name / "journal.db")
            self.procs[bot.name] = p
            self.spawn(p)

    def check_alive(self) -> None:
        for p in self.procs.values():
            if p.name not in self.restarting and p.popen is not None and p.popen.poll() is not None:
                if p.name == "pos-server":
                    self.server_down()
                msg = f"{p.name} exited on its own (code {p.popen.returncode}); see out/{p.name}.out"
                self.errors.append(f"[{self.now():.0f}s] {msg}")
                self.log(msg + "; restarting it")
                p.restarts += 1
                self.spawn(p)

    def stop(self) -> None:
        """Stop the bots (each cancels its orders), read the simulator's state once more (what the
        report calls left behind: the last sample was taken while the bots still quoted), then stop
        the server and the simulator."""
        order = [n for n in self.procs if n not in ("sim", "pos-server")] + ["pos-server", "sim"]
        for group, timeout in ((order[:-2], 30.0), (order[-2:], 10.0)):
            if group[-1] == "sim":
                sim = self.procs.get("sim")
                if sim and sim.popen and sim.popen.poll() is None:
                    try:
                        self.state = asyncio.run(self.hooks.fetch_state())
                    except Exception as e:  # the report then shows the last sample's state
                        self.log(f"final sim state read failed: {e}")
            for n in group:
                p = self.procs.get(n)
                if p and p.popen and p.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.send_signal(signal.SIGTERM if n != "sim" else signal.SIGINT)
            deadline = time.monotonic() + timeout
            for n in group:
                p = self.procs.get(n)
                if p and p.popen:
                    try:
                        p.popen.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        p.popen.kill()
                        p.popen.wait(5)

    # ------------------------------------------------------------------ invariant 1
    async def read(self) -> dict[str, float] | None:
        """diff per market (exchange − Σ bots − base), or None without a server reading."""
        try:
            self.state = await self.hooks.fetch_state()
        except Exception as e:
            self.log(f"sim state read failed: {e}")
            return None
        try:
            status = await query_status("127.0.0.1", self.pos_port, POS_SECRET, client_id="chaos", timeout=2.0)
        except (TimeoutError, PosServerUnavailable, OSError):
            return None
        self.status = status
        self.counters = {k: int(v) for k, v in status.get("counters", {}).items()}
        positions = self.state["accounts"][API_KEY]["positions"]
        markets = {m["market"]: m for m in status.get("markets", [])}
        bots_seen = {b["id"] for b in status.get("bots", [])}
        if not all(b.name in bots_seen for b in BOTS):
            return None  # a (re)started server before every bot reported: not a reading
        out: dict[str, float] = {}
        for market in sorted({b.product for b in BOTS}):
            m = markets.get(market)
            if m is None:
                return None
            exchange = float(positions.get(market, {}).get("net", 0.0))
            out[market] = exchange - float(m["total"]) - float(m["base"])
        return out

    def journal_diffs(self) -> dict[str, float] | None:
        """diff per market from the bots' journals instead of the server: exchange − Σ journal
        positions (fills, spot net of the BTC commission) − base; None without a sim reading."""
        if self.state is None:
            return None
        positions = self.state["accounts"][API_KEY]["positions"]
        total: dict[str, float] = {}
        base: dict[str, float] = {}
        for b in BOTS:
            pos = 0.0
            journal = self.procs[b.name].journal
            if journal is not None and journal.is_file():
                db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=2.0)
                try:
                    row = db.execute(
                        "SELECT COALESCE(SUM(CASE side WHEN 'BUY' THEN size ELSE -size END), 0), "
                        "COALESCE(SUM(commission), 0) FROM fills WHERE product = ?", (b.product,)).fetchone()
                    pos = float(row[0]) - (float(row[1]) if not b.product.startswith("FX_") else 0.0)
                except sqlite3.Error:
                    return None
                finally:
                    db.close()
            total[b.product] = total.get(b.product, 0.0) + pos
            base[b.product] = base.get(b.product, 0.0) + b.base_position
        return {m: float(positions.get(m, {}).get("net", 0.0)) - total[m] - base[m] for m in sorted(total)}

    def record(self, diffs: dict[str, float] | None) -> bool:
        """Track drift stretches; True when every market is within tolerance."""
        if diffs is None:
            self.samples_none += 1
            return False
        ok = True
        t = time.monotonic()
        for market, d in diffs.items():
            self.last_diff[market] = d
            bad = abs(d) >= tolerance(market)
            if bad:
                ok = False
                self.slot_peak = max(self.slot_peak, abs(d))
                dr = self.open_drift.get(market)
                if dr is None:
                    dr = self.open_drift[market] = Drift(market, t)
                    self.drifts.append(dr)
                dr.peak = max(dr.peak, abs(d))
            elif market in self.open_drift:
                self.open_drift.pop(market).ended = t
        if ok:
            self.samples_ok += 1
        else:
            self.samples_bad += 1
        return ok

    async def sampler(self) -> None:
        next_rss = 0.0
        while not self._stop:
            self.record(await self.read())
            now = time.monotonic()
            if now >= next_rss:
                next_rss = now + 1.0
                for p in self.procs.values():
                    if p.popen is not None and p.popen.poll() is None:
                        kb = rss_kb(p.popen.pid)
                        if kb is not None:
                            p.rss.append((self.now(), kb))
                            if p.rss_start is None:
                                p.rss_start = kb
                self.check_alive()
            await asyncio.sleep(self.sample_every)

    async def settle(self, deadline: float) -> tuple[bool, float | None]:
        """Wait until invariant 1 holds on two readings running (or ``deadline``)."""
        t0 = time.monotonic()
        agreed = 0
        while time.monotonic() < deadline:
            ok = self.record(await self.read())
            agreed = agreed + 1 if ok else 0
            if agreed >= 2:
                return True, time.monotonic() - t0
            await asyncio.sleep(1.0)
        return False, None

    # ------------------------------------------------------------------ faults
    async def hand_trade(self) -> str:
        last = ""
        product = self.rng.choice(sorted({b.product for b in BOTS}))
        async with WireClient(self.sim_url, API_KEY, API_SECRET) as w:
            # Retried once a second through the window: a self trade (-159) against the bots'
            # quotes, or -1 over the small-order limit (the account shares 10 small orders a minute
            # with the bots once they breached the 100 / min bucket: see the report).
            for attempt in range(max(1, int(self.window))):
                side = "BUY" if attempt % 2 == 0 else "SELL"
                try:
                    acc = await w.order(product, side, HAND_SIZE)
                    return f"{side} {HAND_SIZE} {product} at market ({acc}, attempt {attempt + 1})"
                except AssertionError as e:
                    last = str(e)
                    await asyncio.sleep(1.0)
        return f"hand trade failed: {last}"

    async def apply(self, kind: str) -> tuple[str, Any]:
        """Start a fault; returns its description and what clearing it needs."""
        if kind == "drop":
            await self.hooks.set_faults(drop_private_events=0.5)
            return "drop 50% of private events", {"drop_private_events": 0.0}
        if kind in ("close_1011", "close_1012"):
            code = int(kind[-4:])
            await self.hooks.set_faults(close_websockets=code)
            return f"every realtime socket closed with {code}", None
        if kind == "http_500":
            await self.hooks.set_faults(http_error_rate=0.3, http_error_status=500)
            return "30% of /v1 requests answered 500", {"http_error_rate": 0.0}
        if kind == "latency":
            await self.hooks.set_faults(latency_ms=1500)
            return "1500 ms added to every /v1 reply", {"latency_ms": 0.0}
        if kind == "maintenance":
            await self.hooks.set_faults(maintenance=True)
            return "maintenance (board CLOSED, sockets closed 1012)", {"maintenance": False}
        if kind == "health_stop":
            await self.hooks.set_faults(health="STOP")
            return "health STOP (orders refused -208)", {"health": None}
        if kind == "kill_bot":
            bot = self.rng.choice([b.name for b in BOTS])
            await self.restart(self.procs[bot])
            return f"kill -9 {bot}, restarted after {RESTART_AFTER:g} s", None
        if kind == "kill_server":
            await self.restart(self.procs["pos-server"])
            return f"kill -9 pos-server, restarted after {RESTART_AFTER:g} s", None
        if kind == "hand_trade":
            return await self.hand_trade(), None
        if kind == "collateral":
            st = await self.hooks.fetch_state()
            c = float(st["accounts"][API_KEY]["collateral"]["collateral"])
            r = await self.hooks.set_account(API_KEY, round(c / 2))
            return (f"collateral {c:,.0f} -> {c / 2:,.0f} JPY (loss_cut {r.get('loss_cut')})",
                    ("collateral", round(c)))
        raise ValueError(kind)

    async def clear(self, undo: Any) -> None:
        if undo is None:
            return
        if isinstance(undo, tuple) and undo[0] == "collateral":
            await self.hooks.set_account(API_KEY, undo[1])
        else:
            await self.hooks.set_faults(**undo)

    async def run(self) -> None:
        self.t0 = time.monotonic()
        await self.start()
        self.log(f"sim :{self.sim_port}, pos-server :{self.pos_port}, {len(BOTS)} bots; folder {self.folder}")
        sampler = asyncio.ensure_future(self.sampler())
        bag: list[str] = []
        n = 0
        try:
            next_at = self.every
            while next_at + self.window < self.seconds:
                await asyncio.sleep(max(0.0, next_at - self.now()))
                if not bag:
                    bag = list(FAULTS)
                    self.rng.shuffle(bag)
                kind = bag.pop()
                n += 1
                self.slot_peak = 0.0
                at = self.now()
                try:
                    detail, undo = await self.apply(kind)
                except Exception as e:
                    detail, undo = f"could not apply: {e!r}", None
                self.log(f"FAULT {n} {kind}: {detail}")
                await asyncio.sleep(max(0.0, at + self.window - self.now()))
                await self.clear(undo)
                # Settle within the rest of the slot, but never less than 45 s (a correction needs
                # 3 checks of 3 s plus the order and the next report); the next fault waits.
                # After a bot's kill -9 the server refuses the restarted bot's reports (a second live
                # sender) until the dead one has been silent for evict_after: allow that too.
                bound = max(45.0, self.every - self.window - 1.0)
                if kind == "kill_bot":
                    bound = max(bound, EVICT_AFTER + 30.0)
                ok, took = await self.settle(time.monotonic() + bound)
                jd = self.journal_diffs() or {}
                jok = bool(jd) and all(abs(v) < tolerance(m) for m, v in jd.items())
                res = FaultResult(n, kind, round(at, 1), detail, ok, None if took is None else round(took, 1),
                                  {k: round(v, 8) for k, v in self.last_diff.items()}, round(self.slot_peak, 8),
                                  jok, {k: round(v, 8) for k, v in jd.items()})
                self.faults.append(res)
                self.log(f"  invariant 1 {'PASS' if ok else 'FAIL'}"
                         f"{f' after {took:.1f} s' if took is not None else ''}; diffs {res.diffs}; "
                         f"journals {'PASS' if jok else 'FAIL'} {res.journal_diffs}")
                next_at = max(next_at + self.every, self.now() + 2.0)
            await asyncio.sleep(max(0.0, self.seconds - self.now()))
        finally:
            self._stop = True
            with contextlib.suppress(Exception):
                await sampler
            with contextlib.suppress(Exception):
                await self.hooks.set_faults(drop_private_events=0.0, http_error_rate=0.0, latency_ms=0.0,
                                            maintenance=False, health=None)

    # ------------------------------------------------------------------ report
    def report(self) -> dict[str, Any]:
        state = self.state or {}
        acct = state.get("accounts", {}).get(API_KEY, {})
        counters = dict(self.counter_base)
        for k, v in self.counters.items():
            counters[k] = counters.get(k, 0) + v
        now = time.monotonic()
        for d in self.open_drift.values():
            d.ended = now
        longest = max(self.drifts, key=lambda d: d.seconds, default=None)
        peak = max(self.drifts, key=lambda d: d.peak, default=None)
        return {
            "seed": self.seed, "minutes": self.seconds / 60, "fault_every": self.every, "window": self.window,
            "ran_s": round(self.now(), 1),
            "fills": {b.name: count_fills(self.procs[b.name].journal) for b in BOTS if self.procs[b.name].journal},
            "restarts": {n: p.restarts for n, p in self.procs.items()},
            "counters": counters,
            "drift": {
                "stretches": len(self.drifts),
                "max_abs": round(peak.peak, 8) if peak else 0.0,
                "max_abs_market": peak.market if peak else None,
                "max_abs_seconds": round(peak.seconds, 1) if peak else 0.0,
                "longest_seconds": round(longest.seconds, 1) if longest else 0.0,
                "longest_market": longest.market if longest else None,
                "longest_peak": round(longest.peak, 8) if longest else 0.0,
                "samples_ok": self.samples_ok, "samples_bad": self.samples_bad, "samples_none": self.samples_none,
                "list": [{"market": d.market, "at": round(d.started - self.t0, 1), "seconds": round(d.seconds, 1),
                          "peak": round(d.peak, 8)} for d in self.drifts],
            },
            "limits_refused": state.get("limits_refused", {}),
            "loss_cuts": acct.get("loss_cuts"),
            "open_orders_left": len(acct.get("open_orders", [])),
            "events_dropped": state.get("events_dropped"),
            "rss_kb": {n: {"start": p.rss_start, "end": p.rss[-1][1] if p.rss else None,
                           "max": max((kb for _, kb in p.rss), default=None)} for n, p in self.procs.items()},
            "faults": [asdict(f) for f in self.faults],
            "final_diffs": self.last_diff,
            "final_journal_diffs": self.journal_diffs(),
            "errors": self.errors,
        }

    @staticmethod
    def table(r: dict[str, Any]) -> str:
        lines = [f"chaos: {r['ran_s']:.0f} s, seed {r['seed']}, a fault every {r['fault_every']:g} s "
                 f"(held {r['window']:.0f} s)", "",
                 f"{'#':>3} {'t s':>7} {'fault':<12} {'inv 1':<5} {'settle s':>8} {'peak |diff|':>11} {'journals':<8}  detail"]
        for f in r["faults"]:
            lines.append(f"{f['n']:>3} {f['at']:>7.0f} {f['kind']:<12} {'PASS' if f['settled'] else 'FAIL':<5} "
                         f"{f['settle_s'] if f['settle_s'] is not None else '-':>8} {f['drift_peak']:>11.5f} "
                         f"{'PASS' if f['journal_ok'] else 'FAIL':<8}  "
                         f"{f['detail']}")
        passed = sum(f["settled"] for f in r["faults"])
        lines += ["", f"invariant 1 after faults: {passed}/{len(r['faults'])} pass", ""]
        lines.append(f"{'process':<11} {'restarts':>8} {'RSS start MB':>12} {'end MB':>7} {'max MB':>7} {'fills':>6}")
        for n, m in r["rss_kb"].items():
            fills = r["fills"].get(n)
            lines.append(f"{n:<11} {r['restarts'][n]:>8} {_mb(m['start']):>12} {_mb(m['end']):>7} {_mb(m['max']):>7} "
                         f"{'' if fills is None else fills:>6}")
        c, d = r["counters"], r["drift"]
        lines += ["", f"server counters (summed over restarts): corrections {c.get('corrections', 0)}, "
                      f"reports {c.get('reports', 0)}, duplicates {c.get('duplicates', 0)}, "
                      f"evictions {c.get('evictions', 0)}, check_errors {c.get('check_errors', 0)}",
                  f"drift: {d['stretches']} stretches; max |diff| {d['max_abs']:.5f} on {d['max_abs_market']} "
                  f"lasting {d['max_abs_seconds']} s; longest {d['longest_seconds']} s on {d['longest_market']} "
                  f"(peak {d['longest_peak']:.5f}); samples ok {d['samples_ok']} / drifting {d['samples_bad']} "
                  f"/ no reading {d['samples_none']}",
                  "over-limit answers (limits_refused): "
                  + "; ".join(f"{k}: {v}" for k, v in r["limits_refused"].items()),
                  f"loss-cuts {r['loss_cuts']}, open orders left {r['open_orders_left']}, "
                  f"events dropped {r['events_dropped']}"]
        if r["errors"]:
            lines += ["", "errors:", *r["errors"]]
        return "\n".join(lines)


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f}" if kb else "-"


def _defaults() -> tuple[float, float]:
    suite = os.environ.get("BFSX_BENCH_SUITE") == "1"
    minutes = float(os.environ.get("BFSX_CHAOS_MINUTES", "3" if suite else "30"))
    return minutes, 20.0 if suite else 60.0


def main(argv: list[str] | None = None) -> None:
    minutes, every = _defaults()
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=minutes, help=f"run length (default {minutes:g})")
    ap.add_argument("--seed", type=int, default=1, help="seed of the simulator and of the fault draw (default 1)")
    ap.add_argument("--fault-every", type=float, default=every, help=f"seconds between faults (default {every:g})")
    ap.add_argument("--sample", type=float, default=1.0, help="seconds between invariant-1 readings (default 1)")
    ap.add_argument("--out", default=None, metavar="DIR", help="keep configs, logs, journals and chaos.json in DIR")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.out:
            folder = Path(args.out).resolve()
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bfsx-chaos-")))
        chaos = Chaos(folder, args.minutes, args.fault_every, args.seed, args.sample)
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        interrupted = False
        try:
            asyncio.run(chaos.run())
        except KeyboardInterrupt:
            interrupted = True
        finally:
            chaos.stop()
            signal.signal(signal.SIGTERM, previous)
        result = chaos.report()
        (folder / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
        print(chaos.table(result), flush=True)
        print(f"report: {folder / 'chaos.json'}", flush=True)
        if interrupted:
            raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
