"""What ``bfsx trade FILES...`` and ``bfsx pos-server`` load: the command-line forms, both configs,
environment overrides of the secrets, relative strategy paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import (
    ValidationError,
)

from bfsx.account.journal import JOURNAL_FILE
from bfsx.config.base import (
    _ENV_KEYS,
    _YAML_SUFFIXES,
    DEFAULT_TRADE_YAML,
    ConfigError,
)
from bfsx.config.loading import one_line_error, read_yaml
from bfsx.config.strategy import StrategyConfig
from bfsx.config.trade import TradeConfig
from bfsx.logs import add_secret


# -------------------------------------------------------------------------------------- loaders
def _resolve_near(value: Any, base: Path) -> Any:
    """A relative path that does not exist from the current directory, tried next to the config file."""
    if isinstance(value, str) and value.strip():
        p = Path(value.strip())
        try:
            if not p.is_absolute() and not p.exists() and (base / p).exists():
                return str(base / p)
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte: validation says
            pass
    return value


def load_trade_config(
    path: str | os.PathLike[str],
    *,
    strategy_py: str | os.PathLike[str] | None = None,
    strategy_yaml: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> TradeConfig:
    """Load and validate a trade.yaml; ``strategy_py`` / ``strategy_yaml`` (from the command line) win
    over the file, and env ``BFSX_APIKEY`` / ``BFSX_SECRET`` / ``BFSX_POS_SERVER_SECRET`` over the file.

    Relative strategy paths are read from the current directory (as BFS-X does), falling back to the
    folder of the trade.yaml. Secrets are registered with :func:`bfsx.logs.add_secret`.
    Raises :class:`ConfigError` (one line) on any mistake.
    """
    p = Path(path)
    raw = read_yaml(p)
    for key in ("strategy_py", "strategy_yaml"):
        if key in raw:
            raw[key] = _resolve_near(raw[key], p.parent)
    if strategy_py is not None:
        raw["strategy_py"] = str(strategy_py)
    if strategy_yaml is not None:
        raw["strategy_yaml"] = str(strategy_yaml)
    environ = os.environ if env is None else env
    for var, key in _ENV_KEYS.items():
        if environ.get(var):
            raw[key] = environ[var]
    try:
        cfg = TradeConfig.model_validate(raw)
    except ValidationError as e:
        raise one_line_error(p, TradeConfig, e) from None
    cfg._source = p
    for s in cfg.secret_values():
        add_secret(s)
    return cfg


def load_strategy_config(path: str | os.PathLike[str]) -> StrategyConfig:
    """Load and validate a strategy yaml. Raises :class:`ConfigError` (one line) on any mistake."""
    p = Path(path)
    raw = read_yaml(p)
    try:
        cfg = StrategyConfig.model_validate(raw)
    except ValidationError as e:
        raise one_line_error(p, StrategyConfig, e) from None
    cfg._source = p
    if cfg.discord_webhook_value():
        add_secret(cfg.discord_webhook_value())
    return cfg


class TradeArgs(NamedTuple):
    """The files named on ``bfsx trade``'s command line."""

    trade_yaml: str
    strategy_py: str | None
    strategy_yaml: str | None


USAGE = "usage: bfsx trade [TRADE_YAML] [STRATEGY_PY STRATEGY_YAML]"


def _is_yaml(name: str) -> bool:
    return Path(name).suffix.lower() in _YAML_SUFFIXES


def resolve_trade_args(files: Sequence[str]) -> TradeArgs:
    """The four forms (docs/config.md#command-line-forms-bfsx-trade--python3-tradepy): none →
    ./trade.yaml; one → TRADE_YAML; two → STRATEGY_PY STRATEGY_YAML with ./trade.yaml; three →
    TRADE_YAML STRATEGY_PY STRATEGY_YAML."""
    files = [str(f) for f in files]
    if len(files) == 0:
        return TradeArgs(DEFAULT_TRADE_YAML, None, None)
    if len(files) == 1:
        if not _is_yaml(files[0]):
            raise ConfigError(
                f"one argument is the run config TRADE_YAML (.yaml), got '{files[0]}'; "
                f"a strategy needs both STRATEGY_PY and STRATEGY_YAML ({USAGE})"
            )
        return TradeArgs(files[0], None, None)
    if len(files) > 3:
        raise ConfigError(f"too many arguments ({len(files)}); {USAGE}")
    *head, py, yml = files
    trade = head[0] if head else DEFAULT_TRADE_YAML
    names = ("TRADE_YAML STRATEGY_PY STRATEGY_YAML" if head else "STRATEGY_PY STRATEGY_YAML")
    if head and not _is_yaml(trade):
        raise ConfigError(f"{len(files)} arguments are {names}: '{trade}' is not a .yaml file")
    if Path(py).suffix.lower() != ".py":
        raise ConfigError(f"{len(files)} arguments are {names}: '{py}' is not a .py file")
    if not _is_yaml(yml):
        raise ConfigError(f"{len(files)} arguments are {names}: '{yml}' is not a .yaml file")
    return TradeArgs(trade, py, yml)


def load_run(files: Sequence[str]) -> tuple[TradeConfig, StrategyConfig]:
    """Everything ``bfsx trade FILES...`` needs before starting: both configs, validated, the
    strategy files found, the credentials present. Raises :class:`ConfigError` (one line)."""
    args = resolve_trade_args(files)
    if not files and not Path(args.trade_yaml).exists():
        raise ConfigError(f"{args.trade_yaml}: file not found in the current directory ({USAGE})")
    for given in (args.strategy_py, args.strategy_yaml):
        if given is not None and not Path(given).is_file():
            raise ConfigError(f"{given}: file not found")
    trade = load_trade_config(args.trade_yaml, strategy_py=args.strategy_py, strategy_yaml=args.strategy_yaml)
    where = trade.source or args.trade_yaml
    for key in ("strategy_py", "strategy_yaml"):
        value = getattr(trade, key)
        if not value:
            raise ConfigError(
                f"{where}: '{key}' is required (or give STRATEGY_PY STRATEGY_YAML on the command line)"
            )
        if not Path(value).is_file():
            raise ConfigError(f"{where}: '{key}' file not found: '{value}'")
    trade.require_credentials()
    _refuse_orphaned_journal(trade, where)
    assert trade.strategy_yaml is not None  # checked just above
    return trade, load_strategy_config(trade.strategy_yaml)


def _refuse_orphaned_journal(trade: TradeConfig, where: Path | str) -> None:
    """Refuse to start a bot whose journal sits under the default bot_name of earlier versions.

    The default name used to be ``<yaml stem>_<product>``; it now ends in a hash of the yaml's path
    (two ``mm.yaml`` in different folders no longer collide). A bot upgraded with a derived name
    and folder would otherwise start from an empty journal beside its old one: its position and
    open orders forgotten while the exchange still holds them. Which bot the old journal belongs to
    only the user knows, so the line says how to keep it.
    """
    if {"bot_name", "log_folder"} & trade._explicit or not trade.strategy_yaml:
        return
    legacy = f"{Path(trade.strategy_yaml).stem}_{trade.product}"
    old = Path("logs") / legacy / JOURNAL_FILE  # the old default log_folder, ./logs/<bot_name>
    if legacy != trade.bot_name and old.exists() and not (Path(trade.log_folder) / JOURNAL_FILE).exists():
        raise ConfigError(
            f"{where}: found {old}, this bot's journal under the old default bot_name '{legacy}'; "
            f"set 'bot_name: {legacy}' to keep it (the default is now '{trade.bot_name}')"
        )


