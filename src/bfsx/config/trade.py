"""trade.yaml: :class:`TradeConfig`, the account, the exchange endpoints, the position server and the
live-reloadable keys. Keys keep the names BFS-X users know; ``docs/config.md`` is the reference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from bfsx.bitflyer.products import PRODUCTS
from bfsx.config.base import (
    _YAML_SUFFIXES,
    DEFAULT_ENDPOINT,
    DEFAULT_WS_ENDPOINT,
    ENV_APIKEY,
    ENV_POS_SERVER_SECRET,
    ENV_SECRET,
    TRADE_HEALTH_CHOICES,
    ApiReserve,
    ConfigError,
    Consecutive,
    HostPort,
    Hours,
    Level,
    Minutes,
    Number,
    PosFloat,
    Seconds,
    SecondsOrOff,
    Secret,
    _fail,
    _Model,
    _no_bool,
    _show,
    _suggest,
)
from bfsx.config.local_secret import local_secret, local_secret_path
from bfsx.logs import add_secret, mask_url
from bfsx.net import is_loopback
from bfsx.reporting.alerts import ALERT_KINDS, DEFAULT_ALERT_KINDS

log = logging.getLogger("bfsx.config")

#: The largest ``adjust_max_size``, in minimum order sizes of the product: 1 BTC on the BTC
#: markets (minimum 0.001). A correction heals a lost fill or an evicted bot's position; one blind
#: market order larger than that is a typo, not a correction (a larger drift is still corrected,
#: one capped order per check).
MAX_CORRECTION_LOTS = 1_000
#: Fewest non-whitespace characters of a secret that guards a position server off loopback.
MIN_REMOTE_SECRET_CHARS = 16
#: Hex digits of the path hash in a derived bot_name (16 bits: two same-named strategy yamls
#: collide once in 65,536, and the name stays short enough to read in the console).
BOT_NAME_HASH_CHARS = 4
_MAX_BOT_NAME = 64  # the position server's id limit, and a sane folder name
#: The highest keep-rate threshold: 1000 %. bitFlyer's margin call is at 100 % and its loss-cut at
#: 50 %; a threshold above 10 would hold an account that is nowhere near either.
MAX_KEEP_RATE = 10
#: The largest daily loss limit in JPY (a hundred billion): above it the key is a typo.
MAX_DAILY_LOSS_JPY = 100_000_000_000


def _alert_kinds(value: Any) -> Any:
    """``default``, ``all``, ``none`` (or an empty list), or a list of kinds (a comma-separated string too)."""
    if isinstance(value, frozenset):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "all":
            return frozenset(ALERT_KINDS)
        if word == "default":
            return DEFAULT_ALERT_KINDS
        if word in ("none", "off", ""):
            return frozenset()
        value = [v for v in word.replace(",", " ").split() if v]
    if not isinstance(value, list | tuple | set):
        raise _fail(f"must be 'default', 'all', 'none' or a list of alert kinds, got {_show(value)}")
    kinds = []
    for v in value:
        kind = v.strip().lower() if isinstance(v, str) else v
        if not isinstance(kind, str) or kind not in ALERT_KINDS:
            hint = _suggest(str(kind), list(ALERT_KINDS)) if isinstance(kind, str) else None
            tail = f" (did you mean '{hint}'?)" if hint else f"; known: {', '.join(ALERT_KINDS)}"
            raise _fail(f"has an unknown alert kind {_show(v)}{tail}")
        kinds.append(kind)
    return frozenset(kinds)


#: A keep rate threshold (1.0 = 100 %); 0 turns it off.
Ratio = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=MAX_KEEP_RATE, allow_inf_nan=False)]
#: An amount of yen; 0 turns the limit off.
Jpy = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=MAX_DAILY_LOSS_JPY, allow_inf_nan=False)]
AlertKinds = Annotated[frozenset[str], BeforeValidator(_alert_kinds)]


def _plain(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 1, 0.001, 1000."""
    return format(value.normalize(), "f")


