"""Budget leases under load: N bots on one account, each trying ≥ 4 small orders a second.

Real processes: a ``bfsx sim`` (one shared account), N ``bfsx trade`` bots running
``bench/strategies/spam.py`` (LIMIT 0.01 far from the touch, the oldest of them cancelled), and the
position server in this process (it leases the account's API budget to the bots). A third of the
way in, a MARKET BUY 0.03 is sent on the account behind every bot's back (a trade no bot placed):
the server must correct it, once. At the end it reports, per fleet size:

* ``over-limit``: answers -1 / HTTP 429 the exchange gave (the simulator's ``limits_refused`` when
  it has them, else the bots' log lines) — the target is **0**;
* ``penalty``: whether the small-order penalty hour started (it cannot without a breach);
* ``tried`` / ``sent`` / ``held``: orders the strategies tried, that went out, that the bots held
  back themselves (lease used up): the leases turn a breach into local refusals;
* ``fix``: the injected drift's correction — ``1/0`` is one correcting order, no failed one;
* ``inv1``: exchange position = Σ bots' positions + base at the end.

Run: ``python -m bench.lease [--bots 2,4,6] [--seconds 60] [--scaled]`` (``--scaled``: the
simulator's limits scaled down as in the test, for a quick look). The test
``tests/posserver/test_lease_processes.py`` runs the same harness, scaled and short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml

from bfsx.bitflyer.rest import RestClient
from bfsx.config import TradeConfig
from bfsx.net import free_port
from bfsx.posserver.lease_desk import LeaseLimits
from bfsx.posserver.server import PosServer

HERE = Path(__file__).resolve().parent
SPAM = HERE / "strategies" / "spam.py"
FX = "FX_BTC_JPY"
KEY, API_SECRET = "lease-key", "lease-secret-3f9a1c"
POS_SECRET = "lease-bench-secret-7d21e0"
#: bitFlyer's limits (the simulator's defaults).
FULL: dict[str, Any] = {}
#: Scaled down so a short test run crosses several windows: per key 150 private / 100 order calls
#: per 20 s, 20 small orders per 10 s (2 per 10 s for 600 s after a breach), per IP 300 per 20 s.
SCALED: dict[str, Any] = {"window_seconds": 20, "private": 150, "orders": 100, "small_orders": 20,
                          "small_window_seconds": 10, "small_penalty_orders": 2, "small_penalty_seconds": 600,
                          "ip": 300}
OVER_LIMIT = re.compile(r"Over API limit|HTTP 429")
DONE = re.compile(r"spam done: tried (\d+) accepted (\d+) refused (\d+) failed (\d+)")


@dataclass
class Result:
    bots: int
    seconds: float
    over_limit: int = 0  # -1 answers seen (simulator counter or bots' logs)
    over_limit_source: str = "bot logs"
    penalty: bool = False
    tried: int = 0
    sent: int = 0
    held: int = 0
    failed: int = 0
    corrections: int = 0
    correction_errors: int = 0
    drift_fixed: bool = False
    invariant_1: bool = False
    settles: int = 0
    recovered: int = 0  # resyncs of the bots that found fills whose events were lost
    grants: int = 0
    per_bot: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.bots} bots × {self.seconds:.0f} s: over-limit {self.over_limit} ({self.over_limit_source}), "
                f"penalty {'YES' if self.penalty else 'no'}, tried {self.tried} sent {self.sent} "
                f"held {self.held} failed {self.failed} ({self.sent / max(self.seconds, 1):.2f} sent/s), "
                f"fix {self.corrections}/{self.correction_errors} {'ok' if self.drift_fixed else 'NOT FIXED'}, "
                f"inv1 {'ok' if self.invariant_1 else 'BROKEN'}, grants {self.grants}, settles {self.settles}, "
                f"recoveries {self.recovered}")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return orjson.loads(r.read())


def _launch_bot(folder: Path, name: str, url: str, ws: str, pos_port: int, rate: float, seconds: float,
                mode: str) -> subprocess.Popen[bytes]:
    """Write a bot's trade.yaml and spam.yaml and start ``bfsx trade`` on them."""
    d = folder / name
    d.mkdir(exist_ok=True)
    (d / "spam.yaml").write_text(yaml.safe_dump({"parameters": {"rate": rate, "seconds": seconds, "mode": mode}}))
    (d / "trade.yaml").write_text(yaml.safe_dump(dict(
        apikey=KEY, secret=API_SECRET, product=FX, endpoint=url, ws_endpoint=ws, bot_name=name,
        log_folder=str(d / "logs"), console_output=False, health_interval=0.5, api_reserve=5,
        pos_server=["127.0.0.1", pos_port], pos_server_secret=POS_SECRET,
        pos_server_report_interval=0.5, pos_server_query_interval=1.0,
    )))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    with open(d / "stderr.txt", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "bfsx.cli", "trade", "trade.yaml", str(SPAM), "spam.yaml"],
                                cwd=d, stdout=subprocess.DEVNULL, stderr=err, env=env)


