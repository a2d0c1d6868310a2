"""Alerts to a real local webhook (aiohttp on 127.0.0.1): one message per kind per window, the
rest counted and summarized; a failing or hanging webhook costs bounded memory and never the
caller's time; the URL's token never reaches the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from alert_hook import AlertHook, alert_hook
from bfsx.reporting.alerts import Alerts
from bfsx.sim.hooks import eventually


@pytest.fixture
async def hook() -> AsyncIterator[AlertHook]:
    async with alert_hook() as h:
        yield h


async def test_a_flood_of_one_kind_is_one_message_then_a_summary_with_the_count(hook: AlertHook) -> None:
    alerts = Alerts(hook.url, per_kind_interval_s=0.5, backoff_first_s=0.05)
    alerts.start()
    try:
        for i in range(50):
            alerts.emit("eviction", f"bot b{i} evicted")
        alerts.emit("loss_cut", "the account was loss-cut")  # another kind has its own window
        await eventually(lambda: len(hook.texts("eviction")) >= 2, what="the first eviction and its summary")
        first, summary = hook.texts("eviction")[:2]
        assert "bot b0 evicted" in first
        assert "49 more suppressed" in summary and "bot b49 evicted" in summary
        assert hook.texts("loss_cut") == ["**bfsx** `loss_cut`: the account was loss-cut"]
        assert alerts.suppressed == {"eviction": 49}
        # After the window a new one is sent as usual.
        await asyncio.sleep(0.6)
        alerts.emit("eviction", "bot z evicted")
        await eventually(lambda: any("bot z evicted" in t for t in hook.texts("eviction")), what="a new window")
        assert len(hook.texts("eviction")) == 3
    finally:
        await alerts.close()


async def test_kinds_not_selected_are_not_posted(hook: AlertHook) -> None:
    alerts = Alerts(hook.url, kinds={"loss_cut"}, per_kind_interval_s=0.05)
    alerts.start()
    try:
        alerts.emit("correction", "routine")
        alerts.emit("loss_cut", "cut")
        await eventually(lambda: hook.texts("loss_cut"), what="the selected kind")
        assert hook.texts("correction") == [] and alerts.filtered == 1
    finally:
        await alerts.close()


async def test_a_failing_webhook_backs_off_keeps_the_message_and_logs_no_token(
    hook: AlertHook, caplog: pytest.LogCaptureFixture
) -> None:
    hook.status = 500
    alerts = Alerts(hook.url, per_kind_interval_s=0.01, backoff_first_s=0.05, backoff_max_s=0.1, max_queue=5)
    alerts.start()
    try:
        with caplog.at_level(logging.INFO, logger="bfsx.alerts"):
            alerts.emit("health_stop", "FX_BTC_JPY STOP")
            await eventually(lambda: hook.attempts >= 3, what="retries with backoff")
            assert hook.posts == [] and alerts.queued == 1 and alerts.failed >= 3
            for i in range(20):  # more than the queue holds: the oldest are dropped and counted
                await asyncio.sleep(0.011)
                alerts.emit(f"kind{i % 2}", f"message {i}")
            assert alerts.queued == 5 and alerts.dropped >= 16
            hook.status = 204  # the webhook comes back: the queue drains in order
            await eventually(lambda: alerts.queued == 0, what="the queue drained")
        assert hook.texts()[-1].endswith("message 19")
        logged = caplog.text
        assert "SECRET-alert-token" not in logged and "failed (HTTP 500)" in logged and "works again" in logged
        assert logged.count("failed (HTTP 500)") == 1  # once per failing streak, not per attempt
    finally:
        await alerts.close()


async def test_a_hanging_webhook_never_blocks_the_caller(hook: AlertHook) -> None:
    hook.hold = asyncio.Event()
    alerts = Alerts(hook.url, per_kind_interval_s=0.0, timeout_s=30.0, max_queue=10)
    alerts.start()
    try:
        alerts.emit("over_limit", "first")
        await asyncio.wait_for(hook.arrived.wait(), 10)  # the post is in flight and hangs
        ticks = 0
        for i in range(1000):
            alerts.emit("over_limit", f"n{i}")  # returns at once: it only queues
            if i % 100 == 0:
                await asyncio.sleep(0)
                ticks += 1
        assert ticks == 10 and alerts.queued == 10 and alerts.dropped == 991
        assert hook.posts == []
    finally:
        await alerts.close(flush_s=0.1)
