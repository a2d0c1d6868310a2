"""A bot's alerts to its strategy's webhook (a local aiohttp stand-in on 127.0.0.1), on the real
simulator: health STOP, a reconnect storm (the simulator closes the sockets), and an over-limit
pause (-1 from a small IP limit: the bot's own polls exceed it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import bfsx
from alert_hook import AlertHook, alert_hook
from bfsx.bot.runtime import BotRuntime
from bfsx.config import StrategyConfig, TradeConfig
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import eventually
from bfsx.sim.server import SimServer


class Idle(bfsx.Strategy):
    """Trades nothing: only the runtime's own requests and sockets."""


@pytest.fixture
async def hook() -> AsyncIterator[AlertHook]:
    async with alert_hook() as h:
        yield h


def runtime(sim: SimServer, hook: AlertHook, tmp_path: Path, **trade: Any) -> BotRuntime:
    cfg = TradeConfig(
        apikey=SecretStr("demo-key-1"), secret=SecretStr("demo-secret-1"), endpoint=sim.url,
        ws_endpoint=sim.ws_url, bot_name="alert_bot", log_folder=str(tmp_path / "bot"), console_output=False,
        **trade,
    )
    # discord_interval is long: only the alerts reach the webhook during the test.
    rt = BotRuntime(cfg, StrategyConfig(discord_webhook=SecretStr(hook.url), discord_interval=600), Idle())
    assert rt.alerts is not None
    rt.alerts.per_kind_interval_s = 0.05
    rt.alert_check_interval_s = 0.05
    rt.realtime.backoff_base, rt.realtime.backoff_max = 0.05, 0.2
    return rt


async def test_health_stop_and_a_reconnect_storm_are_posted(sim: SimServer, hook: AlertHook, tmp_path: Path) -> None:
    rt = runtime(sim, hook, tmp_path, health_interval=0.1)
    rt.reconnect_storm_count, rt.reconnect_storm_window_s = 3, 60.0
    run = asyncio.ensure_future(rt.run())
    try:
        await asyncio.wait_for(rt.realtime.connected.wait(), 20)
        await sim.faults(health="STOP")
        await eventually(lambda: hook.texts("health_stop"), what="the health STOP alert")
        assert "FX_BTC_JPY: exchange health STOP" in hook.texts("health_stop")[0]
        await sim.faults(health=None)
        for n in range(1, 4):
            await sim.faults(close_websockets=True)
            await eventually(lambda n=n: rt.realtime.reconnects >= n and rt.realtime.connected.is_set(),
                             what=f"reconnect {n}")
        await eventually(lambda: hook.texts("reconnect_storm"), what="the reconnect storm alert")
        assert "3 realtime reconnects" in hook.texts("reconnect_storm")[0]
        assert "SECRET-alert-token" not in "".join(hook.texts())
    finally:
        rt.request_stop()
        assert await asyncio.wait_for(run, 30) == 0


@pytest.fixture
def sim_config() -> SimConfig:
    # A small per-IP limit: the bot's own board-state polls run into -1 in a second or two.
    return SimConfig.fast(limits={"ip": 40})


async def test_an_over_limit_pause_is_posted_once(sim: SimServer, hook: AlertHook, tmp_path: Path) -> None:
    rt = runtime(sim, hook, tmp_path, over_limit_pause=30, health_interval=0.05)
    run = asyncio.ensure_future(rt.run())
    try:
        await eventually(lambda: sum(sim.state()["limits_refused"].get("demo-key-1", {}).values()) > 0
                         or hook.texts("over_limit"), what="a -1 answer")
        await eventually(lambda: hook.texts("over_limit"), what="the over-limit alert")
        assert "orders pause for 30 s" in hook.texts("over_limit")[0]
        await asyncio.sleep(0.3)  # several looks at the same pause: still one alert
        assert len(hook.texts("over_limit")) == 1
    finally:
        rt.request_stop()
        assert await asyncio.wait_for(run, 30) == 0
