"""Run config (trade.yaml) and strategy yaml: pydantic models, one-line errors, hot reload.

Every user mistake becomes a :class:`ConfigError` whose text is ONE line naming the file and the
key, e.g. ``trade.yaml: unknown key 'adjust_max_sise' (did you mean 'adjust_max_size'?)``. Keys keep
the names BFS-X users know (SPEC §3.2, §3.3). See ``docs/config.md`` for the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import logging
import os
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from bfsx.bitflyer.products import PRODUCTS
from bfsx.bitflyer.states import HEALTH_LEVELS
from bfsx.bitflyer.timestamps import JST
from bfsx.errors import UserError
from bfsx.logs import add_secret, mask_url
from bfsx.net import is_loopback

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

log = logging.getLogger("bfsx.config")

DEFAULT_ENDPOINT = "https://api.bitflyer.com"
DEFAULT_WS_ENDPOINT = "wss://ws.lightstream.bitflyer.com/json-rpc"
DEFAULT_TRADE_YAML = "trade.yaml"
ENV_APIKEY = "BFSX_APIKEY"
ENV_SECRET = "BFSX_SECRET"
ENV_POS_SERVER_SECRET = "BFSX_POS_SERVER_SECRET"
_ENV_KEYS = {ENV_APIKEY: "apikey", ENV_SECRET: "secret", ENV_POS_SERVER_SECRET: "pos_server_secret"}

#: Health levels at which a bot may be told to trade (NO ORDER / STOP never accept orders).
TRADE_HEALTH_CHOICES = HEALTH_LEVELS[: HEALTH_LEVELS.index("SUPER BUSY") + 1]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_YAML_SUFFIXES = (".yaml", ".yml")


class ConfigError(UserError):
    """A config mistake, as one line that names the file and the key."""


# ------------------------------------------------------------------------------------------ helpers
def _fail(message: str) -> PydanticCustomError:
    # Passed through ctx so that braces in user input can never break the template.
    return PydanticCustomError("bfsx", "{m}", {"m": message})


def _show(value: Any) -> str:
    """A user value as it would look in YAML, short enough for one line."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = repr(value) if isinstance(value, str) else repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1; for a number in a config file that is always a mistake.
    if isinstance(value, bool):
        raise PydanticCustomError("not_a_number", "not a number")
    return value


def _secret_text(value: Any) -> Any:
    # An all-digit key would be read by YAML as an int: take it as the text the user typed.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _host_port(value: Any) -> Any:
    """``[host, port]`` (the BFS-X form) or ``"host:port"`` → ``(host, port)``."""
    pair: Any = value
    if isinstance(value, str) and ":" in value:
        pair = value.rpartition(":")[::2]
    if isinstance(pair, list | tuple) and len(pair) == 2:
        host, port = pair
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if (
            isinstance(host, str) and host.strip()
            and isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535
        ):
            return (host.strip().strip("[]"), port)
    raise _fail(f"must be a [host, port] list with a port 1-65535, got {_show(value)}")


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


PosFloat = Annotated[float, BeforeValidator(_no_bool), Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_no_bool), Field(ge=0)]
Number = Annotated[float, BeforeValidator(_no_bool)]
PosInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
Secret = Annotated[SecretStr, BeforeValidator(_secret_text)]
HostPort = Annotated[tuple[str, int], BeforeValidator(_host_port)]


