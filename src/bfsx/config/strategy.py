"""Strategy yaml: :class:`StrategyConfig`, its no-trade windows and subscriptions.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from bfsx import clock
from bfsx.bitflyer.timestamps import JST
from bfsx.config.base import (
    Hours,
    Level,
    Minutes,
    Secret,
    _fail,
    _Model,
    _no_bool,
    _show,
)
from bfsx.logs import mask_url

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
    """The strategy yaml (docs/config.md#strategy-yaml): ``parameters`` is free, the rest checked."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    close_position: bool = False
    no_trade: list[NoTradeWindow] = Field(default_factory=list)
    subscribe: Subscribe = Field(default_factory=Subscribe)
    minute_to_expire: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=43200)] | None = None
    log_level: Level | None = None
    discord_webhook: Secret = SecretStr("")
    discord_interval: Minutes = 60.0
    discord_graph_period: Hours = 6.0
    # Pre-trade risk checks (docs/config.md#risk-limits): a refusal, never an exception.
    max_order_size: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    max_position: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=10_000, allow_inf_nan=False)] | None = None
    price_band: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=1, allow_inf_nan=False)] = 0.05
    max_orders_per_second: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=1000)] = 10

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None when built in code)."""
        return self._source

    def in_no_trade(self, now: datetime | None = None) -> bool:
        """True when ``now`` (default: the current time) is inside any ``no_trade`` window."""
        if not self.no_trade:
            return False
        when = now if now is not None else clock.now_jst()  # the runtime's clock (virtual in a backtest)
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


