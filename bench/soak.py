"""Memory over a soak: RSS of the simulator, the position server and two bots, as real processes.

Backs invariant 5 (every memory buffer is bounded). The run starts, each as its own process:

* ``bfsx sim`` with a busy market (``SimConfig.fast()``: 10 takers/s, a board snapshot every second,
  a ticker every 0.2 s), written to a ``sim.yaml``;
* ``bfsx pos-server`` with the demo's short timings (reports every second, checks every 3 s);
* two sample bots on FX_BTC_JPY, one account: ``strategies/mm_spread`` and ``strategies/scalping``.

Every second it reads ``VmRSS`` from ``/proc/<pid>/status`` of each process. At the end it stops
the bots (SIGTERM: each cancels its own orders), then the server and the simulator, counts the
fills each bot journaled (its SQLite ``fills`` table) and prints, per process: RSS at the end of the
warm-up, at the end and at its peak, and the growth slope in KB/min (least squares over the samples
after the warm-up, and over the second half of them alone). A process grows until its bounded
buffers are full, then its late slope falls towards 0; a leak keeps its slope. At this market's
~22 prints/s the 10,000-print buffers (bot feed, simulator history) fill in about 8 minutes, so
the short default run shows only the filling; ``--seconds 1200`` shows the plateau.

Run: ``python -m bench.soak [--seconds N] [--warmup N] [--keep DIR]`` (or ``python -m bench soak``).
The default (75 s sampled) takes about 80 s. Readings: docs/BENCHMARKS.md, "Memory over a soak".
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bfsx.demo import fleet_trade_config
from bfsx.net import free_port
from bfsx.sim.config import SimConfig

REPO = Path(__file__).resolve().parent.parent
PRODUCT = "FX_BTC_JPY"
BOTS = (("mm_fx", "mm_spread"), ("scalp_fx", "scalping"))
PROGRESS_EVERY = 30.0  # seconds between progress lines


@dataclass
class Tracked:
    """One process under watch and its RSS samples: (seconds since the soak began, KB)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path  # stdout and stderr
    journal: Path | None = None
    app_log: Path | None = None  # the process's own log file, where its errors go
    samples: list[tuple[float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """The result line of one process."""

    name: str
    pid: int
    warm_kb: int
    end_kb: int
    peak_kb: int
    slope: float  # KB/min over every post-warm-up sample
    late_slope: float  # KB/min over the second half of them
    fills: int | None


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, KB per minute (0 with fewer than two samples)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 60.0


def count_fills(journal: Path) -> int | None:
    """Rows in a bot journal's ``fills`` table (read-only), None when there is no journal."""
    if not journal.is_file():
        return None
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5.0)
    try:
        return int(db.execute("SELECT COUNT(*) FROM fills").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Soak:
    """Owns the processes and the samples of one soak run in ``folder``."""

    def __init__(self, folder: Path, seconds: float, warmup: float, interval: float = 1.0) -> None:
        self.folder = folder
        self.seconds = seconds
        self.warmup = warmup
        self.interval = interval
        self.sim_port = free_port()
        self.pos_port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.tracked: dict[str, Tracked] = {}
        self.sampled_for = 0.0

    # ------------------------------------------------------------------ setup
    def _write(self, name: str, data: dict[str, Any]) -> Path:
        path = self.folder / "config" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _spawn(self, name: str, *args: str, journal: Path | None = None, app_log: Path | None = None) -> Tracked:
        log = self.folder / "out" / f"{name}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "bfsx.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.folder,
                start_new_session=True,  # Ctrl+C reaches the bench only; it stops them in order
            )
        tracked = Tracked(name, proc, log, journal, app_log)
        self.tracked[name] = tracked
        return tracked

    def _wait_sim(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with (contextlib.suppress(urllib.error.URLError, OSError),
                  urllib.request.urlopen(f"{self.sim_url}/v1/gethealth", timeout=1.0) as r):
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the simulator did not answer /v1/gethealth in time")

    def _wait_pos_server(self, timeout: float = 30.0) -> None:
        # The bots ask it for the shared API budget at start: let it listen first.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.pos_port), 1.0):
                return
            time.sleep(0.1)
        raise RuntimeError("the position server did not listen in time")

    def start(self) -> None:
        sim_yaml = self._write("sim.yaml", SimConfig.fast().model_dump(mode="json", exclude_unset=True))
        self._spawn("sim", "sim", "--port", str(self.sim_port), "--config", str(sim_yaml), "--quiet")
        self._wait_sim()
        state = self.folder / "state"
        common = {**fleet_trade_config(self.sim_port, self.pos_port), "console_output": False}
        server_yaml = self._write("pos_server.yaml", {**common, "log_folder": str(state / "pos_server")})
        self._spawn("pos-server", "pos-server", str(server_yaml), app_log=state / "pos_server" / "pos_server.log")
        self._wait_pos_server()
        for bot, strategy in BOTS:
            py, yml = REPO / "strategies" / f"{strategy}.py", REPO / "strategies" / f"{strategy}.yaml"
            bot_yaml = self._write(f"{bot}.yaml", {
                **common, "product": PRODUCT, "bot_name": bot, "base_position": 0.0,
                "strategy_py": str(py), "strategy_yaml": str(yml), "log_folder": str(state / bot),
            })
            self._spawn(bot, "trade", str(bot_yaml), journal=state / bot / "journal.db", app_log=state / bot / f"{bot}.log")

    def _check_alive(self) -> None:
        for t in self.tracked.values():
            code = t.proc.poll()
            if code is not None:
                tails = "\n".join(f"--- {p.name}\n{_tail(p)}" for p in (t.log, t.app_log) if p is not None)
                raise RuntimeError(f"{t.name} exited early (code {code}); last lines of its output:\n{tails}")

    # ------------------------------------------------------------------ sampling
    def sample(self) -> None:
        """Sample every process each ``interval`` for ``seconds``; a progress line now and then."""
        t0 = time.monotonic()
        next_at, next_progress = t0, t0 + PROGRESS_EVERY
        while True:
            now = time.monotonic()
            if now - t0 > self.seconds:
                break
            self._check_alive()
            for t in self.tracked.values():
                kb = rss_kb(t.proc.pid)
                if kb is not None:
                    t.samples.append((now - t0, kb))
            self.sampled_for = now - t0
            if now >= next_progress:
                next_progress += PROGRESS_EVERY
                line = "  ".join(f"{t.name} {t.samples[-1][1] / 1024:.1f}" for t in self.tracked.values() if t.samples)
                fills = sum(count_fills(t.journal) or 0 for t in self.tracked.values() if t.journal)
                print(f"[{now - t0:5.0f} s] RSS MB: {line}  fills {fills}", flush=True)
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Bots first (SIGTERM: they cancel their orders), then the server and the simulator; then
        SIGKILL whatever is still there. A second Ctrl+C during this only makes it skip to SIGKILL."""
        try:
            self._terminate([t for t in self.tracked.values() if t.journal is not None], 30.0)
            self._terminate([t for t in self.tracked.values() if t.journal is None], 10.0)
        finally:
            for t in self.tracked.values():
                if t.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        t.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        t.proc.wait(5.0)

    @staticmethod
    def _terminate(group: list[Tracked], timeout: float) -> None:
        for t in group:
            if t.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    t.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for t in group:
            with contextlib.suppress(subprocess.TimeoutExpired):
                t.proc.wait(max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ results
    def rows(self) -> list[Row]:
        out: list[Row] = []
        for t in self.tracked.values():
            if not t.samples:
                continue
            post = [s for s in t.samples if s[0] >= self.warmup] or t.samples[-1:]
            late = post[len(post) // 2:]
            out.append(Row(
                t.name, t.proc.pid, post[0][1], t.samples[-1][1], max(r for _, r in t.samples),
                slope_kb_per_min(post), slope_kb_per_min(late),
                count_fills(t.journal) if t.journal is not None else None,
            ))
        return out

    def write_csv(self, path: Path) -> None:
        """Every sample, one row per second: ``t,<process>,...`` in KB (empty when missing)."""
        names = list(self.tracked)
        by_t: dict[int, dict[str, int]] = {}
        for name, t in self.tracked.items():
            for at, kb in t.samples:
                by_t.setdefault(round(at / self.interval), {})[name] = kb
        lines = [",".join(["t", *names])]
        for k in sorted(by_t):
            lines.append(",".join([f"{k * self.interval:g}", *(str(by_t[k].get(n, "")) for n in names)]))
        path.write_text("\n".join(lines) + "\n")

    def table(self) -> str:
        rows = self.rows()
        minutes = max(self.sampled_for - self.warmup, 0.0) / 60
        head = (f"{'process':<11} {'pid':>7} {'RSS warm MB':>12} {'RSS end MB':>11} {'peak MB':>8} "
                f"{'slope KB/min':>13} {'late KB/min':>12} {'fills':>6}")
        lines = [
            f"soak: {self.sampled_for:.0f} s sampled every {self.interval:g} s, warm-up {self.warmup:.0f} s, "
            f"slopes over the {minutes:.1f} min after it (late = its second half)",
            head, "-" * len(head),
        ]
        for r in rows:
            fills = "" if r.fills is None else str(r.fills)
            lines.append(f"{r.name:<11} {r.pid:>7} {r.warm_kb / 1024:>12.1f} {r.end_kb / 1024:>11.1f} "
                         f"{r.peak_kb / 1024:>8.1f} {r.slope:>+13.0f} {r.late_slope:>+12.0f} {fills:>6}")
        total_fills = sum(r.fills or 0 for r in rows)
        if total_fills == 0:
            lines.append("warning: no bot journaled a fill: the fill path was not exercised")
        return "\n".join(lines)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=75.0, help="seconds of sampling (default 75)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds excluded from the slopes (default: a quarter of the run, 10 to 60 s)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="run in DIR and keep the configs, logs, journals and rss.csv (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(60.0, max(10.0, args.seconds / 4))
    if not 0 <= warmup < args.seconds:
        ap.error("--warmup must be shorter than --seconds")

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed bench still stops its children
    with contextlib.ExitStack() as stack:
        if args.keep:
            folder = Path(args.keep).resolve()
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bfsx-soak-")))
        soak = Soak(folder, args.seconds, warmup, args.interval)
        interrupted = False
        try:
            print(f"soak: sim, pos-server and {len(BOTS)} bots ({', '.join(s for _, s in BOTS)}) on {PRODUCT}; "
                  f"{args.seconds:.0f} s, warm-up {warmup:.0f} s; folder {folder}", flush=True)
            soak.start()
            soak.sample()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            try:
                soak.stop()
            finally:
                signal.signal(signal.SIGTERM, previous)
        print(soak.table(), flush=True)
        if args.keep:
            soak.write_csv(folder / "rss.csv")
            print(f"samples: {folder / 'rss.csv'}", flush=True)
        if interrupted:
            print("interrupted: the numbers above cover the part that ran", flush=True)
            raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