def derived_bot_name(strategy_yaml: str | os.PathLike[str] | None, product: str) -> str:
    """The default ``bot_name``: strategy yaml stem, product and a short stable hash of the yaml's
    resolved absolute path, e.g. ``mm_FX_BTC_JPY_3f2a``; ``bot_<product>`` without a strategy.

    The hash keeps ``a/mm.yaml`` and ``b/mm.yaml`` apart (they would otherwise share one id at the
    position server and one journal); the same file, however it is named, gives the same name.
    """
    if not strategy_yaml:
        return f"bot_{product}"
    path = Path(strategy_yaml).expanduser()
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    suffix = f"_{product}_{digest[:BOT_NAME_HASH_CHARS]}"
    # A folder name that travels in every datagram: no whitespace or slashes, and short enough.
    stem = re.sub(r"[\s/\\]+", "_", path.stem) or "bot"
    return stem[: _MAX_BOT_NAME - len(suffix)] + suffix


# -------------------------------------------------------------------------------------- trade.yaml
class TradeConfig(_Model):
    """trade.yaml: the run config of one bot (and of the position server): docs/config.md#tradeyaml."""

    # credentials (env BFSX_APIKEY / BFSX_SECRET win over the file)
    apikey: Secret = SecretStr("")
    secret: Secret = SecretStr("")
    # market and exchange
    product: str = "FX_BTC_JPY"
    endpoint: str = DEFAULT_ENDPOINT
    ws_endpoint: str = DEFAULT_WS_ENDPOINT
    # strategy
    strategy_py: str | None = None
    strategy_yaml: str | None = None
    bot_name: str = ""
    # position and single-bot drift correction
    base_position: Number = 0.0  # bounded per product in _size_problem()
    adjust_position_with_api: bool = False
    adjust_max_size: PosFloat = 0.1  # bounded per product in _size_problem()
    adjust_position_interval: Seconds = 30.0
    adjust_consecutive: Consecutive = 4
    # position server
    pos_server: HostPort | None = None
    pos_server_bind: str | None = None
    pos_server_secret: Secret = SecretStr("")
    pos_server_graph_period: Hours = 6.0
    pos_server_discord: Secret = SecretStr("")
    pos_server_discord_interval: Minutes = 60.0
    pos_server_discord_send_text: bool = False
    pos_server_bitflyer_color: bool = False
    pos_server_discord_influxdb: HostPort | None = None
    pos_server_check_interval: Seconds = 30.0
    pos_server_consecutive: Consecutive = 4
    pos_server_evict_after: Seconds = 300.0
    pos_server_report_interval: Seconds = 10.0
    pos_server_query_interval: Seconds = 10.0
    # account risk at the position server (docs/config.md#margin-and-alerts)
    pos_server_margin_interval: Seconds = 30.0
    pos_server_keep_rate_warn: Ratio = 1.5
    pos_server_keep_rate_close_only: Ratio = 1.0
    pos_server_max_daily_loss: Jpy = 0.0
    pos_server_alerts: AlertKinds = DEFAULT_ALERT_KINDS
    pos_server_alert_interval: Seconds = 60.0
    pos_server_correct_all: bool = False  # True: BFS-X's correct-everything (re-opens what a loss-cut closed)
    pos_server_control_interval: Seconds = 0.5  # how often a bot asks its mode (bfsx ctl): well within 1 s
    # logs
    console_output: bool = True
    log_folder: str = ""
    log_level: Level = "INFO"
    # runtime safety (docs/config.md#safety)
    close_on_exit: bool = False
    api_reserve: ApiReserve = 50
    over_limit_pause: Seconds = 60.0
    trade_health: str = "SUPER BUSY"
    health_interval: Seconds = 5.0
    ws_silence_timeout: SecondsOrOff = 60.0
    status_interval: SecondsOrOff = 60.0

    _explicit: frozenset[str] = PrivateAttr(default=frozenset())
    _source: Path | None = PrivateAttr(default=None)

    _SECRET_KEYS: ClassVar[tuple[str, ...]] = ("apikey", "secret", "pos_server_secret", "pos_server_discord")

    @field_validator("product", mode="before")
    @classmethod
    def _product(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise _fail(f"must be a product code like 'FX_BTC_JPY', got {_show(v)}")
        code = v.strip().upper()
        if code not in PRODUCTS:
            hint = _suggest(code, list(PRODUCTS))
            tail = f" (did you mean '{hint}'?)" if hint else f"; known: {', '.join(PRODUCTS)}"
            raise _fail(f"is not a known product, got {_show(v)}{tail}")
        return code

    @field_validator("endpoint", "ws_endpoint", mode="before")
    @classmethod
    def _url(cls, v: Any, info: Any) -> Any:
        schemes = ("http", "https") if info.field_name == "endpoint" else ("ws", "wss")
        if isinstance(v, str):
            parts = urlsplit(v.strip())
            if parts.scheme in schemes and parts.netloc:
                return v.strip().rstrip("/") if info.field_name == "endpoint" else v.strip()
        raise _fail(f"must be a URL starting with {schemes[0]}:// or {schemes[1]}://, got {_show(v)}")

    @field_validator("strategy_py", "strategy_yaml", mode="before")
    @classmethod
    def _strategy_file(cls, v: Any, info: Any) -> Any:
        want = (".py",) if info.field_name == "strategy_py" else _YAML_SUFFIXES
        if isinstance(v, str | os.PathLike) and str(v).strip() and Path(str(v)).suffix.lower() in want:
            return str(v).strip()
        raise _fail(f"must be a {' or '.join(want)} file path, got {_show(v)}")

    @field_validator("bot_name", mode="before")
    @classmethod
    def _bot_name(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if v == "":
            return ""  # '' = derive it
        # The name is a folder name and travels in every position-server datagram.
        if isinstance(v, str) and re.fullmatch(r"[^\s/\\]{1,64}", v.strip()):
            return v.strip()
        raise _fail(f"must be 1-64 characters without spaces or slashes, got {_show(v)}")

    @field_validator("trade_health", mode="before")
    @classmethod
    def _health(cls, v: Any) -> Any:
        norm = " ".join(v.replace("_", " ").upper().split()) if isinstance(v, str) else v
        if norm in TRADE_HEALTH_CHOICES:
            return norm
        raise _fail(f"must be one of {', '.join(map(repr, TRADE_HEALTH_CHOICES))}, got {_show(v)}")

    @field_validator("pos_server_bind", mode="before")
    @classmethod
    def _bind(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip():
            return v.strip().strip("[]")
        raise _fail(f"must be a host name or address, got {_show(v)}")

    @field_validator("pos_server_discord", mode="after")
    @classmethod
    def _webhook(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value().strip()
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise _fail("must be a webhook URL (https://...) or '' for off")
        return SecretStr(url)

    @model_validator(mode="after")
    def _derive(self) -> TradeConfig:
        # Remember what the user wrote before filling the derived defaults, so a later
        # with_bot_name() re-derives only what was not set explicitly.
        self._explicit = frozenset(k for k in self.model_fields_set if getattr(self, k) != "")
        self._fill_derived()
        problem = self._size_problem() or self._remote_secret_problem() or self._keep_rate_problem()
        if problem:
            raise _fail(problem)
        return self

    def _fill_derived(self) -> None:
        if "bot_name" not in self._explicit:
            self.bot_name = derived_bot_name(self.strategy_yaml, self.product)
        if "log_folder" not in self._explicit:
            self.log_folder = f"./logs/{self.bot_name}"

    def _size_problem(self) -> str | None:
        # Sizes are in the product's base currency, so their sane range is the product's: counted
        # in minimum order sizes, one bound fits BTC (0.001 → 1 BTC) and the coins with larger
        # minimums alike.
        spec = PRODUCTS[self.product]
        low, high = spec.min_size, spec.min_size * MAX_CORRECTION_LOTS
        size = Decimal(repr(self.adjust_max_size))
        if not low <= size <= high:
            # Below the minimum no correction could ever be sent; above the cap one blind market
            # order could move more than any lost fill explains.
            return (
                f"'adjust_max_size' must be from {_plain(low)} to {_plain(high)} on {self.product} "
                f"(its minimum order size to {MAX_CORRECTION_LOTS} times it), got {_show(self.adjust_max_size)}"
            )
        # |base_position| up to the product's sanity cap on any size (a million minimum sizes,
        # 1,000 BTC): far above any position held beside bots, and the same bound the bot's own
        # orders get, so every size in play stays exact to the size step.
        limit = spec.max_size
        if abs(Decimal(repr(self.base_position))) > limit:
            return (
                f"'base_position' must be from -{_plain(limit)} to {_plain(limit)} on {self.product} "
                f"(its maximum order size), got {_show(self.base_position)}"
            )
        return None

    def _keep_rate_problem(self) -> str | None:
        warn, close = self.pos_server_keep_rate_warn, self.pos_server_keep_rate_close_only
        if warn and close and warn < close:
            # Bots would go close-only before anyone was warned: the two are swapped.
            return (f"'pos_server_keep_rate_warn' ({warn:g}) must be at least 'pos_server_keep_rate_close_only' "
                    f"({close:g}), or 0 for off")
        return None

    def _remote_hosts(self) -> list[str]:
        """The non-loopback hosts this config talks to or listens on (the server's bind counts even
        without ``pos_server``: the server then listens there on the default port)."""
        hosts = [self.pos_server[0]] if self.pos_server is not None else []
        if self.pos_server_bind is not None:
            hosts.append(self.pos_server_bind)
        return [h for h in hosts if not is_loopback(h)]

    def _remote_secret_problem(self) -> str | None:
        secret = self.pos_server_secret.get_secret_value()
        if secret and not secret.strip():
            return "'pos_server_secret' is only whitespace; set a real secret or '' (loopback only)"
        remote = self._remote_hosts()
        if not remote:
            return None
        if not secret:
            return (
                f"'pos_server_secret' is required when the position server host is not loopback "
                f"({remote[0]!r}); or set {ENV_POS_SERVER_SECRET}"
            )
        strength = len("".join(secret.split()))
        if strength < MIN_REMOTE_SECRET_CHARS:
            # Off loopback anyone who can reach the port can try keys: a short one falls to guessing.
            return (
                f"'pos_server_secret' must have at least {MIN_REMOTE_SECRET_CHARS} characters (not counting "
                f"spaces) when the position server host is not loopback ({remote[0]!r}), got {strength}"
            )
        return None

    # ------------------------------------------------------------------ accessors for the runtime
    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None when built in code)."""
        return self._source

    def _where(self) -> str:
        return str(self._source) if self._source else "trade.yaml"

    def api_key(self) -> str:
        """The API key in clear (never log it)."""
        return self.apikey.get_secret_value()

    def api_secret(self) -> str:
        """The API secret in clear (never log it)."""
        return self.secret.get_secret_value()

    def pos_server_secret_value(self) -> str:
        """The position-server signing secret in clear (never log it): the single place both the
        server and the bots get it from.

        ``pos_server_secret`` (or env ``BFSX_POS_SERVER_SECRET``) when set. Unset, which is allowed
        on loopback only, it is this OS user's generated secret (:mod:`bfsx.config.local_secret`),
        created on first use in a 0600 file, so other local users cannot sign. Raises
        :class:`ConfigError` (one line) for a remote host without a strong secret, or an unusable
        secret file.
        """
        self.require_secret_for_remote()
        explicit = self.pos_server_secret.get_secret_value()
        if explicit:
            return explicit
        path = local_secret_path()
        value = local_secret(path)
        add_secret(value)
        log.info("position server secret: %s (no pos_server_secret set)", path)
        return value

    def pos_server_discord_value(self) -> str:
        """The Discord webhook URL in clear ('' = off)."""
        return self.pos_server_discord.get_secret_value()

    def secret_values(self) -> list[str]:
        """Every non-empty secret of this config (for :func:`bfsx.logs.add_secret`)."""
        values = [getattr(self, k).get_secret_value() for k in self._SECRET_KEYS]
        return [v for v in values if v]

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key() and self.api_secret())

    def require_credentials(self) -> None:
        """Raise :class:`ConfigError` unless both apikey and secret are set (trading needs them)."""
        if not self.has_credentials:
            missing = "apikey" if not self.api_key() else "secret"
            raise ConfigError(
                f"{self._where()}: '{missing}' is required for trading "
                f"(or set {ENV_APIKEY} / {ENV_SECRET})"
            )

    def require_secret_for_remote(self) -> None:
        """Raise :class:`ConfigError` when a non-loopback position server has no secret of at
        least 16 characters (or the secret is only whitespace).

        Validation already enforces this; the method is for copies made with ``model_copy``.
        """
        problem = self._remote_secret_problem()
        if problem:
            raise ConfigError(f"{self._where()}: {problem}")

    def pos_server_bind_address(self) -> tuple[str, int] | None:
        """Where the position server listens: ``pos_server_bind`` or the pos_server host, same port."""
        if self.pos_server is None:
            return None
        return (self.pos_server_bind or self.pos_server[0], self.pos_server[1])

    def with_bot_name(self, strategy_yaml: str | os.PathLike[str]) -> TradeConfig:
        """A copy with ``strategy_yaml`` set and bot_name / log_folder re-derived unless explicit."""
        return self.with_strategy(self.strategy_py, strategy_yaml)

    def with_strategy(
        self, strategy_py: str | os.PathLike[str] | None, strategy_yaml: str | os.PathLike[str] | None
    ) -> TradeConfig:
        """A copy using these strategy files (from the command line), derived names updated."""
        new = self.model_copy(
            update={
                "strategy_py": str(strategy_py) if strategy_py else self.strategy_py,
                "strategy_yaml": str(strategy_yaml) if strategy_yaml else self.strategy_yaml,
            }
        )
        new._explicit = self._explicit
        new._source = self._source
        new._fill_derived()
        return new

    def redacted(self) -> dict[str, Any]:
        """Every key with secrets masked: safe to log or print."""
        out = self.model_dump(mode="json")
        for key in self._SECRET_KEYS:
            out[key] = "***" if getattr(self, key).get_secret_value() else ""
        out["pos_server_discord"] = mask_url(self.pos_server_discord_value())
        return out


#: trade.yaml keys a running bot or position server may apply without a restart.
TRADE_LIVE_KEYS: frozenset[str] = frozenset(
    {
        "base_position", "adjust_position_with_api", "adjust_max_size", "adjust_position_interval",
        "adjust_consecutive", "pos_server_graph_period", "pos_server_discord", "pos_server_discord_interval",
        "pos_server_discord_send_text", "pos_server_bitflyer_color", "pos_server_check_interval",
        "pos_server_consecutive", "pos_server_evict_after", "log_level", "close_on_exit", "api_reserve",
        "over_limit_pause", "trade_health", "status_interval", "pos_server_margin_interval",
        "pos_server_keep_rate_warn", "pos_server_keep_rate_close_only", "pos_server_max_daily_loss",
        "pos_server_alerts", "pos_server_alert_interval",
        "pos_server_correct_all",
    }
)


def changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """Names of the fields whose value differs between two configs of the same model, in order."""
    return [k for k in type(new).model_fields if getattr(old, k, None) != getattr(new, k)]


