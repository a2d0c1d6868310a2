"""Re-render the sample charts in this folder: ``.venv/bin/python docs/charts/render_samples.py``.

Synthetic random walks (seeded, so the files only change when the charts do); "now" is
2024-03-14 15:00 JST.
"""

from __future__ import annotations

import random
from pathlib import Path

from bfsx.reporting.charts import render_bot_chart, render_market_chart, render_pnl_bitflyer
from bfsx.reporting.samples import BotSample, MarketSample

NOW = 1_710_396_000.0  # 2024-03-14 15:00 JST
HERE = Path(__file__).resolve().parent


def walk(n: int, step: float, seed: int, drift_at: float | None = None) -> list[MarketSample]:
    """``n`` checks ``step`` seconds apart up to NOW; the exchange disagrees for 3 min at ``drift_at``."""
    rnd = random.Random(seed)
    out: list[MarketSample] = []
    pos, pnl, price = 0.0, 0.0, 10_000_000.0
    for i in range(n):
        ts = NOW - (n - 1 - i) * step
        price += rnd.gauss(0, 2500)
        if rnd.random() < 0.15:
            pos = round(max(-0.08, min(0.08, pos + rnd.choice((-0.01, 0.01)))), 8)
        pnl += rnd.gauss(0, 60) + pos * rnd.gauss(0, 4000)
        drift = drift_at is not None and 0 <= ts - drift_at < 180
        out.append(MarketSample(ts, pos, pnl, price, pos + (0.03 if drift else 0.0)))
    return out


def main() -> None:
    six_hours = walk(720, 30.0, seed=26, drift_at=NOW - 3.5 * 3600)  # drift near 11:30
    charts = {
        "market_FX_BTC_JPY_6h.png": render_market_chart("FX_BTC_JPY", six_hours, 6, NOW),
        "market_BTC_JPY_first_minutes.png": render_market_chart("BTC_JPY", walk(50, 6.0, seed=3), 6, NOW),
        "pnl_total_bitflyer.png": render_pnl_bitflyer(
            {"FX_BTC_JPY": six_hours, "BTC_JPY": walk(720, 30.0, seed=12)}, 6, NOW
        ),
        "bot_mm_spread_6h.png": render_bot_chart(
            "mm_spread",
            [BotSample(s.ts, "mm_spread", "FX_BTC_JPY", s.position, s.profit, 480 - i % 40)
             for i, s in enumerate(walk(720, 30.0, seed=5))],
            6,
            NOW,
        ),
        "market_FX_BTC_JPY_48h_20k_samples.png": render_market_chart(
            "FX_BTC_JPY", walk(20_000, 48 * 3600 / 20_000, seed=9), 48, NOW
        ),
        "no_data.png": render_market_chart("FX_BTC_JPY", [], 6, NOW),
    }
    for name, png in charts.items():
        (HERE / name).write_bytes(png)
        print(f"{name}: {len(png):,} bytes")


if __name__ == "__main__":
    main()
