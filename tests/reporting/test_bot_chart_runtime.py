"""A bot posts its own chart to its own webhook (issue 6 item 4): the runtime, configured by the
strategy yaml's ``discord_webhook`` / ``discord_interval``, posts a PNG and its one-row text."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

import bfsx
from bfsx.bot.runtime import BotRuntime
from bfsx.config import StrategyConfig, TradeConfig
from bfsx.sim.server import SimServer

from .conftest import FakeDiscord

PNG = b"\x89PNG\r\n\x1a\n"


class Idle(bfsx.Strategy):
    """Trades nothing: the chart shows the (flat) position and the API budget."""


async def test_runtime_posts_the_bot_chart_to_its_webhook(
    sim: SimServer, discord: FakeDiscord, tmp_path: Path
) -> None:
    trade = TradeConfig(
        apikey=SecretStr("demo-key-1"), secret=SecretStr("demo-secret-1"), endpoint=sim.url,
        ws_endpoint=sim.ws_url, bot_name="chart_bot", log_folder=str(tmp_path / "bot"), console_output=False,
    )
    strategy_cfg = StrategyConfig(
        discord_webhook=SecretStr(discord.url()), discord_interval=0.01, discord_graph_period=1,
    )
    rt = BotRuntime(trade, strategy_cfg, Idle())
    run = asyncio.ensure_future(rt.run())
    try:
        await discord.wait_requests(1, timeout=30)
    finally:
        rt.request_stop()
        assert await asyncio.wait_for(run, 30) == 0
    req = discord.requests[0]
    assert req.files and req.files[0].data.startswith(PNG)
    assert "chart_bot" in req.payload.get("content", "")