def _upper_level(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


Level = Annotated[LogLevel, BeforeValidator(_upper_level)]


class _Model(BaseModel):
    """Base: unknown keys are errors; a key written with no value (``key:``) means its default."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=False)

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        return data


# -------------------------------------------------------------------------------------- trade.yaml
class TradeConfig(_Model):
    """trade.yaml: the run config of one bot (and of the position server). SPEC §3.2."""

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
    base_position: Number = 0.0
    adjust_position_with_api: bool = False
    adjust_max_size: PosFloat = 0.1
    adjust_position_interval: PosFloat = 30.0
    adjust_consecutive: PosInt = 4
    # position server
    pos_server: HostPort | None = None
    pos_server_bind: str | None = None
    pos_server_secret: Secret = SecretStr("")
    pos_server_graph_period: PosFloat = 6.0
    pos_server_discord: Secret = SecretStr("")
    pos_server_discord_interval: PosFloat = 60.0
    pos_server_discord_send_text: bool = False
    pos_server_bitflyer_color: bool = False
    pos_server_discord_influxdb: HostPort | None = None
    pos_server_check_interval: PosFloat = 30.0
    pos_server_consecutive: PosInt = 4
    pos_server_evict_after: PosFloat = 300.0
    pos_server_report_interval: PosFloat = 10.0
    pos_server_query_interval: PosFloat = 10.0
    # logs
    console_output: bool = True
    log_folder: str = ""
    log_level: Level = "INFO"
    # runtime safety (SPEC §5.4)
    close_on_exit: bool = False
    api_reserve: NonNegInt = 50
    over_limit_pause: PosFloat = 60.0
    trade_health: str = "SUPER BUSY"
    health_interval: PosFloat = 5.0
    ws_silence_timeout: NonNegFloat = 60.0
    status_interval: NonNegFloat = 60.0

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
        problem = self._remote_secret_problem()
        if problem:
            raise _fail(problem)
        return self

    def _fill_derived(self) -> None:
        if "bot_name" not in self._explicit:
            stem = Path(self.strategy_yaml).stem if self.strategy_yaml else "bot"
            self.bot_name = f"{stem}_{self.product}"
        if "log_folder" not in self._explicit:
            self.log_folder = f"./logs/{self.bot_name}"

    def _remote_secret_problem(self) -> str | None:
        if self.pos_server is None or self.pos_server_secret.get_secret_value():
            return None
        for host in (self.pos_server[0], self.pos_server_bind):
            if host is not None and not is_loopback(host):
                return (
                    f"'pos_server_secret' is required when the position server host is not loopback "
                    f"({host!r}); or set {ENV_POS_SERVER_SECRET}"
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
        """The position-server signing secret in clear ('' when unset, allowed on loopback only)."""
        return self.pos_server_secret.get_secret_value()

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
        """Raise :class:`ConfigError` when a non-loopback position server has no secret.

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
        "over_limit_pause", "trade_health", "status_interval",
    }
)


def changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """Names of the fields whose value differs between two configs of the same model, in order."""
    return [k for k in type(new).model_fields if getattr(old, k, None) != getattr(new, k)]


# ----------------------------------------------------------------------------------- strategy yaml
_WEEKDAYS: dict[str, int] = {}
for _i, _names in enumerate(
    (("mon", "monday", "月"), ("tue", "tuesday", "火"), ("wed", "wednesday", "水"), ("thu", "thursday", "木"),
     ("fri", "friday", "金"), ("sat", "saturday", "土"), ("sun", "sunday", "日"))
):
    for _n in _names:
        _WEEKDAYS[_n] = _i
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TIME_RX = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def _parse_hhmm(value: Any) -> Any:
    if isinstance(value, time):
        return value
    m = _TIME_RX.fullmatch(value.strip()) if isinstance(value, str) else None
    if m:
        h, mi, s = int(m[1]), int(m[2]), int(m[3] or 0)
        if (h, mi, s) == (24, 0, 0):
            return time(0, 0)  # "…-24:00" = until midnight
        if h < 24 and mi < 60 and s < 60:
            return time(h, mi, s)
    raise _fail(f"must be a time HH:MM (JST), got {_show(value)}")


