"""The position server's chart history starts with the sample carried in from before the period."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bfsx.config import TradeConfig
from bfsx.posserver.history import History
from bfsx.posserver.server import PosServer
from bfsx.reporting.charts import build_market_figure
from bfsx.reporting.samples import MarketSample

NOW = 1_710_396_000.0


def sample(ts: float, position: float) -> tuple[str, MarketSample, float, float | None]:
    return ("FX_BTC_JPY", MarketSample(ts, position, position * 1000, 10_000_000.0, position), 0.0, 0.0)


async def test_history_carries_in_the_last_sample_before_since(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    await history.open()
    try:
        for i, ts in enumerate((NOW - 5 * 3600, NOW - 3 * 3600, NOW - 1800, NOW - 600, NOW - 60)):
            await history.record([sample(ts, 0.01 * (i + 1))], [])
        got = await history.market_samples("FX_BTC_JPY", NOW - 3600)
        assert [s.ts for s in got] == [NOW - 3 * 3600, NOW - 1800, NOW - 600, NOW - 60]
        assert got[0].position == pytest.approx(0.02)  # held since 3 h ago: the state at the edge
        # Nothing before ``since``: nothing to carry in.
        assert len(await history.market_samples("FX_BTC_JPY", NOW - 6 * 3600)) == 5
        # Nothing from ``since`` on: the market is not reported at all (no stale carry-in alone).
        assert await history.market_samples("FX_BTC_JPY", NOW) == []
        # Thinning keeps at most ``limit`` and always the newest sample.
        thinned = await history.market_samples("FX_BTC_JPY", NOW - 6 * 3600, limit=2)
        assert len(thinned) == 2 and thinned[-1].ts == NOW - 60
    finally:
        await history.close()


async def test_market_history_feeds_the_chart_its_left_edge(tmp_path: Path) -> None:
    config = TradeConfig.model_validate(
        {"apikey": "demo-key-1", "secret": "demo-secret-1", "endpoint": "http://127.0.0.1:9",
         "pos_server": ["127.0.0.1", 51000], "pos_server_secret": "s", "console_output": False}
    )
    server = PosServer(config, state_dir=tmp_path)
    await server.history.open()
    try:
        await server.history.record([sample(NOW - 3 * 3600, -0.03)], [])
        await server.history.record([sample(NOW - 600, 0.01)], [])
        history = await server.market_history(NOW - 3600)
    finally:
        await server.history.close()
        await server.rest.close()
    assert [s.ts for s in history["FX_BTC_JPY"]] == [NOW - 3 * 3600, NOW - 600]
    fig = build_market_figure("FX_BTC_JPY", history["FX_BTC_JPY"], 1, NOW)
    line = next(line for line in fig.axes[0].get_lines() if line.get_label() == "bots total")
    xs = np.asarray(line.get_xdata(), dtype=float) * 86400
    ys = np.asarray(line.get_ydata(), dtype=float)
    # The full hour is drawn (not zoomed to the last 10 minutes), starting at the carried-in -0.03.
    assert fig.axes[1].get_xlim()[0] * 86400 == pytest.approx(NOW - 3600)
    assert xs[0] == pytest.approx(NOW - 3600) and ys[0] == pytest.approx(-0.03)


async def test_account_samples_round_trip_survive_a_reopen_and_are_pruned(tmp_path: Path) -> None:
    from bfsx.reporting.samples import AccountSample

    path = tmp_path / "history.db"
    history = History(path)
    await history.open()
    try:
        await history.record_account(AccountSample(NOW - 100 * 3600, 1e7, 0.0, 0.0, None, None, 0.0))  # old
        await history.record_account(AccountSample(NOW - 60, 2_000_000.0, -1500.0, 2_500_000.0, 0.7994, -2200.0,
                                                   -1800.0))
        await history.record_account(AccountSample(NOW, 2_000_000.0, 0.0, 0.0, None, None, 0.0))
    finally:
        await history.close()
    history = History(path)  # a restart keeps the account chart's history
    await history.open()
    try:
        got = await history.account_samples(NOW - 3600)
        assert [(s.ts, s.keep_rate, s.pnl_today) for s in got] == [(NOW - 60, 0.7994, -2200.0), (NOW, None, None)]
        await history.prune(NOW)  # past the horizon (48 h): gone
        assert len(await history.account_samples(0)) == 2
    finally:
        await history.close()
