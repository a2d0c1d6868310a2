"""What every config model shares: :class:`ConfigError` (one line naming the file and the key), the
base model that forbids unknown keys, the small validators and the defaults.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bfsx.bitflyer.states import HEALTH_LEVELS
from bfsx.errors import UserError

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


