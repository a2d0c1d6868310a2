"""The console: the rich tables, and plain log lines when there is no terminal."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rich.console import Console as RichConsole

from bfsx.bitflyer.budget import ApiBudget
from bfsx.posserver.client import PosServerClient
from bfsx.posserver.console import Console
from bfsx.posserver.server import PosServer

SECRET = "pos-secret"


async def test_tables_and_plain_lines(server_factory: Any, wait_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    s: PosServer = await server_factory()
    c = PosServerClient("127.0.0.1", s.port, SECRET, "mm-bot", "FX_BTC_JPY", report_interval=0.2)
    await c.start()
    c.report(0.015, 0.0, 4321.0, 1000.0, ApiBudget().snapshot())
    await wait_for(lambda: "mm-bot" in s.registry.bots, what="report")
    s.bad["replay"] += 2  # as counted by the UDP path

    out = RichConsole(record=True, width=160)
    out.print(Console(s, live=True).render())
    text = out.export_text()
    for needle in ("bots", "markets", "mm-bot", "FX_BTC_JPY", "+0.015", "+4,321", "since report",
                   "consecutive", "exchange", "replay 2", "corrections 0"):
        assert needle in text, needle

    plain = Console(s, live=False)
    s._console = plain
    caplog.set_level(logging.INFO, logger="bfsx.posserver.console")
    await s.check_all()
    lines = [r.getMessage() for r in caplog.records if r.name == "bfsx.posserver.console"]
    assert lines and "FX_BTC_JPY" in lines[0] and "Σ bots +0.015" in lines[0] and "exchange ?" in lines[0]
    await c.stop()


async def test_a_frozen_market_and_held_bots_show_in_the_table_and_the_lines(
        server_factory: Any, wait_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    s: PosServer = await server_factory()
    c = PosServerClient("127.0.0.1", s.port, SECRET, "mm-bot", "FX_BTC_JPY", report_interval=0.2)
    await c.start()
    c.report(0.015, 0.0, 0.0, 0.0, None)
    await wait_for(lambda: "mm-bot" in s.registry.bots, what="report")
    out = RichConsole(record=True, width=200)
    out.print(Console(s, live=True).render())
    assert "FROZEN" not in out.export_text() and "HOLDS" not in out.export_text()
    s.controls.freeze("FX_BTC_JPY", "a hand flatten")
    s.controls.pause("frozen", "FX_BTC_JPY")
    out = RichConsole(record=True, width=200)
    out.print(Console(s, live=True).render())
    text = out.export_text()
    assert "FROZEN, pause" in text and "HOLDS: FX_BTC_JPY paused (frozen); FX_BTC_JPY frozen" in text
    s._console = Console(s, live=False)
    caplog.set_level(logging.INFO, logger="bfsx.posserver.console")
    await s.check_all()
    lines = [r.getMessage() for r in caplog.records if r.name == "bfsx.posserver.console"]
    assert lines and "| bots pause" in lines[-1]
    await c.stop()
