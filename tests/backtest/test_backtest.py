"""``bfsx backtest`` on the synthetic market: the strategy's clock, determinism, risk checks in a
backtest, sweeps, and one-line refusals of bad arguments."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bfsx import clock
from bfsx.backtest.command import settings_from_args
from bfsx.backtest.report import report_bytes
from bfsx.backtest.runner import SYNTHETIC_START, BacktestSettings, run_backtest
from bfsx.backtest.sweep import parse_grid, run_sweep
from bfsx.backtest.vloop import BacktestStalled, VirtualLoop
from bfsx.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
MM_PY, MM_YAML = ROOT / "strategies" / "mm_spread.py", ROOT / "strategies" / "mm_spread.yaml"

CLOCK_STRATEGY = '''
import bfsx

SEEN: list[tuple[float, str]] = []


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.every(10.0, self.tick, basetime=3.0)

    def tick(self) -> None:
        SEEN.append((self.time(), self.now.isoformat()))
'''

OVERSIZED = '''
import bfsx


class MyStrategy(bfsx.Strategy):
    """Asks for more than the yaml allows: every order must come back refused, none sent."""

    def initialize(self) -> None:
        self.results = []
        self.every(1.0, self.tick)

    async def tick(self) -> None:
        if self.best_bid:
            await self.buy(0.5)  # above max_order_size
            await self.buy(0.02, self.best_bid - 1)  # allowed once; the next would pass max_position
'''


def _settings(py: Path, yaml: Path, hours: float, **kw: object) -> BacktestSettings:
    return BacktestSettings(strategy_py=py, strategy_yaml=yaml, synthetic_hours=hours, **kw)  # type: ignore[arg-type]


def test_the_strategy_clock_is_the_replay_clock(tmp_path: Path) -> None:
    """self.time() / self.now run on the virtual clock; every(basetime=) aligns to its seconds; the
    wall clock is back once the backtest ends."""
    py = tmp_path / "clocked.py"
    py.write_text(CLOCK_STRATEGY)
    yaml = tmp_path / "clocked.yaml"
    yaml.write_text("subscribe: {ticker: false}\n")
    run_backtest(_settings(py, yaml, 0.05))
    seen = sys.modules["bfsx_user_strategy_clocked"].SEEN
    start = SYNTHETIC_START.timestamp()
    assert len(seen) == 18  # 180 s of market, one call every 10 s at :03, :13, ...
    assert [t for t, _ in seen] == [start + 3.0 + 10.0 * k for k in range(18)]
    assert seen[0][1] == "2026-01-05T09:00:03+09:00"
    assert clock.current() is clock.WALL and clock.time is not None and abs(clock.time() - start) > 1e6


def test_the_virtual_loop_jumps_to_the_next_timer_and_refuses_to_wait_forever() -> None:
    vc = clock.VirtualClock(1_000_000.0)
    loop = VirtualLoop(vc)
    try:
        loop.run_until_complete(asyncio.sleep(86_400.0))  # a day of sleeps, at once
        assert vc.time() == pytest.approx(1_000_000.0 + 86_400.0, abs=1e-6)

        async def forever() -> None:
            await asyncio.get_running_loop().create_future()

        with pytest.raises(BacktestStalled):
            loop.run_until_complete(forever())
    finally:
        loop.close()


def test_a_backtest_is_deterministic_to_the_byte(tmp_path: Path) -> None:
    a = run_backtest(_settings(MM_PY, MM_YAML, 0.05, seed=7)).report
    b = run_backtest(_settings(MM_PY, MM_YAML, 0.05, seed=7)).report
    assert a["fills"]["count"] > 10 and a["orders"]["accepted"] > 10  # it traded
    assert report_bytes(a) == report_bytes(b)
    c = run_backtest(_settings(MM_PY, MM_YAML, 0.05, seed=8)).report
    assert report_bytes(c) != report_bytes(a)  # the seed is an input


def test_risk_checks_refuse_in_a_backtest_too(tmp_path: Path) -> None:
    py = tmp_path / "oversized.py"
    py.write_text(OVERSIZED)
    yaml = tmp_path / "oversized.yaml"
    yaml.write_text("max_order_size: 0.1\nmax_position: 0.03\nsubscribe: {ticker: false}\n")
    report = run_backtest(_settings(py, yaml, 0.02)).report
    refusals = report["orders"]["refusals"]
    assert sum(n for k, n in refusals.items() if k.startswith("size N above max_order_size")) >= 60
    assert sum(n for k, n in refusals.items() if k.startswith("max_position")) >= 60
    assert report["orders"]["accepted"] == 1  # only the first 0.02 limit: then the resting one counts
    assert abs(report["position"]["max_long"]) <= 0.03 + 1e-9
    assert all(row["volume"] <= 0.02 + 1e-9 for row in report["per_hour"])


def test_a_sweep_runs_four_combinations_in_parallel_sorted_by_pnl(tmp_path: Path) -> None:
    axes = parse_grid(["lot=0.01,0.02", "min_spread=200,400"])
    table, body = run_sweep(_settings(MM_PY, MM_YAML, 0.02), axes, workers=2)
    doc = json.loads(body)
    runs = doc["runs"]
    assert doc["workers"] == 2 and len(runs) == 4
    assert sorted((r["parameters"]["lot"], r["parameters"]["min_spread"]) for r in runs) == [
        (0.01, 200), (0.01, 400), (0.02, 200), (0.02, 400)]
    assert [r["pnl"] for r in runs] == sorted((r["pnl"] for r in runs), reverse=True)
    assert any(r["fills"] for r in runs)
    lines = table.splitlines()
    assert lines[0].split() == ["lot", "min_spread", "PnL", "drawdown", "fills", "orders", "refused"]
    assert len(lines) == 5
    # a combination alone gives the row the sweep printed for it
    best = runs[0]
    alone = run_backtest(_settings(MM_PY, MM_YAML, 0.02, parameters=best["parameters"])).report
    assert alone["pnl"]["total"] == best["pnl"] and alone["fills"]["count"] == best["fills"]


@pytest.mark.parametrize(("args", "message"), [
    (["--synthetic", "1", "--data", "x"], "give exactly one market"),
    ([], "give exactly one market"),
    (["--synthetic", "-2"], "--synthetic must be more than 0"),
    (["--data", "no/such/dir"], "--data: no such file or folder"),
    (["--synthetic", "1", "--product", "DOGE_JPY"], "--product: unknown product code"),
    (["--synthetic", "1", "--queue", "optimistic"], "--queue must be one of"),
    (["--synthetic", "1", "--latency-ms", "-5"], "--latency-ms must be between"),
    (["--synthetic", "1", "--response-latency-ms", "1e9"], "--response-latency-ms must be between"),
    (["--synthetic", "1", "--grid", "lot"], "--grid wants KEY=V1,V2"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bfsx.cli", "backtest", str(MM_PY), str(MM_YAML), *args],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfsx backtest: ") and message in lines[0], proc.stderr
    assert proc.stdout == ""


def test_a_missing_strategy_file_is_refused_before_running(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="strategy file not found"):
        settings_from_args(str(tmp_path / "none.py"), str(MM_YAML), data=None, synthetic=1.0, seed=1,
                           latency_ms=None, product="FX_BTC_JPY", queue="risk_averse", adverse_s=5.0)


def test_the_command_writes_the_report_and_charts(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bfsx.cli", "backtest", str(MM_PY), str(MM_YAML), "--synthetic",
                           "0.02", "--out", "out"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backtest mm_spread.py on FX_BTC_JPY")
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["charts"] == ["pnl.png", "per_hour.png"]
    for name in report["charts"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "fills.csv").read_text().splitlines()
    assert lines[0].startswith("exec_time,side,price") and len(lines) == report["fills"]["count"] + 1


def test_the_report_is_bounded_and_its_figures_do_not_depend_on_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from bfsx.backtest import report as report_mod

    full = run_backtest(_settings(MM_PY, MM_YAML, 0.03))
    monkeypatch.setattr(report_mod, "MAX_SAMPLES", 40)
    monkeypatch.setattr(report_mod, "MAX_FILL_ROWS", 10)
    monkeypatch.setattr(report_mod, "FILLED_ORDERS_WINDOW", 1000)
    small = run_backtest(_settings(MM_PY, MM_YAML, 0.03))
    assert len(full.collector.samples) == 108 and len(small.collector.samples) < 40
    assert full.report["fills"]["count"] > 10 and len(small.collector.fills) == 10
    assert small.report["fills"]["csv_rows_left_out"] == small.report["fills"]["count"] - 10
    for key in ("pnl", "position", "orders", "per_hour"):
        assert small.report[key] == full.report[key], key
    assert {k: v for k, v in small.report["fills"].items() if k != "csv_rows_left_out"} == {
        k: v for k, v in full.report["fills"].items() if k != "csv_rows_left_out"}


TIMED = '''
import bfsx

WAITED: list[float] = []


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.every(1.0, self.tick)

    async def tick(self) -> None:
        if self.best_bid and not WAITED:
            t0 = self.time()
            await self.buy(0.01, self.best_bid - 5000)
            WAITED.append(self.time() - t0)
'''


def test_order_entry_and_response_latency_are_separate(tmp_path: Path) -> None:
    """A POST costs the entry latency on the way in and the response latency on the way back, in
    the strategy's own clock; the report names both."""
    py = tmp_path / "timed.py"
    py.write_text(TIMED)
    yaml = tmp_path / "timed.yaml"
    yaml.write_text("subscribe: {ticker: false}\n")
    report = run_backtest(_settings(py, yaml, 0.005, latency_ms=7.0, response_latency_ms=120.0)).report
    waited = sys.modules["bfsx_user_strategy_timed"].WAITED
    assert waited == [pytest.approx(0.127, abs=1e-6)]
    assert report["model"]["latency"] == "order entry 7 ms, response 120 ms (constant)"


def test_a_backtest_restores_the_collector_s_thresholds(tmp_path: Path) -> None:
    """The backtest collects young objects less often while it runs, and gives the process its own
    thresholds back afterwards (a sweep or a test runs many backtests in one process)."""
    import gc

    from bfsx.backtest import runner

    saved = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    def progress(done: float, total: float) -> None:
        seen.append(gc.get_threshold())

    try:
        gc.set_threshold(700, 11, 12)
        null = tmp_path / "null.py"
        null.write_text("import bfsx\n\n\nclass MyStrategy(bfsx.Strategy):\n    pass\n")
        yaml = tmp_path / "null.yaml"
        yaml.write_text("subscribe: {ticker: false}\n")
        run_backtest(_settings(null, yaml, 0.002), on_progress=progress)
        assert seen and all(t == (runner.GC_YOUNG_THRESHOLD, 11, 12) for t in seen)
        assert gc.get_threshold() == (700, 11, 12)
    finally:
        gc.set_threshold(*saved)
