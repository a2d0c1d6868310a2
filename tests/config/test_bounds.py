"""Every number in trade.yaml, the strategy yaml and sim.yaml is finite and within a sane bound.

Refused as ONE line naming the key: NaN and infinities everywhere, intervals below 0.05 s or above
a day, consecutive counts outside 1..100, sizes outside the product's range (issue 10, item 5).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bfsx.config import ConfigError, StrategyConfig, TradeConfig, load_strategy_config, load_trade_config
from bfsx.config.loading import _unwrap
from bfsx.errors import UserError
from bfsx.sim.config import (
    AccountConfig,
    LimitsConfig,
    MarginConfig,
    MarketConfig,
    SimConfig,
    load_sim_config,
)

Loader = Callable[[Path], Any]


def float_keys(model: type[BaseModel]) -> set[str]:
    return {k for k, f in model.model_fields.items() if _unwrap(f.annotation)[0] is float}


# Spelled out on purpose: a new float key must get a bound (and a line here) to pass.
SECONDS_KEYS = {
    "adjust_position_interval", "pos_server_check_interval", "pos_server_evict_after",
    "pos_server_report_interval", "pos_server_query_interval", "over_limit_pause", "health_interval",
    "pos_server_margin_interval", "pos_server_alert_interval", "pos_server_control_interval",
}
SECONDS_OR_OFF_KEYS = {"ws_silence_timeout", "status_interval"}
TRADE_FLOATS = SECONDS_KEYS | SECONDS_OR_OFF_KEYS | {
    "base_position", "adjust_max_size", "pos_server_graph_period", "pos_server_discord_interval",
    "pos_server_keep_rate_warn", "pos_server_keep_rate_close_only", "pos_server_max_daily_loss",
}
STRATEGY_FLOATS = {"discord_interval", "discord_graph_period", "max_order_size", "max_position", "price_band"}
CASES = [(k, load_trade_config) for k in sorted(TRADE_FLOATS)] + [(k, load_strategy_config) for k in sorted(STRATEGY_FLOATS)]


def test_the_key_lists_cover_every_float_key() -> None:
    assert float_keys(TradeConfig) == TRADE_FLOATS
    assert float_keys(StrategyConfig) == STRATEGY_FLOATS


def error_of(text: str, loader: Loader = load_trade_config, name: str = "c.yaml") -> str:
    path = Path(name)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UserError)
    assert message.startswith(f"{name}: "), message
    return message


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.inf", "nan", "inf", "1e400"])
@pytest.mark.parametrize(("key", "loader"), CASES)
def test_nan_and_infinities_are_refused_naming_the_key(key: str, loader: Loader, value: str) -> None:
    message = error_of(f"{key}: {value}\n", loader)
    assert f"'{key}' must be a finite number" in message, message


@pytest.mark.parametrize(("key", "loader"), CASES)
def test_a_huge_value_is_refused_naming_the_key(key: str, loader: Loader) -> None:
    for huge in ("1.0e+300", "-1.0e+300", "1000000000000"):
        message = error_of(f"{key}: {huge}\n", loader)
        assert f"'{key}' must be" in message, message


@pytest.mark.parametrize("key", sorted(SECONDS_KEYS | SECONDS_OR_OFF_KEYS))
def test_intervals_have_a_floor_and_a_ceiling(key: str) -> None:
    for tiny in ("1e-9", "1.0e-9", "0.049"):
        message = error_of(f"{key}: {tiny}\n")
        assert f"'{key}' must be" in message and ">= 0.05 and <= 86400" in message, message
    assert "<= 86400" in error_of(f"{key}: 86401\n")
    for fine in (0.05, 86400):
        assert getattr(load_trade_config(write_yaml(f"{key}: {fine}\n")), key) == fine
    off = key in SECONDS_OR_OFF_KEYS
    if off:
        assert getattr(load_trade_config(write_yaml(f"{key}: 0\n")), key) == 0
        assert "must be 0 (off) or a finite number >= 0.05" in error_of(f"{key}: 0.01\n")
    else:
        assert f"'{key}' must be" in error_of(f"{key}: 0\n")


@pytest.mark.parametrize(
    ("key", "loader", "floor"),
    [("pos_server_discord_interval", load_trade_config, ">= 0.001 and <= 1440"),
     ("discord_interval", load_strategy_config, ">= 0.001 and <= 1440"),
     ("pos_server_graph_period", load_trade_config, ">= 0.01 and <= 720"),
     ("discord_graph_period", load_strategy_config, ">= 0.01 and <= 720")],
)
def test_minute_and_hour_keys_have_a_floor_too(key: str, loader: Loader, floor: str) -> None:
    for tiny in ("1e-9", "1.0e-9", "0"):
        message = error_of(f"{key}: {tiny}\n", loader)
        assert f"'{key}' must be a finite number {floor}" in message, message


def write_yaml(text: str) -> Path:
    path = Path("ok.yaml")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "loader", "expected"),
    [
        ("pos_server_discord_interval: 0.0001\n", load_trade_config,
         "'pos_server_discord_interval' must be a finite number >= 0.001 and <= 1440, got 0.0001"),
        ("pos_server_graph_period: 721\n", load_trade_config,
         "'pos_server_graph_period' must be a finite number >= 0.01 and <= 720, got 721"),
        ("discord_interval: 1441\n", load_strategy_config,
         "'discord_interval' must be a finite number >= 0.001 and <= 1440, got 1441"),
        ("discord_graph_period: 0\n", load_strategy_config,
         "'discord_graph_period' must be a finite number >= 0.01 and <= 720, got 0"),
        ("adjust_consecutive: 0\n", load_trade_config, "'adjust_consecutive' must be an integer >= 1 and <= 100, got 0"),
        ("pos_server_consecutive: 101\n", load_trade_config,
         "'pos_server_consecutive' must be an integer >= 1 and <= 100, got 101"),
        ("pos_server_consecutive: .nan\n", load_trade_config,
         "'pos_server_consecutive' must be an integer >= 1 and <= 100, got nan"),
        ("api_reserve: 501\n", load_trade_config, "'api_reserve' must be an integer >= 0 and <= 500, got 501"),
        ("minute_to_expire: .inf\n", load_strategy_config,
         "'minute_to_expire' must be an integer >= 1 and <= 43200, got inf"),
    ],
)
def test_units_counts_and_reserves_are_bounded(text: str, loader: Loader, expected: str) -> None:
    assert error_of(text, loader) == f"c.yaml: {expected}"


def test_minute_hour_and_count_limits_are_accepted() -> None:
    cfg = load_trade_config(write_yaml(
        "pos_server_discord_interval: 0.001\npos_server_graph_period: 720\npos_server_consecutive: 100\n"
        "adjust_consecutive: 1\napi_reserve: 500\n"))
    assert (cfg.pos_server_discord_interval, cfg.pos_server_graph_period) == (0.001, 720)
    assert (cfg.pos_server_consecutive, cfg.adjust_consecutive, cfg.api_reserve) == (100, 1, 500)


# ------------------------------------------------------------------------- sizes, per product
def test_adjust_max_size_is_between_the_minimum_and_a_thousand_minimums() -> None:
    assert error_of("adjust_max_size: .inf\n") == "c.yaml: 'adjust_max_size' must be a finite number > 0, got inf"
    assert error_of("adjust_max_size: 1.001\n") == (
        "c.yaml: 'adjust_max_size' must be from 0.001 to 1 on FX_BTC_JPY "
        "(its minimum order size to 1000 times it), got 1.001"
    )
    assert error_of("adjust_max_size: 0.0009\n") == (
        "c.yaml: 'adjust_max_size' must be from 0.001 to 1 on FX_BTC_JPY "
        "(its minimum order size to 1000 times it), got 0.0009"
    )
    assert load_trade_config(write_yaml("adjust_max_size: 1\n")).adjust_max_size == 1
    assert load_trade_config(write_yaml("adjust_max_size: 0.001\n")).adjust_max_size == 0.001
    # The bound follows the product's minimum order size (XRP: 0.1, so up to 100 XRP).
    assert load_trade_config(write_yaml("product: XRP_JPY\nadjust_max_size: 100\n")).adjust_max_size == 100
    assert "from 0.1 to 100 on XRP_JPY" in error_of("product: XRP_JPY\nadjust_max_size: 0.05\n")


def test_base_position_is_within_the_products_maximum_size() -> None:
    for fine in (1000, -1000, 0.5):
        assert load_trade_config(write_yaml(f"base_position: {fine}\n")).base_position == fine
    assert error_of("base_position: -1000.001\n") == (
        "c.yaml: 'base_position' must be from -1000 to 1000 on FX_BTC_JPY "
        "(its maximum order size), got -1000.001"
    )
    assert "got 1e+20" in error_of("base_position: 1.0e+20\n")
    assert error_of("base_position: .nan\n") == "c.yaml: 'base_position' must be a finite number, got nan"
    assert load_trade_config(write_yaml("product: XRP_JPY\nbase_position: 100000\n")).base_position == 100000


def test_models_built_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="finite"):
        TradeConfig(adjust_max_size=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        StrategyConfig(discord_interval=float("nan"))
    with pytest.raises(ValueError, match=r"greater than or equal to 0\.05"):
        TradeConfig(pos_server_check_interval=1e-9)


# ------------------------------------------------------------------------------- the simulator
SIM_MODELS: dict[str, type[BaseModel]] = {"": SimConfig, "market": MarketConfig, "limits": LimitsConfig,
                                          "margin": MarginConfig, "accounts": AccountConfig}


def sim_yaml(section: str, key: str, value: str) -> str:
    if section == "":
        return f"{key}: {value}\n"
    if section == "accounts":
        return f"accounts: [{{api_key: k, api_secret: s, {key}: {value}}}]\n"
    return f"{section}: {{{key}: {value}}}\n"


SIM_CASES = [(section, key) for section, model in SIM_MODELS.items() for key in sorted(float_keys(model))]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize(("section", "key"), SIM_CASES)
def test_sim_config_refuses_nan_and_infinities(section: str, key: str, value: str) -> None:
    message = error_of(sim_yaml(section, key, value), load_sim_config, "sim.yaml")
    where = key if section == "" else (f"accounts[0].{key}" if section == "accounts" else f"{section}.{key}")
    assert f"'{where}' must be a finite number" in message, message


def test_sim_config_refuses_nan_inside_lists_and_mappings() -> None:
    assert "'busy_order_rates[0]' must be a finite number" in error_of(
        "busy_order_rates: [.nan, 2, 3]\n", load_sim_config, "sim.yaml")
    assert "'market.start_prices.BTC_JPY' must be a finite number" in error_of(
        "market: {start_prices: {BTC_JPY: .inf}}\n", load_sim_config, "sim.yaml")


def test_sim_float_keys_are_all_covered() -> None:
    assert len(SIM_CASES) >= 33  # every float of the five sim models, found by type
    assert ("market", "taker_size_max") in SIM_CASES and ("accounts", "collateral") in SIM_CASES
    assert {("margin", "leverage"), ("margin", "margin_call_ratio"), ("margin", "loss_cut_ratio")} <= set(SIM_CASES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("margin: {leverage: 0.5}\n", "'margin.leverage' must be a finite number >= 1 and <= 100, got 0.5"),
        ("margin: {leverage: 1.0e+300}\n", "'margin.leverage' must be a finite number >= 1 and <= 100, got 1e+300"),
        ("margin: {loss_cut_ratio: -0.1}\n", "'margin.loss_cut_ratio' must be a finite number >= 0 and <= 10, got -0.1"),
        ("margin: {margin_call_ratio: 11}\n", "'margin.margin_call_ratio' must be a finite number >= 0 and <= 10, got 11"),
        ("margin: {margin_call_ratio: 0.4}\n",
         "'margin' must have loss_cut_ratio <= margin_call_ratio, got 0.5 > 0.4"),
        ("fx_leverage: 2\n", "'fx_leverage' is now 'margin: {leverage: ...}'"),
    ],
)
def test_sim_margin_keys_are_bounded(text: str, expected: str) -> None:
    message = error_of(text, load_sim_config, "sim.yaml")
    assert expected in message, message


# ------------------------------------------------------------------------------ real processes
def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    env["BFSX_CONFIG_HOME"] = str(cwd / "bfsx-config")
    return subprocess.run([sys.executable, "-m", "bfsx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_bfsx_trade_and_pos_server_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text("apikey: k\nsecret: s\nadjust_max_size: .inf\n", encoding="utf-8")
    r = _run(tmp_path, "trade", "bot.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "bfsx trade: bot.yaml: 'adjust_max_size' must be a finite number > 0, got inf"]
    (tmp_path / "server.yaml").write_text("pos_server_check_interval: 1e-9\n", encoding="utf-8")
    r = _run(tmp_path, "pos-server", "server.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "bfsx pos-server: server.yaml: 'pos_server_check_interval' must be a finite number >= 0.05 and <= 86400, "
        "got '1e-9'"]



# ------------------------------------------------------------------ margin thresholds and alerts
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pos_server_keep_rate_warn: .nan\n", "'pos_server_keep_rate_warn' must be a finite number >= 0 and <= 10, got nan"),
        ("pos_server_keep_rate_close_only: -0.5\n",
         "'pos_server_keep_rate_close_only' must be a finite number >= 0 and <= 10, got -0.5"),
        ("pos_server_keep_rate_warn: 11\n", "'pos_server_keep_rate_warn' must be a finite number >= 0 and <= 10, got 11"),
        ("pos_server_max_daily_loss: -1\n",
         "'pos_server_max_daily_loss' must be a finite number >= 0 and <= 100000000000, got -1"),
        ("pos_server_max_daily_loss: .inf\n",
         "'pos_server_max_daily_loss' must be a finite number >= 0 and <= 100000000000, got inf"),
        ("pos_server_keep_rate_warn: 0.8\npos_server_keep_rate_close_only: 1.2\n",
         "'pos_server_keep_rate_warn' (0.8) must be at least 'pos_server_keep_rate_close_only' (1.2), or 0 for off"),
        ("pos_server_alerts: [loss_cutt]\n",
         "'pos_server_alerts' has an unknown alert kind 'loss_cutt' (did you mean 'loss_cut'?)"),
        ("pos_server_alerts: 3\n", "'pos_server_alerts' must be 'default', 'all', 'none' or a list of alert kinds, got 3"),
        ("pos_server_alerts: [[x]]\n", "'pos_server_alerts' has an unknown alert kind ['x']; known: "),
    ],
)
def test_margin_and_alert_keys_refuse_nonsense_in_one_line(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(f"c.yaml: {expected}"), message


def test_alert_selection_forms() -> None:
    from bfsx.reporting.alerts import ALERT_KINDS, DEFAULT_ALERT_KINDS

    assert load_trade_config(write_yaml("")).pos_server_alerts == DEFAULT_ALERT_KINDS
    assert "correction" not in DEFAULT_ALERT_KINDS and "loss_cut" in DEFAULT_ALERT_KINDS
    assert load_trade_config(write_yaml("pos_server_alerts: all\n")).pos_server_alerts == frozenset(ALERT_KINDS)
    assert load_trade_config(write_yaml("pos_server_alerts: none\n")).pos_server_alerts == frozenset()
    assert load_trade_config(write_yaml("pos_server_alerts: []\n")).pos_server_alerts == frozenset()
    picked = load_trade_config(write_yaml("pos_server_alerts: [Loss_Cut, daily_loss]\n")).pos_server_alerts
    assert picked == {"loss_cut", "daily_loss"}
    off = load_trade_config(write_yaml("pos_server_keep_rate_warn: 0\npos_server_keep_rate_close_only: 2\n"))
    assert (off.pos_server_keep_rate_warn, off.pos_server_keep_rate_close_only) == (0, 2)  # warn off: no order rule
