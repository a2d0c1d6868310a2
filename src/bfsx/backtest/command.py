"""``bfsx backtest STRATEGY_PY STRATEGY_YAML (--data FILE_OR_DIR ... | --synthetic HOURS) [options]``.

Owns what the user sees: the argument checks (one line, exit 2, via :class:`~bfsx.errors.UserError`),
the progress bar (rich, on stderr, only on a terminal), the terminal summary, and the files in
``--out`` (``report.json``, ``fills.csv``, ``pnl.png``, ``per_hour.png``; ``sweep.json`` for a ``--grid``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bfsx.backtest.market import QUEUE_MODELS, QueueModel
from bfsx.backtest.report import fills_csv, render_text, report_bytes, write_charts
from bfsx.backtest.runner import BacktestSettings, run_backtest
from bfsx.backtest.sweep import parse_grid, run_sweep
from bfsx.bitflyer.products import get_product
from bfsx.errors import UserError

MAX_SYNTHETIC_HOURS = 24 * 31


def settings_from_args(
    strategy_py: str, strategy_yaml: str, *, data: Sequence[str] | None, synthetic: float | None, seed: int,
    latency_ms: float | None, product: str, queue: str, adverse_s: float, response_latency_ms: float | None = None,
) -> BacktestSettings:
    """Checked settings, or a one-line :class:`UserError` saying what is wrong."""
    py, yaml = Path(strategy_py), Path(strategy_yaml)
    if not py.is_file():
        raise UserError(f"strategy file not found: {py}")
    if not yaml.is_file():
        raise UserError(f"strategy yaml not found: {yaml}")
    if bool(data) == (synthetic is not None):
        raise UserError("give exactly one market: --data FILE_OR_DIR ... or --synthetic HOURS")
    if synthetic is not None and not 0 < synthetic <= MAX_SYNTHETIC_HOURS:
        raise UserError(f"--synthetic must be more than 0 and at most {MAX_SYNTHETIC_HOURS} hours, got {synthetic:g}")
    paths = [Path(d) for d in data or ()]
    for p in paths:
        if not p.exists():
            raise UserError(f"--data: no such file or folder: {p}")
    for flag, ms in (("--latency-ms", latency_ms), ("--response-latency-ms", response_latency_ms)):
        if ms is not None and not 0 <= ms <= 60_000:
            raise UserError(f"{flag} must be between 0 and 60000, got {ms:g}")
    if not 0 < adverse_s <= 3600 or not math.isfinite(adverse_s):
        raise UserError(f"--adverse-seconds must be more than 0 and at most 3600, got {adverse_s:g}")
    spec = get_product(product)
    if spec is None:
        raise UserError(f"--product: unknown product code {product!r}")
    if queue not in QUEUE_MODELS:
        raise UserError(f"--queue must be one of {', '.join(QUEUE_MODELS)}, got {queue!r}")
    q: QueueModel = "probabilistic" if queue == "probabilistic" else "risk_averse"
    return BacktestSettings(
        strategy_py=py, strategy_yaml=yaml, data=paths, synthetic_hours=synthetic, seed=seed,
        latency_ms=latency_ms, response_latency_ms=response_latency_ms, product=spec.code, queue=q,
        adverse_s=adverse_s,
    )


def _progress() -> tuple[Callable[[float, float], None] | None, Callable[[], None]]:
    """A rich progress bar on stderr when it is a terminal (virtual seconds done of the total)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("backtest"), BarColumn(), TextColumn("{task.completed:,.0f} s of market"),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    task = bar.add_task("backtest", total=None)
    bar.start()

    def update(done_s: float, total_s: float) -> None:
        bar.update(task, completed=done_s, total=total_s if math.isfinite(total_s) else None)

    return update, bar.stop


def run_backtest_command(settings: BacktestSettings, out: str | None, grid: Sequence[str] | None,
                         workers: int | None = None) -> int:
    """Run one backtest (or a sweep), print the summary, write the files."""
    out_dir = Path(out) if out else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out_dir}: {e.strerror or e}") from None
    if grid:
        axes = parse_grid(grid)
        table, body = run_sweep(settings, axes, workers=workers)
        print(table)
        if out_dir is not None:
            (out_dir / "sweep.json").write_bytes(body)
        return 0
    update, stop = _progress()
    try:
        result = run_backtest(settings, update)
    finally:
        stop()
    report = result.report
    if out_dir is not None:
        report["charts"] = write_charts(result.collector, report, out_dir)
        (out_dir / "report.json").write_bytes(report_bytes(report))
        (out_dir / "fills.csv").write_bytes(fills_csv(result.collector))
    print(render_text(report))
    if out_dir is not None:
        print(f"  written: {out_dir / 'report.json'}" + "".join(f", {out_dir / c}" for c in report["charts"]))
    return 0
