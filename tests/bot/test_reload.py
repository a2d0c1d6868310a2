"""Hot reload while running: the strategy yaml's ``parameters`` apply live (``parameters_changed``
is called), trade.yaml's live keys apply, and an invalid edit is logged and the old config kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bfsx.bot.loader import load_strategy_class
from bfsx.config import load_strategy_config, load_trade_config
from bfsx.sim.server import SimServer

from .conftest import STRATEGIES, StartBot, bot_trade_yaml, wait_for, write_yaml


async def test_strategy_and_trade_yaml_reload_live(
    sim: SimServer, start_bot: StartBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    strategy_yaml = write_yaml(tmp_path / "api_probe.yaml", {"parameters": {"lot": 0.01, "mode": "a"}})
    trade_yaml = write_yaml(tmp_path / "trade.yaml", {
        **bot_trade_yaml(sim, 1, tmp_path / "logs", health_interval=0.2),  # type: ignore[arg-type]
        "apikey": "demo-key-1", "secret": "demo-secret-1", "api_reserve": 50, "strategy_yaml": str(strategy_yaml),
    })
    s = load_strategy_class(STRATEGIES / "api_probe.py")()
    rt = await start_bot(
        s, strategy_config=load_strategy_config(strategy_yaml), strategy_yaml_path=str(strategy_yaml),
        config=load_trade_config(trade_yaml), trade_path=str(trade_yaml),
    )
    changes: list[dict[str, object]] = s.changes  # type: ignore[attr-defined]
    assert s.parameters == {"lot": 0.01, "mode": "a"} and changes == []

    write_yaml(strategy_yaml, {"parameters": {"lot": 0.02, "mode": "b"}, "close_position": True})
    await wait_for(lambda: changes, what="parameters_changed()")
    assert changes == [{"lot": 0.02, "mode": "b"}]
    assert s.parameters == {"lot": 0.02, "mode": "b"} and rt.strategy_config.close_position is True

    # A misspelled key: one warning naming key and file, the previous config stays.
    write_yaml(strategy_yaml, {"parameters": {"lot": 0.03}, "close_postion": False})
    await wait_for(lambda: "close_postion" in caplog.text, what="the rejected edit logged")
    rejected = [r for r in caplog.records if "close_postion" in r.getMessage()]
    assert len(rejected) == 1 and rejected[0].levelno == logging.WARNING
    assert "api_probe.yaml" in rejected[0].getMessage() and "keeping the current config" in rejected[0].getMessage()
    assert s.parameters == {"lot": 0.02, "mode": "b"} and len(changes) == 1

    # trade.yaml: a live key applies at once, a restart-only key is only reported.
    write_yaml(trade_yaml, {**bot_trade_yaml(sim, 1, tmp_path / "logs", health_interval=0.2),  # type: ignore[arg-type]
                            "apikey": "demo-key-1", "secret": "demo-secret-1", "api_reserve": 7,
                            "strategy_yaml": str(strategy_yaml), "product": "BTC_JPY"})
    await wait_for(lambda: rt.budget.reserve == 7, what="api_reserve reloaded")
    assert rt.trade.api_reserve == 7 and rt.product == "FX_BTC_JPY"
    assert "trade.yaml: product changed; applies after a restart" in caplog.text
    # And the good strategy edit after a bad one still applies.
    write_yaml(strategy_yaml, {"parameters": {"lot": 0.04}})
    await wait_for(lambda: len(changes) == 2, what="second reload")
    assert s.parameters == {"lot": 0.04} and rt.strategy_config.close_position is False
