"""What every config model shares: :class:`ConfigError` (one line naming the file and the key), the
base model that forbids unknown keys, the small validators and the defaults.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bfsx.bitflyer import endpoints
from bfsx.bitflyer.limits import PRIVATE_LIMIT
from bfsx.bitflyer.states import HEALTH_LEVELS
from bfsx.errors import UserError

log = logging.getLogger("bfsx.config")

DEFAULT_ENDPOINT = endpoints.REST_ORIGIN
DEFAULT_WS_ENDPOINT = endpoints.REALTIME_URL
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


# ------------------------------------------------------------------------------------------- bounds
# Every number a config holds is finite: `.nan` compares false with everything (a NaN base_position
# made every report unsendable) and `.inf` removes whatever cap it is (adjust_max_size: .inf let an
# uncapped correction out). `allow_inf_nan=False` on the types (and on the base model, for any float
# declared without them) refuses both with "must be a finite number ...".

#: Shortest interval in seconds. Short enough that tests run the 30 s logic in a fraction of a
#: second, long enough that a slip like `1e-9` cannot turn a check or heartbeat into a busy loop.
MIN_INTERVAL_S = 0.05
#: Longest interval in seconds: one day. A check, heartbeat or pause longer than that is "off" in
#: practice, and a bot on real money should say so explicitly (or not use the feature).
MAX_INTERVAL_S = 86_400
#: The same floor and ceiling for the keys counted in minutes (0.06 s .. one day).
MIN_INTERVAL_MIN = 0.001
MAX_INTERVAL_MIN = 1_440
#: Chart periods in hours: 36 s .. 30 days (the charts downsample; the history is pruned past it).
MIN_PERIOD_H = 0.01
MAX_PERIOD_H = 720
#: Identical diffs in a row before a correction. 100 rounds of the default 30 s check is 50 minutes
#: of a known drift left alone: beyond that the count no longer filters noise, it disables the check.
MAX_CONSECUTIVE = 100

_FINITE = Field(allow_inf_nan=False)


def _off_or_floor(value: float) -> float:
    # 0 means "off" for these keys; anything else is an interval and gets the same floor as the rest.
    if 0 < value < MIN_INTERVAL_S:
        raise _fail(f"must be 0 (off) or a finite number >= {MIN_INTERVAL_S} and <= {MAX_INTERVAL_S}, got {_show(value)}")
    return value


PosFloat = Annotated[float, BeforeValidator(_no_bool), _FINITE, Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_no_bool), _FINITE, Field(ge=0)]
Number = Annotated[float, BeforeValidator(_no_bool), _FINITE]
PosInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
#: An interval in seconds (``*_interval``, ``pos_server_evict_after``, ``over_limit_pause``).
Seconds = Annotated[float, BeforeValidator(_no_bool), _FINITE, Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)]
#: An interval in seconds where 0 turns the feature off (``ws_silence_timeout``, ``status_interval``).
SecondsOrOff = Annotated[
    float, BeforeValidator(_no_bool), _FINITE, Field(ge=0, le=MAX_INTERVAL_S), AfterValidator(_off_or_floor)
]
#: An interval in minutes (the Discord chart posts).
Minutes = Annotated[float, BeforeValidator(_no_bool), _FINITE, Field(ge=MIN_INTERVAL_MIN, le=MAX_INTERVAL_MIN)]
#: A chart period in hours.
Hours = Annotated[float, BeforeValidator(_no_bool), _FINITE, Field(ge=MIN_PERIOD_H, le=MAX_PERIOD_H)]
#: Identical diffs in a row before a correction (``*_consecutive``).
Consecutive = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=MAX_CONSECUTIVE)]
#: A reserve of private API calls: at most the whole bucket (a larger one refuses every order).
ApiReserve = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=PRIVATE_LIMIT)]
Secret = Annotated[SecretStr, BeforeValidator(_secret_text)]
HostPort = Annotated[tuple[str, int], BeforeValidator(_host_port)]


def _upper_level(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


Level = Annotated[LogLevel, BeforeValidator(_upper_level)]


class _Model(BaseModel):
    """Base: unknown keys are errors; a key written with no value (``key:``) means its default."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        return data