def _start_sim(folder: Path, limits: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = folder / "sim.yaml"
    cfg.write_text(yaml.safe_dump({
        "accounts": [{"api_key": KEY, "api_secret": API_SECRET, "jpy": 100_000_000, "btc": 10}],
        "limits": limits,
        "market": {"snapshot_interval": 1.0, "ticker_interval": 0.5},
    }))
    err = open(folder / "sim.stderr", "wb")  # noqa: SIM115 - the process owns it until the end
    proc = subprocess.Popen([sys.executable, "-m", "bfsx.cli", "sim", "--port", str(port), "--seed", "3", "--quiet",
                             "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"bfsx sim exited {proc.returncode}: {(folder / 'sim.stderr').read_text()[-500:]}")
        with contextlib.suppress(OSError):
            _get(f"{url}/_sim/state")
            return proc, url
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("bfsx sim did not start")
        time.sleep(0.1)


def _net(url: str) -> Decimal:
    return Decimal(repr(_get(f"{url}/_sim/state")["accounts"][KEY]["positions"][FX]["net"]))


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def run_fleet(n_bots: int, seconds: float, folder: Path, *, scaled: bool = True, rate: float = 4.0,
                    mode: str = "rest", drift: Decimal | None = Decimal("0.03"), drop_events: float = 0.0,
                    check_interval: float = 1.0, consecutive: int = 3, probe_penalty: bool = True,
                    settle_first: bool = True) -> Result:
    """One fleet run; see the module docstring. ``drop_events``: the simulator drops this share of
    the private events (lost fills) while the bots trade. ``probe_penalty``: also probe the
    account for a penalty after the run (else only the simulator's small-order refusals tell).
    ``settle_first=False``: the server corrects without asking the bots to settle (the old way)."""
    sim, url = _start_sim(folder, SCALED if scaled else FULL)
    ws = url.replace("http://", "ws://") + "/json-rpc"
    res = Result(n_bots, seconds)
    bots: dict[str, subprocess.Popen[bytes]] = {}
    server: PosServer | None = None
    try:
        cfg = TradeConfig.model_validate(dict(
            apikey=KEY, secret=API_SECRET, endpoint=url, ws_endpoint=ws, pos_server=["127.0.0.1", 51000],
            pos_server_secret=POS_SECRET, pos_server_check_interval=check_interval,
            pos_server_consecutive=consecutive, pos_server_evict_after=30.0, pos_server_report_interval=0.5,
            adjust_max_size=0.1, console_output=False,
            # The injected drift's direction against the account's position is random here (the
            # bots trade either way): correct it whatever it does to the exposure, as BFS-X did, so
            # the run measures the leases and their one correction, not the reduce-only rule.
            pos_server_correct_all=True,
        )).model_copy(update={"pos_server": ("127.0.0.1", 0)})
        server = PosServer(cfg, state_dir=folder / "server", console=False, startup_grace=1.0)
        if scaled:
            s = SCALED
            server.leases.limits = LeaseLimits(
                private=s["private"], orders=s["orders"], window_s=float(s["window_seconds"]),
                small_orders=s["small_orders"], small_penalty=s["small_penalty_orders"],
                small_window_s=float(s["small_window_seconds"]), ip=s["ip"])
        if not settle_first:
            server.leases.gate = lambda *a, **k: ""  # type: ignore[method-assign]
        await server.start()
        for i in range(1, n_bots + 1):
            bots[f"spam{i}"] = _launch_bot(folder, f"spam{i}", url, ws, server.port, rate, seconds, mode)

        def log(name: str) -> str:
            with contextlib.suppress(OSError):
                return (folder / name / "logs" / f"{name}.log").read_text(errors="replace")
            return ""

        def alive() -> None:
            for name, proc in bots.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}: "
                                       f"{(folder / name / 'stderr.txt').read_text()[-1500:]}\n{log(name)[-1500:]}")

        def all_logged(text: str) -> bool:
            alive()
            return all(text in log(name) for name in bots)

        await _until(lambda: all_logged("spam ready"), 90, "every bot trading")
        if drop_events:
            await _fault(url, drop_private_events=drop_events)
        started = time.monotonic()
        if drift is not None:
            await asyncio.sleep(seconds / 3)
            async with RestClient(url, KEY, API_SECRET) as rest:  # behind every bot's back
                await rest.send_child_order(FX, "BUY" if drift > 0 else "SELL", float(abs(drift)))
        await _until(lambda: all_logged("spam done"), seconds + 60, "every bot done")
        if drop_events:
            await _fault(url, drop_private_events=0.0)
        res.seconds = time.monotonic() - started
        # Settled: exchange = Σ bots + base (the correction, if any, has landed), then a few more
        # checks, so a second (wrong) correction would show.
        await _until(lambda: _net(url) == server.registry.expected(FX), 90, "exchange = Σ bots + base")
        checks = server.checks
        await _until(lambda: server is not None and server.checks >= checks + consecutive + 2, 60, "quiet checks")
        state = _get(f"{url}/_sim/state")
        refused = state.get("limits_refused")
        if isinstance(refused, dict):
            # Per key, and per address for public calls that named none (every bot's health poll).
            res.over_limit = sum(int(v) for row in refused.values() if isinstance(row, dict)
                                 for v in row.values() if isinstance(v, int))
            res.over_limit_source = "simulator limits_refused"
        else:
            res.over_limit = sum(len(OVER_LIMIT.findall(log(n))) for n in bots)
        if isinstance(refused, dict) and int(refused.get(KEY, {}).get("small_orders", 0)):
            res.penalty = True  # a small order refused: the breach that starts the penalty
        elif probe_penalty:
            res.penalty = await _penalised(url, SCALED if scaled else {})
        for name in bots:
            m = DONE.search(log(name))
            if m:
                t, a, r, f = (int(x) for x in m.groups())
                res.per_bot[name] = (t, a, r, f)
                res.tried += t
                res.sent += a
                res.held += r
                res.failed += f
            res.settles += log(name).count("settled for the position server")
            res.recovered += log(name).count("resync recovered")
        res.corrections = server.counters["corrections"]
        res.correction_errors = server.counters["correction_errors"]
        res.grants = server.leases.grants
        res.invariant_1 = _net(url) == server.registry.expected(FX)
        res.drift_fixed = res.invariant_1 and (drift is None or (res.corrections == 1 and res.correction_errors == 0))
        return res
    finally:
        for proc in bots.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in bots.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        if server is not None:
            await server.stop()
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()


async def _penalised(url: str, limits: dict[str, Any]) -> bool:
    """Whether the account is in the small-order penalty: once the small window has passed, the
    penalty limit + 1 small orders in a row (resting far from the touch, cancelled at once)."""
    await asyncio.sleep(float(limits.get("small_window_seconds", 60.0)) + 0.5)
    async with RestClient(url, KEY, API_SECRET) as rest:
        bid = float(_get(f"{url}/_sim/state")["markets"][FX]["best_bid"])
        for _ in range(int(limits.get("small_penalty_orders", 10)) + 1):
            try:
                acc = await rest.send_child_order(FX, "BUY", 0.01, round(bid * 0.8))
            except Exception:
                return True
            await rest.cancel_child_order(FX, acceptance_id=acc)
    return False


async def _fault(url: str, **kw: Any) -> None:
    def post() -> None:
        req = urllib.request.Request(f"{url}/_sim/faults", data=orjson.dumps(kw),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    await asyncio.to_thread(post)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bots", default="2,4,6", help="fleet sizes, comma separated")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=4.0, help="small orders a second each bot tries")
    ap.add_argument("--scaled", action="store_true", help="the simulator's limits scaled down (as the test)")
    ap.add_argument("--check-interval", type=float, default=5.0,
                    help="pos_server_check_interval (its getpositions polls share the private bucket)")
    ap.add_argument("--keep", help="keep the run's folders here")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bfsx-lease-"))
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, filename=root / "server.log")  # the in-process server's lines
    print(f"check every {args.check_interval:g} s × 3; {args.rate:g} small orders/s tried per bot; "
          f"limits {'scaled' if args.scaled else 'of bitFlyer'}; logs in {root}", flush=True)
    for n in (int(x) for x in args.bots.split(",")):
        r = asyncio.run(run_fleet(n, args.seconds, root / f"fleet{n}", scaled=args.scaled, rate=args.rate,
                                  check_interval=args.check_interval))
        print(r.line(), flush=True)
        for name, (t, a, h, f) in sorted(r.per_bot.items()):
            print(f"    {name}: tried {t} sent {a} held {h} failed {f}", flush=True)


if __name__ == "__main__":
    main()
