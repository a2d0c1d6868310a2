"""Rate-limit numbers and headers (docs/bitflyer.md#rate-limits)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PRIVATE_LIMIT = 500  # per key per 5 min
IP_LIMIT = 500  # per IP per 5 min
ORDER_LIMIT = 300  # sendchildorder + sendparentorder + cancelallchildorders per 5 min
WINDOW_SECONDS = 300
SMALL_ORDER_SIZE = 0.1  # orders of this size or less count toward the per-minute bucket
SMALL_ORDER_LIMIT = 100  # per minute
SMALL_ORDER_PENALTY_LIMIT = 10  # per minute, for an hour after a breach
SMALL_ORDER_PENALTY_SECONDS = 3600

HDR_PERIOD = "X-RateLimit-Period"
HDR_REMAINING = "X-RateLimit-Remaining"
HDR_RESET = "X-RateLimit-Reset"
HDR_ORDER_PERIOD = "X-OrderRequest-RateLimit-Period"
HDR_ORDER_REMAINING = "X-OrderRequest-RateLimit-Remaining"
HDR_ORDER_RESET = "X-OrderRequest-RateLimit-Reset"


@dataclass(frozen=True, slots=True)
class LimitReading:
    """One bucket as a reply's headers describe it."""

    remaining: int
    period: int  # seconds until the window resets
    reset: int  # unix seconds of the reset


def _get(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:  # aiohttp's CIMultiDict is case-insensitive; a plain dict may not be
        v = headers.get(name.lower())
    return v


def _reading(headers: Mapping[str, str], rem: str, per: str, rst: str) -> LimitReading | None:
    r, p, s = _get(headers, rem), _get(headers, per), _get(headers, rst)
    if r is None:
        return None
    try:
        return LimitReading(int(r), int(p or 0), int(s or 0))
    except ValueError:
        return None


def read_private(headers: Mapping[str, str]) -> LimitReading | None:
    """The ``X-RateLimit-*`` bucket (per key on private calls, per IP on public ones)."""
    return _reading(headers, HDR_REMAINING, HDR_PERIOD, HDR_RESET)


def read_orders(headers: Mapping[str, str]) -> LimitReading | None:
    """The ``X-OrderRequest-RateLimit-*`` bucket."""
    return _reading(headers, HDR_ORDER_REMAINING, HDR_ORDER_PERIOD, HDR_ORDER_RESET)


def headers_for(reading: LimitReading, order: bool = False) -> dict[str, str]:
    """Header dict for one bucket (server side)."""
    if order:
        return {
            HDR_ORDER_PERIOD: str(reading.period),
            HDR_ORDER_REMAINING: str(reading.remaining),
            HDR_ORDER_RESET: str(reading.reset),
        }
    return {HDR_PERIOD: str(reading.period), HDR_REMAINING: str(reading.remaining), HDR_RESET: str(reading.reset)}
