"""ConfigWatcher (live reload, invalid edits kept out) and logging (rotation, redaction)."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bfsx.config import ConfigWatcher, StrategyConfig, TradeConfig, load_strategy_config, load_trade_config
from bfsx.logs import add_secret, mask_url, redact, setup_logging, shutdown_logging
from bfsx.sim.hooks import eventually as wait_for


def edit(path: Path, text: str) -> None:
    """Rewrite and move the mtime forward, so even a coarse-mtime filesystem sees the change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


async def test_watcher_applies_valid_edit_and_keeps_old_on_invalid(caplog: pytest.LogCaptureFixture) -> None:
    path = Path("s.yaml")
    edit(path, "parameters: {lot: 0.01}\n")
    applied: list[StrategyConfig] = []
    watcher: ConfigWatcher[StrategyConfig] = ConfigWatcher(
        path, load_strategy_config, applied.append, interval=0.02, current=load_strategy_config(path)
    )
    watcher.start()
    try:
        edit(path, "parameters: {lot: 0.02}\nclose_position: true\n")
        await wait_for(lambda: len(applied) == 1)
        assert applied[0].parameters == {"lot": 0.02} and applied[0].close_position
        assert watcher.current is applied[0]

        caplog.set_level(logging.WARNING, logger="bfsx.config")
        edit(path, "parameters: {lot: 0.03}\nclose_positon: false\n")
        await wait_for(lambda: watcher.rejected == 1)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        line = warnings[0].getMessage()
        assert "\n" not in line
        assert line.startswith("s.yaml: unknown key 'close_positon' (did you mean 'close_position'?)")
        assert watcher.current is applied[0] and len(applied) == 1

        # Polling on without a new edit repeats nothing; fixing the file applies it.
        for _ in range(5):
            await watcher.check()
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        edit(path, "parameters: {lot: 0.04}\n")
        await wait_for(lambda: len(applied) == 2)
        assert applied[1].parameters == {"lot": 0.04} and not applied[1].close_position
    finally:
        watcher.stop()
        watcher.stop()


async def test_watcher_async_callback_touch_and_missing_file(caplog: pytest.LogCaptureFixture) -> None:
    path = Path("trade.yaml")
    edit(path, "adjust_max_size: 0.1\n")
    seen: list[TradeConfig] = []

    async def on_change(new: TradeConfig) -> None:
        await asyncio.sleep(0)
        seen.append(new)

    watcher: ConfigWatcher[TradeConfig] = ConfigWatcher(
        path, load_trade_config, on_change, interval=3600, current=load_trade_config(path)
    )
    # Same content, new mtime: nothing to apply.
    edit(path, "adjust_max_size: 0.1\n")
    assert await watcher.check() is False and seen == []
    edit(path, "adjust_max_size: 0.3\n")
    assert await watcher.check() is True
    assert seen[-1].adjust_max_size == 0.3
    # A deleted file is one warning, the config stays; when it comes back it is read again.
    caplog.set_level(logging.WARNING, logger="bfsx.config")
    os.remove(path)
    assert await watcher.check() is False and await watcher.check() is False
    assert [r.getMessage() for r in caplog.records] == ["trade.yaml: file not found; keeping the current config"]
    edit(path, "adjust_max_size: 0.4\n")
    assert await watcher.check() is True and seen[-1].adjust_max_size == 0.4


async def test_watcher_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    path = Path("s.yaml")
    edit(path, "parameters: {}\n")

    def broken(_: StrategyConfig) -> None:
        raise RuntimeError("boom")

    watcher = ConfigWatcher(path, load_strategy_config, broken, interval=3600)
    edit(path, "parameters: {a: 1}\n")
    assert await watcher.check() is True
    assert any("applying the reloaded config failed" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------- logging
@pytest.fixture
def logs() -> Iterator[None]:
    yield
    shutdown_logging()


def test_setup_logging_rotates_daily_and_redacts(logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    add_secret("demo-secret-for-logs")
    add_secret("https://hooks.local.test/webhooks/42/abcTOKENdef")
    logger = setup_logging(Path("logs/bot1"), "bot1", "debug", console=True)
    assert logger.name == "bfsx"
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_bfsx_handler", False)]
    files = [h for h in ours if isinstance(h, logging.handlers.TimedRotatingFileHandler)]
    assert len(files) == 1 and len(ours) == 2
    assert files[0].when == "MIDNIGHT" and files[0].backupCount == 14
    assert Path(files[0].baseFilename) == Path("logs/bot1/bot1.log").resolve()
    assert logging.getLogger().level == logging.DEBUG

    log = logging.getLogger("bfsx.bot.test")
    log.info("signing with %s", "demo-secret-for-logs")
    log.warning("posting to https://discord.com/api/webhooks/99/SECRETTOKEN and https://hooks.local.test/webhooks/42/abcTOKENdef")
    try:
        raise ValueError("bad secret demo-secret-for-logs")
    except ValueError:
        log.exception("failed")
    for h in ours:
        h.flush()
    for text in (Path("logs/bot1/bot1.log").read_text(encoding="utf-8"), capsys.readouterr().err):
        assert "demo-secret-for-logs" not in text and "SECRETTOKEN" not in text and "abcTOKENdef" not in text
        assert "signing with ***" in text
        assert "discord.com/api… and hooks.local.test/webhooks…" in text
        assert "ValueError: bad secret ***" in text


def test_setup_logging_without_console_and_reconfigure(logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("logs/a", "a", "INFO", console=True)
    setup_logging("logs/b", "b", "WARNING", console=False)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_bfsx_handler", False)]
    assert len(ours) == 1 and isinstance(ours[0], logging.handlers.TimedRotatingFileHandler)
    logging.getLogger("bfsx.x").warning("only to the file")
    logging.getLogger("bfsx.x").info("below the level")
    ours[0].flush()
    assert "only to the file" not in capsys.readouterr().err
    text = Path("logs/b/b.log").read_text(encoding="utf-8")
    assert "only to the file" in text and "below the level" not in text


def test_mask_and_redact_helpers() -> None:
    assert mask_url("https://discord.com/api/webhooks/1/tok") == "discord.com/api…"
    assert mask_url("") == ""
    add_secret("abc")  # too short to redact safely: ignored
    assert redact("abc and abcd") == "abc and abcd"
    add_secret("abcd1234")
    add_secret("abcd12345678")  # longer secret that contains the first one is replaced whole
    assert redact("x abcd12345678 y abcd1234") == "x *** y ***"
