"""DiscordWebhook and the reporters against a local aiohttp server standing in for Discord."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from PIL import Image

from bfsx.config import StrategyConfig, TradeConfig
from bfsx.reporting.charts import render_market_chart
from bfsx.reporting.discord import (
    MESSAGE_LIMIT,
    BotChartReporter,
    DiscordReporter,
    DiscordWebhook,
    ReportSettings,
    format_bot_text,
    redact_webhook_url,
    split_message,
)
from bfsx.reporting.samples import BotSample, MarketSample

from .conftest import FakeDiscord, free_port

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOKEN = "TOPSECRET-token_abc"
NOW = 1_710_396_000.0  # 2024-03-14 15:00 JST


def assert_png(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a truncated or corrupt PNG raises here
        return image.size


def market_samples(n: int = 60, sign: float = 1.0) -> list[MarketSample]:
    return [
        MarketSample(
            NOW - (n - i) * 60, 0.01 * (i % 5), sign * 10.0 * i, 10_000_000 + 100 * i, 0.01 * (i % 5)
        )
        for i in range(n)
    ]


def secret_free(caplog: pytest.LogCaptureFixture) -> None:
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


async def test_post_sends_discord_multipart(discord: FakeDiscord) -> None:
    png = render_market_chart("FX_BTC_JPY", market_samples(), 6, NOW)
    async with DiscordWebhook(discord.url()) as hook:
        ok = await hook.post("hello <@everyone>", [("FX_BTC_JPY.png", png), ("second.png", png)])
    assert ok
    (req,) = discord.requests
    assert req.path == "/api/webhooks/123456789/" + TOKEN
    assert req.part("payload_json").content_type.startswith("application/json")
    assert req.payload["content"] == "hello <@everyone>"
    assert req.payload["allowed_mentions"] == {"parse": []}
    assert req.payload["attachments"] == [
        {"id": 0, "filename": "FX_BTC_JPY.png"},
        {"id": 1, "filename": "second.png"},
    ]
    assert [(f.name, f.filename, f.content_type) for f in req.files] == [
        ("files[0]", "FX_BTC_JPY.png", "image/png"),
        ("files[1]", "second.png", "image/png"),
    ]
    assert req.files[0].data == png
    assert assert_png(req.files[1].data) == (1200, 800)


async def test_429_waits_retry_after_from_body_then_header(discord: FakeDiscord) -> None:
    discord.responses = [
        (429, {"message": "You are being rate limited.", "retry_after": 0.35, "global": False}, {}),
        (429, None, {"Retry-After": "0.25"}),
        (204, None, {}),
    ]
    async with DiscordWebhook(discord.url(), backoff=0.01) as hook:
        assert await hook.post("rate me", ())
    first, second, third = discord.requests
    assert second.at - first.at >= 0.35  # waited at least what Discord asked (JSON retry_after)
    assert third.at - second.at >= 0.25  # ... and the Retry-After header when there is no body
    assert third.payload["content"] == "rate me"


async def test_5xx_retries_then_gives_up_with_one_redacted_line(
    discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    discord.responses = [(500, {"message": "boom"}, {}), (502, None, {}), (503, None, {})]
    hook = DiscordWebhook(discord.url(), max_retries=2, backoff=0.01)
    try:
        assert await hook.post("x", [("a.png", b"not really")]) is False
    finally:
        await hook.close()
    assert len(discord.requests) == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "giving up after 3 attempt(s)" in warnings[0].getMessage()
    assert redact_webhook_url(discord.url()) in warnings[0].getMessage()
    assert warnings[0].getMessage().count("/api/webhooks/123456789/…") == 1
    secret_free(caplog)


async def test_4xx_is_not_retried(discord: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    discord.responses = [(404, {"message": "Unknown Webhook", "code": 10015}, {})]
    async with DiscordWebhook(discord.url(), backoff=0.01) as hook:
        assert await hook.post("x", ()) is False
    assert len(discord.requests) == 1
    assert "Unknown Webhook" in caplog.text
    secret_free(caplog)


async def test_unreachable_and_timeout_never_raise(
    discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"http://127.0.0.1:{free_port()}/api/webhooks/42/{TOKEN}"
    async with DiscordWebhook(dead, max_retries=1, backoff=0.01) as hook:
        assert await hook.post("x", ()) is False

    discord.hold = asyncio.Event()  # the stand-in never answers
    async with DiscordWebhook(discord.url(), timeout=0.3, max_retries=1, backoff=0.01) as hook:
        assert await hook.post("x", ()) is False
    assert len(discord.requests) == 2
    assert "TimeoutError" in caplog.text
    secret_free(caplog)


async def test_long_text_is_split_and_files_batched(discord: FakeDiscord) -> None:
    bots = [BotSample(NOW, f"bot_{i:03d}", "FX_BTC_JPY", 0.01 * i, 100.0 * i, 400) for i in range(120)]
    text = "header\n" + format_bot_text(bots)
    assert len(text) > 2 * MESSAGE_LIMIT
    files = [(f"{i}.png", b"\x89PNG\r\n\x1a\n") for i in range(12)]
    async with DiscordWebhook(discord.url()) as hook:
        assert await hook.post(text, files)
    contents = [r.payload.get("content", "") for r in discord.requests]
    assert len(discord.requests) == len(split_message(text)) >= 3
    assert all(len(c) <= MESSAGE_LIMIT for c in contents)
    assert all(c.count("```") % 2 == 0 for c in contents)  # each chunk is a closed code block
    assert "bot_119" in contents[-1] and contents[0].startswith("header")
    assert [len(r.files) for r in discord.requests][:2] == [10, 2]  # Discord: max 10 per message


def test_split_message_keeps_lines_and_fences() -> None:
    lines = [f"line {i:04d} " + "x" * 40 for i in range(200)]
    text = "```\n" + "\n".join(lines) + "\n```"
    chunks = split_message(text, 500)
    assert all(len(c) <= 500 and c.startswith("```") and c.endswith("```") for c in chunks)
    rebuilt = [ln for c in chunks for ln in c.split("\n") if ln != "```"]
    assert rebuilt == lines
    assert split_message("") == []
    assert [len(c) for c in split_message("y" * 1200, 500)] == [468, 468, 264]


def test_format_bot_text_table() -> None:
    text = format_bot_text(
        [
            BotSample(NOW, "scalping", "FX_BTC_JPY", -0.125, 2300.0, 480),
            BotSample(NOW, "mm_spread", "FX_BTC_JPY", 0.08, -1271.3, 461),
            BotSample(NOW, "spot_mm", "BTC_JPY", 0.0, 0.0, None),
        ]
    )
    assert text.splitlines() == [
        "```",
        "bot        market      position  PnL(JPY)  API",
        "spot_mm    BTC_JPY        0.000         0",
        "mm_spread  FX_BTC_JPY    +0.080    -1,271  461",
        "scalping   FX_BTC_JPY    -0.125    +2,300  480",
        "= total    FX_BTC_JPY    -0.045    +1,029",
        "```",
    ]


def test_redaction() -> None:
    assert redact_webhook_url(f"https://discord.com/api/webhooks/123/{TOKEN}") == (
        "https://discord.com/api/webhooks/123/…"
    )
    assert redact_webhook_url(f"https://discord.com/api/v10/webhooks/123/{TOKEN}?wait=true").endswith(
        "/123/…"
    )
    assert redact_webhook_url(f"https://user:pw@example.invalid/hook/{TOKEN}") == "https://example.invalid/…"


async def test_reporter_posts_charts_and_text_every_interval(discord: FakeDiscord) -> None:
    asked: list[float] = []

    async def history(since: float) -> dict[str, list[MarketSample]]:
        asked.append(since)
        return {"FX_BTC_JPY": market_samples(), "BTC_JPY": market_samples(sign=-1.0), "ETH_JPY": []}

    bots = [BotSample(NOW, "mm_spread", "FX_BTC_JPY", 0.04, 590.0, 470)]
    settings = ReportSettings(
        discord.url(), interval_minutes=0.25 / 60, period_hours=2, send_text=True, bitflyer_color=True
    )
    reporter = DiscordReporter(settings, history, lambda: bots, clock=lambda: NOW)
    reporter.start()
    try:
        await discord.wait_requests(1)
        # The request has arrived; the reporter counts the post once the reply is back.
        async with asyncio.timeout(20):
            while reporter.posts_ok < 1:
                await asyncio.sleep(0.01)
    finally:
        await reporter.close()
    req = discord.requests[0]
    assert [f.filename for f in req.files] == ["BTC_JPY.png", "FX_BTC_JPY.png", "pnl_total.png"]
    for f in req.files:
        assert assert_png(f.data) == (1200, 800)
    content = req.payload["content"]
    assert content.splitlines()[:3] == [
        "**bfsx** 03/14 15:00 JST · total PnL **0 JPY**",  # +590 and -590
        "BTC_JPY: +0.04 BTC · -590 JPY",
        "FX_BTC_JPY: +0.04 BTC · +590 JPY",
    ]
    assert "mm_spread  FX_BTC_JPY" in content and "```" in content
    assert asked[0] == NOW - 2 * 3600
    assert reporter.posts_ok == 1


async def test_reporter_settings_apply_live_and_slow_webhook_never_blocks(discord: FakeDiscord) -> None:
    discord.hold = asyncio.Event()
    settings = ReportSettings(discord.url(), interval_minutes=0.1 / 60)
    reporter = DiscordReporter(
        settings, lambda since: {"FX_BTC_JPY": market_samples()}, list, clock=lambda: NOW
    )
    reporter.start()
    try:
        await discord.wait_requests(1)
        # The webhook hangs; the loop keeps running and later intervals are skipped, not queued.
        ticks = 0
        skipped = reporter.posts_skipped
        async with asyncio.timeout(20):
            while reporter.posts_skipped < skipped + 3:
                ticks += 1
                await asyncio.sleep(0.01)
        assert ticks > 0 and len(discord.requests) == 1
        # Live update: text on, another webhook; the hung post does not hold the new one back.
        reporter.update(
            ReportSettings(discord.url("999", "OTHER-token"), interval_minutes=0.1 / 60, send_text=True)
        )
        discord.hold.set()
        await discord.wait_requests(2)
    finally:
        await reporter.close()
    later = [r for r in discord.requests[1:] if r.path.startswith("/api/webhooks/999/")]
    assert later and "```" in later[0].payload["content"]


def test_settings_from_the_real_configs() -> None:
    trade = TradeConfig(
        pos_server_discord=f"https://discord.com/api/webhooks/1/{TOKEN}",
        pos_server_discord_interval=0.5,
        pos_server_graph_period=12,
        pos_server_discord_send_text=True,
        pos_server_bitflyer_color=True,
    )
    settings = ReportSettings.from_config(trade)
    assert settings == ReportSettings(f"https://discord.com/api/webhooks/1/{TOKEN}", 0.5, 12.0, True, True)
    assert settings.interval_seconds == 30.0
    assert TOKEN not in repr(settings)
    strategy = StrategyConfig(
        discord_webhook=f"https://discord.com/api/webhooks/2/{TOKEN}", discord_interval=5
    )
    bot = ReportSettings.from_strategy_config(strategy)
    assert (bot.webhook_url.endswith(TOKEN), bot.interval_minutes, bot.period_hours, bot.send_text) == (
        True,
        5.0,
        6.0,
        True,
    )
    assert ReportSettings.from_config(TradeConfig()).webhook_url == ""


async def test_reporter_off_and_empty() -> None:
    reporter = DiscordReporter(ReportSettings(""), lambda since: {}, list)
    assert await reporter.post_now() is False  # no webhook configured: nothing, no error
    assert await reporter.render_files(NOW) == []


async def test_bot_chart_reporter(discord: FakeDiscord) -> None:
    settings = ReportSettings(discord.url(), period_hours=1, send_text=True)
    reporter = BotChartReporter("mm_spread", settings, clock=lambda: NOW)
    small = BotChartReporter("mm_spread", settings, maxlen=100)
    for i in range(2000):
        sample = BotSample(NOW - 7200 + i * 3.6, "ignored", "FX_BTC_JPY", 0.01 * (i % 7), float(i), 300)
        reporter.record(sample)
        small.record(sample)
    history = reporter.history
    horizon = history[-1].ts - 3600
    assert history[0].ts < horizon <= history[1].ts  # one sample before the window, for its left edge
    assert len(small.history) == 100 and small.history[-1].ts == history[-1].ts
    assert await reporter.post_now()
    await reporter.close()
    (req,) = discord.requests
    assert [f.filename for f in req.files] == ["mm_spread.png"]
    assert assert_png(req.files[0].data) == (1200, 800)
    assert req.payload["content"].startswith("**mm_spread** 03/14 15:00 JST · PnL **+1,999 JPY**")
    assert "mm_spread  FX_BTC_JPY" in req.payload["content"]
