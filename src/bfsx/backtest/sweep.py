"""Parameter sweeps: ``--grid KEY=V1,V2,... [KEY=...]`` runs every combination in its own process.

Owns the grid syntax (:func:`parse_grid`: each value read as YAML, so ``1``, ``0.5``, ``true`` and
``take`` keep their types), the fan-out (:func:`run_sweep`: a ``ProcessPoolExecutor``, one backtest
per combination, each with the same data and seed), and the result: one table sorted by PnL (best
first, ties by the parameters) with drawdown and fill count, and ``sweep.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson
import yaml

from bfsx.backtest.runner import BacktestSettings, run_backtest
from bfsx.errors import UserError

MAX_COMBINATIONS = 1000


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["lot=0.01,0.02", "entry=take,join"]`` → ``[("lot", [0.01, 0.02]), ("entry", ["take", "join"])]``."""
    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or not raw.strip():
            raise UserError(f"--grid wants KEY=V1,V2,..., got {item!r}")
        if any(k == key for k, _ in axes):
            raise UserError(f"--grid: {key} given twice")
        values: list[Any] = []
        for text in raw.split(","):
            try:
                value = yaml.safe_load(text.strip())
            except yaml.YAMLError:
                value = text.strip()
            if value is None or isinstance(value, dict | list):
                raise UserError(f"--grid {key}: value {text.strip()!r} is not a number, a boolean or a word")
            values.append(value)
        axes.append((key, values))
    count = 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_COMBINATIONS:
        raise UserError(f"--grid: {count} combinations, at most {MAX_COMBINATIONS}")
    return axes


def _one(settings: BacktestSettings) -> dict[str, Any]:
    """One combination, in a worker process: the summary row of its report."""
    report = run_backtest(settings).report
    return {
        "parameters": settings.parameters,
        "pnl": report["pnl"]["total"],
        "realized": report["pnl"]["realized"],
        "fees": report["pnl"]["fees"],
        "max_drawdown": report["pnl"]["max_drawdown"],
        "fills": report["fills"]["count"],
        "orders": report["orders"]["accepted"],
        "refused": report["orders"]["refused"],
    }


def run_sweep(settings: BacktestSettings, axes: list[tuple[str, list[Any]]], *, workers: int | None = None
              ) -> tuple[str, bytes]:
    """Every combination of ``axes`` as its own backtest, in parallel; ``(table, sweep.json bytes)``."""
    keys = [k for k, _ in axes]
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(v for _, v in axes))]
    runs = [dataclasses.replace(settings, parameters={**settings.parameters, **c}) for c in combos]
    n = max(1, min(len(runs), workers or os.cpu_count() or 1))
    # spawn: a clean interpreter per worker (no inherited loop, threads or installed clock)
    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(_one, runs))
    rows.sort(key=lambda r: (-r["pnl"], orjson.dumps(r["parameters"], option=orjson.OPT_SORT_KEYS)))
    header = [*keys, "PnL", "drawdown", "fills", "orders", "refused"]
    body = [[*(str(r["parameters"][k]) for k in keys), f"{r['pnl']:+,.0f}", f"{r['max_drawdown']:,.0f}",
             str(r["fills"]), str(r["orders"]), str(r["refused"])] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    doc = {"format": "bfsx-backtest-sweep", "version": 1, "grid": dict(axes), "workers": n, "runs": rows}
    return "\n".join(lines), orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