class NoTradeWindow(_Model):
    """A JST window without new orders: ``{start: "03:55", end: "04:15"}`` or ``"03:55-04:15"``.

    ``end`` is exclusive; ``start > end`` crosses midnight. ``weekdays`` (optional) lists the days on
    which the window STARTS (``[sat]``, ``[mon, tue]``, ``[土]``); absent = every day.
    """

    start: Annotated[time, BeforeValidator(_parse_hhmm)]
    end: Annotated[time, BeforeValidator(_parse_hhmm)]
    weekdays: frozenset[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            parts = [p.strip() for p in data.split("-")]
            if len(parts) != 2:
                raise _fail(f"must be a window \"HH:MM-HH:MM\" or {{start, end}}, got {_show(data)}")
            return {"start": parts[0], "end": parts[1]}
        return data

    @field_validator("weekdays", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if isinstance(items, list | tuple):
            days = set()
            for item in items:
                key = item.strip().lower() if isinstance(item, str) else None
                key = key[:1] if key and key[:1] in "月火水木金土日" else key
                if key not in _WEEKDAYS:
                    raise _fail(f"must list days like [mon, sat] (or 月..日), got {_show(item)}")
                days.add(_WEEKDAYS[key])
            return frozenset(days)
        raise _fail(f"must list days like [mon, sat], got {_show(v)}")

    @model_validator(mode="after")
    def _not_empty(self) -> NoTradeWindow:
        if self.start == self.end:
            raise _fail(f"start and end must differ, got {self.start:%H:%M} for both")
        return self

    def contains(self, now: datetime) -> bool:
        """True when ``now`` (aware; a naive time is taken as JST) falls in this window."""
        local = now.replace(tzinfo=JST) if now.tzinfo is None else now.astimezone(JST)
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            inside, day = self.start <= t < self.end, local
        elif t >= self.start:
            inside, day = True, local
        elif t < self.end:
            inside, day = True, local - timedelta(days=1)  # the window began yesterday
        else:
            inside, day = False, local
        return inside and (self.weekdays is None or day.weekday() in self.weekdays)

    def __str__(self) -> str:
        days = "" if self.weekdays is None else " " + ",".join(_DAY_NAMES[d] for d in sorted(self.weekdays))
        return f"{self.start:%H:%M}-{self.end:%H:%M} JST{days}"


class Subscribe(_Model):
    """Which public channels the bot subscribes to."""

    executions: bool = True
    board: bool = True
    ticker: bool = True


class StrategyConfig(_Model):
    """The strategy yaml. SPEC §3.3. ``parameters`` is free; everything else is checked."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    close_position: bool = False
    no_trade: list[NoTradeWindow] = Field(default_factory=list)
    subscribe: Subscribe = Field(default_factory=Subscribe)
    minute_to_expire: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=43200)] | None = None
    log_level: Level | None = None
    discord_webhook: Secret = SecretStr("")
    discord_interval: PosFloat = 60.0
    discord_graph_period: PosFloat = 6.0

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None when built in code)."""
        return self._source

    def in_no_trade(self, now: datetime | None = None) -> bool:
        """True when ``now`` (default: the current time) is inside any ``no_trade`` window."""
        if not self.no_trade:
            return False
        when = now if now is not None else datetime.now(JST)
        return any(w.contains(when) for w in self.no_trade)

    def discord_webhook_value(self) -> str:
        """The per-bot Discord webhook URL in clear ('' = off)."""
        return self.discord_webhook.get_secret_value()

    def redacted(self) -> dict[str, Any]:
        """Every key with the webhook masked: safe to log."""
        out = self.model_dump(mode="json")
        out["discord_webhook"] = mask_url(self.discord_webhook_value())
        out["no_trade"] = [str(w) for w in self.no_trade]
        return out


# ------------------------------------------------------------------------------------ YAML reading
class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and does not read ``13:30`` as the integer 810."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            with contextlib.suppress(TypeError):  # unhashable keys: let PyYAML report them
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads "4:15" and "13:30" as base-60 integers (255, 810): drop that form so times stay text.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; every failure is one ConfigError line naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (e.problem or e.context or "invalid YAML").strip()
        if "\\t" in problem or "\t" in problem:
            problem = "tab character (indent with spaces)"
        if problem.startswith("duplicate key"):
            raise ConfigError(f"{path}: {problem}{where}") from None
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of 'key: value' lines, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------- pydantic error → one line
def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip Optional and Annotated: (bare type, constraint metadata)."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
            annotation = base
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


def _field_at(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow an error location through nested models: (model owning the last key, its field)."""
    owner: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if owner is None or part not in owner.model_fields:
            return (owner if i == len(loc) - 1 else None), None
        field = owner.model_fields[part]
        if i == len(loc) - 1:
            return owner, field
        bare, _ = _unwrap(field.annotation)
        if typing.get_origin(bare) is list:
            bare, _ = _unwrap(typing.get_args(bare)[0])
        owner = bare if inspect.isclass(bare) and issubclass(bare, BaseModel) else None
    return owner, field


def _expectation(field: FieldInfo) -> str | None:
    bare, meta = _unwrap(field.annotation)
    meta = [*meta, *field.metadata]
    bounds = []
    for m in meta:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sym} {getattr(m, attr)}")
    bound = f" {' and '.join(bounds)}" if bounds else ""
    if bare is bool:
        return "true or false"
    if bare is int:
        return f"an integer{bound}"
    if bare is float:
        return f"a number{bound}"
    if bare in (str, SecretStr):
        return "a string"
    if typing.get_origin(bare) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(bare)))
    if typing.get_origin(bare) is list:
        return "a list"
    if typing.get_origin(bare) is dict:
        return "a mapping of 'key: value'"
    if inspect.isclass(bare) and issubclass(bare, BaseModel):
        return f"a mapping with keys {', '.join(bare.model_fields)}"
    return None


def _loc_text(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_error(model: type[BaseModel], err: Mapping[str, Any]) -> str:
    loc: tuple[int | str, ...] = tuple(err.get("loc", ()))
    kind, value = err.get("type", ""), err.get("input")
    key = _loc_text(loc)
    if kind == "bfsx":
        message = str(err.get("ctx", {}).get("m", err.get("msg", "")))
        return f"'{key}' {message}" if loc else message
    owner, field = _field_at(model, loc)
    if kind == "extra_forbidden":
        known = list(owner.model_fields) if owner is not None else []
        hint = _suggest(str(loc[-1]), known)
        prefix = key[: len(key) - len(str(loc[-1]))]
        return f"unknown key '{key}'" + (f" (did you mean '{prefix}{hint}'?)" if hint else "")
    if kind == "missing":
        return f"'{key}' is required"
    if not loc:
        return str(err.get("msg", "invalid"))
    expect = _expectation(field) if field is not None else None
    if expect is None:
        expect = str(err.get("msg", "valid")).lower().removeprefix("input should be ").removeprefix("value error, ")
    secret = field is not None and _unwrap(field.annotation)[0] is SecretStr
    return f"'{key}' must be {expect}" + ("" if secret else f", got {_show(value)}")


def _one_line(path: Path | str, model: type[BaseModel], e: ValidationError) -> ConfigError:
    # A misspelled key usually also shows up as a "missing" one: report the root cause first.
    errors = sorted(e.errors(include_url=False), key=lambda err: err.get("type") != "extra_forbidden")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(f"{path}: {_one_error(model, errors[0])}{more}")


# -------------------------------------------------------------------------------------- loaders
def _resolve_near(value: Any, base: Path) -> Any:
    """A relative path that does not exist from the current directory, tried next to the config file."""
    if isinstance(value, str) and value.strip():
        p = Path(value.strip())
        if not p.is_absolute() and not p.exists() and (base / p).exists():
            return str(base / p)
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
    raw = _read_yaml(p)
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
        raise _one_line(p, TradeConfig, e) from None
    cfg._source = p
    for s in cfg.secret_values():
        add_secret(s)
    return cfg


def load_strategy_config(path: str | os.PathLike[str]) -> StrategyConfig:
    """Load and validate a strategy yaml. Raises :class:`ConfigError` (one line) on any mistake."""
    p = Path(path)
    raw = _read_yaml(p)
    try:
        cfg = StrategyConfig.model_validate(raw)
    except ValidationError as e:
        raise _one_line(p, StrategyConfig, e) from None
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
    """The four forms of SPEC §3.1: none → ./trade.yaml; one → TRADE_YAML; two → STRATEGY_PY
    STRATEGY_YAML with ./trade.yaml; three → TRADE_YAML STRATEGY_PY STRATEGY_YAML."""
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
    assert trade.strategy_yaml is not None  # checked just above
    return trade, load_strategy_config(trade.strategy_yaml)


# ------------------------------------------------------------------------------------ hot reload
T = TypeVar("T")


class ConfigWatcher(Generic[T]):
    """Reload a config file when it changes (polls mtime, size and inode every ``interval`` s).

    On a valid edit ``on_change(new)`` is called (plain or async); on an invalid one a single
    warning with the :class:`ConfigError` text is logged and the previous config stays current.
    Touching a file without changing its content calls nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        loader: Callable[[Path], T],
        on_change: Callable[[T], Awaitable[None] | None],
        *,
        interval: float = 1.0,
        current: T | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self.current = current
        self.reloads = 0
        self.rejected = 0
        self._loader = loader
        self._on_change = on_change
        self._log = logger or log
        self._task: asyncio.Task[None] | None = None
        # Taken now, right after the caller loaded the file, so an edit made before start() counts.
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def start(self) -> None:
        """Start polling on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch {self.path}")

    def stop(self) -> None:
        """Stop polling (safe to call twice, or from a signal handler)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Poll once; True when a new config was applied."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            self._log.warning("%s: file not found; keeping the current config", self.path)
            return False
        try:
            new = await asyncio.to_thread(self._loader, self.path)
        except UserError as e:
            self.rejected += 1
            self._log.warning("%s (not reloaded: keeping the current config)", e)
            return False
        except Exception as e:  # a loader bug must not kill the watcher
            self.rejected += 1
            self._log.warning("%s: reload failed: %s: %s (keeping the current config)", self.path, type(e).__name__, e)
            return False
        if self.current is not None and new == self.current:
            return False
        self.current = new
        self.reloads += 1
        try:
            result = self._on_change(new)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("%s: applying the reloaded config failed", self.path)
        return True
