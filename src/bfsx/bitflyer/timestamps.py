"""Timestamp formats: REST and realtime differ (docs/bitflyer.md#timestamps); all are UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from bfsx import clock

JST = timezone(timedelta(hours=9), "JST")


_seconds: dict[int, str] = {}  # epoch second -> its UTC text; bounded: cleared when full
_by_datetime: dict[datetime, str] = {}  # the same, by datetime; bounded: cleared when full


def utc_second(when: datetime) -> str:
    """``2015-07-08T02:43:34``: the UTC date and time of ``when`` to the second.

    strftime costs ~3.5 us and the simulator stamps every print, event and order row, most of them
    in a second already stamped: the text is made once per second."""
    text = _by_datetime.get(when)  # one instant's datetime is stamped many times (its hash is cached)
    if text is None:
        second = math.floor(when.timestamp())
        text = _seconds.get(second)
        if text is None:
            if len(_seconds) >= 4096:
                _seconds.clear()
            text = _seconds[second] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_by_datetime) >= 4096:
            _by_datetime.clear()
        _by_datetime[when] = text
    return text


def rest_ms(when: datetime) -> str:
    """REST ``exec_date``: ``2015-07-08T02:43:34.823`` (no Z, fraction trimmed of trailing zeros)."""
    base = utc_second(when)
    frac = f"{when.microsecond // 1000:03d}".rstrip("0")
    return f"{base}.{frac}" if frac else base


def rest_seconds(when: datetime) -> str:
    """REST ``child_order_date`` / ``expire_date``: seconds only, no Z."""
    return utc_second(when)


_ws_last: tuple[datetime | None, str] = (None, "")


def ws(when: datetime) -> str:
    """Realtime ``exec_date`` / ``event_date``: 7 fractional digits and Z."""
    global _ws_last
    last, text = _ws_last
    if when is last:  # the prints and events of one match share their datetime object: format once
        return text
    text = f"{utc_second(when)}.{when.microsecond:06d}0Z"
    _ws_last = (when, text)
    return text


def parse(text: str) -> datetime:
    """Lenient parse of any of the formats above (0–7 fractional digits, optional Z); returns aware UTC."""
    s = text.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6].ljust(6, '0')}"
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(s, fmt).replace(tzinfo=UTC)


def parse_epoch(text: object) -> float:
    """Epoch seconds of a REST or WS date (UTC, 0-7 fraction digits, optional Z); the clock if
    absent (:mod:`bfsx.clock`: the replay's in a backtest). ``fromisoformat`` on a normalized string
    is ~8x faster than strptime: fills are hot."""
    if not isinstance(text, str) or not text:
        return clock.time()
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{frac[:6].ljust(6, '0')}+00:00" if dot else f"{head}+00:00").timestamp()
    except ValueError:
        try:
            return parse(text).timestamp()
        except ValueError:
            return clock.time()


def now() -> datetime:
    """The current time of :mod:`bfsx.clock` as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.time(), UTC)
