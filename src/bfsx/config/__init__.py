"""Run config (trade.yaml) and strategy yaml: pydantic models, one-line errors, hot reload.

Every user mistake becomes a :class:`ConfigError` whose text is ONE line naming the file and the
key, e.g. ``trade.yaml: unknown key 'adjust_max_sise' (did you mean 'adjust_max_size'?)``. Keys keep
the names BFS-X users know. See ``docs/config.md`` for the reference.

``base`` (shared validators), ``trade`` (trade.yaml), ``strategy`` (strategy yaml), ``loading``
(yaml → model, also used by the simulator's config), ``run`` (the command line), ``watch`` (reload).
This package only re-exports; each name has its home in one of those modules.
"""

from bfsx.config.base import DEFAULT_ENDPOINT, DEFAULT_WS_ENDPOINT, ConfigError
from bfsx.config.run import TradeArgs, load_run, load_strategy_config, load_trade_config, resolve_trade_args
from bfsx.config.strategy import NoTradeWindow, StrategyConfig, Subscribe
from bfsx.config.trade import TRADE_LIVE_KEYS, TradeConfig, changed_keys
from bfsx.config.watch import ConfigWatcher

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_WS_ENDPOINT",
    "TRADE_LIVE_KEYS",
    "ConfigError",
    "ConfigWatcher",
    "NoTradeWindow",
    "StrategyConfig",
    "Subscribe",
    "TradeArgs",
    "TradeConfig",
    "changed_keys",
    "load_run",
    "load_strategy_config",
    "load_trade_config",
    "resolve_trade_args",
]
