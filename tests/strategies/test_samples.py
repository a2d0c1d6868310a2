"""The two sample strategies trade actively on the simulator, stay within their caps, log no error,
and leave the exchange agreeing with the bot (issue 7 item 3).

How often they trade is measured on the virtual clock (a backtest of ten minutes of market gives the
same fills on any host); the live run proves the same strategies trade through real sockets, and ends
once each bot has traded enough (bounded) rather than after a fixed time that a loaded host may fill
with fewer fills."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bfsx.backtest.runner import BacktestSettings, run_backtest
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.runtime import BotRuntime
from bfsx.config import TradeConfig, load_strategy_config
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

ROOT = Path(__file__).resolve().parents[2]
MIN_RUN_S = 20.0  # watch the caps at least this long
MAX_RUN_S = 150.0  # a bot that has not traded enough by then is a failure
LIVE_FILLS = {"mm_spread": 3, "scalping": 2}  # scalping: one round trip (entry and exit)


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.fast(seed=11)


def _runtime(sim: SimServer, tmp: Path, name: str, key: str, secret: str) -> BotRuntime:
    trade = TradeConfig(
        apikey=SecretStr(key), secret=SecretStr(secret), product="FX_BTC_JPY",
        endpoint=sim.url, ws_endpoint=sim.ws_url, bot_name=name, log_folder=str(tmp / name),
        console_output=False, health_interval=0.5,
    )
    strategy_cfg = load_strategy_config(ROOT / "strategies" / f"{name}.yaml")
    cls = load_strategy_class(ROOT / "strategies" / f"{name}.py")
    return BotRuntime(trade, strategy_cfg, cls())


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_samples_trade_actively_within_caps(sim: SimServer, tmp_path: Path) -> None:
    errors = _Errors()
    logging.getLogger("bfsx").addHandler(errors)
    bots = {
        "mm_spread": _runtime(sim, tmp_path, "mm_spread", "demo-key-1", "demo-secret-1"),
        "scalping": _runtime(sim, tmp_path, "scalping", "demo-key-2", "demo-secret-2"),
    }
    caps = {
        "mm_spread": float(bots["mm_spread"].strategy_config.parameters["max_position"]),
        "scalping": float(bots["scalping"].strategy_config.parameters["lot"]),
    }
    peak = dict.fromkeys(bots, 0.0)
    runs = [asyncio.ensure_future(rt.run()) for rt in bots.values()]
    try:
        started = time.monotonic()
        while time.monotonic() - started < MAX_RUN_S:
            if time.monotonic() - started >= MIN_RUN_S and all(
                    rt.fills_applied >= LIVE_FILLS[name] for name, rt in bots.items()):
                break
            for name, rt in bots.items():
                peak[name] = max(peak[name], abs(rt.position.size))
            await asyncio.sleep(0.05)
            for r in runs:
                if r.done():
                    r.result()  # a runtime that ended early is a failure: raise its error
    finally:
        for rt in bots.values():
            rt.request_stop()
        codes = await asyncio.wait_for(asyncio.gather(*runs), 60)
        logging.getLogger("bfsx").removeHandler(errors)

    assert codes == [0, 0]
    state = sim.state()
    for (name, rt), key in zip(bots.items(), ("demo-key-1", "demo-key-2"), strict=True):
        assert rt.fills_applied >= LIVE_FILLS[name], f"{name}: only {rt.fills_applied} fills in {MAX_RUN_S:.0f}s"
        assert peak[name] <= caps[name] + 1e-9, f"{name}: |position| reached {peak[name]} > cap {caps[name]}"
        acct: dict[str, Any] = state["accounts"][key]
        assert not acct["open_orders"], f"{name} left open orders: {acct['open_orders']}"
        exchange = Decimal(repr(acct["positions"]["FX_BTC_JPY"]["net"]))
        assert exchange == rt.position.exact_size, f"{name}: exchange {exchange} != bot {rt.position.exact_size}"
    bad = [f"{r.name}: {r.getMessage()}" for r in errors.records if r.levelno >= logging.ERROR]
    assert not bad, "errors logged:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["mm_spread", "scalping"])
@pytest.mark.parametrize("seed", [1, 7])
def test_samples_trade_dozens_of_times_in_ten_minutes_within_caps(name: str, seed: int) -> None:
    """Ten minutes of the default synthetic market on the virtual clock: dozens of fills, every
    order accepted, the position never past the sample's own cap."""
    cfg = load_strategy_config(ROOT / "strategies" / f"{name}.yaml")
    cap = float(cfg.parameters["max_position"] if name == "mm_spread" else cfg.parameters["lot"])
    report = run_backtest(BacktestSettings(
        strategy_py=ROOT / "strategies" / f"{name}.py", strategy_yaml=ROOT / "strategies" / f"{name}.yaml",
        synthetic_hours=10 / 60, seed=seed)).report
    assert report["fills"]["count"] >= 40, report["fills"]
    assert report["orders"]["refused"] == 0 and report["orders"]["failed"] == 0, report["orders"]
    pos = report["position"]
    assert pos["max_long"] <= cap + 1e-9 and -pos["max_short"] <= cap + 1e-9, (pos, cap)
    assert pos["max_long"] > 0 and pos["max_short"] < 0, pos  # it traded both ways
