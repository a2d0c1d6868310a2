"""Timestamp formats: REST and realtime differ (docs/bitflyer.md#timestamps); all are UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")


def rest_ms(when: datetime) -> str:
    """REST ``exec_date``: ``2015-07-08T02:43:34.823`` (no Z, fraction trimmed of trailing zeros)."""
    base = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{when.microsecond // 1000:03d}".rstrip("0")
    return f"{base}.{frac}" if frac else base


def rest_seconds(when: datetime) -> str:
    """REST ``child_order_date`` / ``expire_date``: seconds only, no Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


_ws_last: tuple[datetime | None, str] = (None, "")


def ws(when: datetime) -> str:
    """Realtime ``exec_date`` / ``event_date``: 7 fractional digits and Z."""
    global _ws_last
    last, text = _ws_last
    if when is last:  # the prints and events of one match share their datetime object: format once
        return text
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
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
    absent. ``fromisoformat`` on a normalized string is ~8x faster than strptime: fills are hot."""
    if not isinstance(text, str) or not text:
        return time.time()
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{frac[:6].ljust(6, '0')}+00:00" if dot else f"{head}+00:00").timestamp()
    except ValueError:
        try:
            return parse(text).timestamp()
        except ValueError:
            return time.time()


def now() -> datetime:
    return datetime.now(UTC)
