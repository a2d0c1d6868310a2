"""Error bodies and codes (docs/bitflyer.md#error-codes), as typed exceptions.

The simulator builds its error replies from :data:`ERRORS`; the client maps a reply back to the
matching :class:`ApiError` subclass, so both ends agree on one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorCode:
    status: int
    message: str
    http: int


OVER_LIMIT = ErrorCode(-1, "Over API limit per period, per IP address", 429)
INVALID_PRODUCT = ErrorCode(-100, "Invalid product", 400)
PRICE_TOO_LOW = ErrorCode(-106, "The price is too low.", 400)
MIN_SIZE = ErrorCode(-110, "The minimum order size is {min_size} BTC.", 400)
SELF_TRADE = ErrorCode(-159, "You cannot place an order as it is the Self Trade.", 400)
INSUFFICIENT_FUNDS = ErrorCode(-200, "Insufficient funds", 400)
MARKET_CLOSED = ErrorCode(-204, "Market state is closed.", 400)
MARGIN_INSUFFICIENT = ErrorCode(-205, "Margin amount is insufficient for this order.", 400)
OVERLOAD = ErrorCode(-208, "Order is not accepted. Please try again later.", 500)
INVALID_SIGNATURE = ErrorCode(-500, "Invalid signature", 401)
KEY_REQUIRED = ErrorCode(-500, "ACCESS-KEY header is required", 401)
INVALID_PARAMETER = ErrorCode(-101, "Invalid parameter", 400)

ERRORS: dict[int, ErrorCode] = {
    e.status: e
    for e in (
        OVER_LIMIT, INVALID_PRODUCT, PRICE_TOO_LOW, MIN_SIZE, SELF_TRADE, INSUFFICIENT_FUNDS,
        MARKET_CLOSED, MARGIN_INSUFFICIENT, OVERLOAD, INVALID_SIGNATURE, INVALID_PARAMETER,
    )
}


def error_body(code: ErrorCode, **fmt: Any) -> dict[str, Any]:
    """``{"status": -n, "error_message": "...", "data": null}``."""
    return {"status": code.status, "error_message": code.message.format(**fmt), "data": None}


class BitflyerError(Exception):
    """Any failure talking to the exchange."""


class ApiError(BitflyerError):
    """The exchange answered with an error body (or a non-200 without one)."""

    def __init__(self, status: int, message: str, http_status: int, path: str = "") -> None:
        super().__init__(f"{path}: HTTP {http_status} status {status}: {message}" if path else message)
        self.status = status
        self.message = message
        self.http_status = http_status
        self.path = path


class RateLimitError(ApiError):
    """-1: over the API limit; trading should pause."""


class OverloadError(ApiError):
    """-208: overloaded; safe to retry with back-off."""


class MarketClosedError(ApiError):
    """-204: board closed (maintenance)."""


class AuthError(ApiError):
    """-500: signature or key rejected."""


class OrderRejected(ApiError):
    """An order the exchange refused for a reason of its own (size, funds, self trade...)."""


class TransportError(BitflyerError):
    """No usable reply: timeout, connection reset, unparseable body. The outcome is unknown."""


_BY_STATUS: dict[int, type[ApiError]] = {
    -1: RateLimitError,
    -208: OverloadError,
    -204: MarketClosedError,
    -500: AuthError,
    -106: OrderRejected,
    -110: OrderRejected,
    -159: OrderRejected,
    -200: OrderRejected,
    -205: OrderRejected,
}


def api_error(status: int, message: str, http_status: int, path: str = "") -> ApiError:
    """Build the typed error for an error body."""
    if http_status == 429 and status == 0:
        status = -1
    return _BY_STATUS.get(status, ApiError)(status, message, http_status, path)
