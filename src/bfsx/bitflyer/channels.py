"""Realtime channel names and JSON-RPC error codes (docs/bitflyer.md#realtime-channels)."""

from __future__ import annotations

BOARD_SNAPSHOT = "lightning_board_snapshot_"
BOARD = "lightning_board_"
TICKER = "lightning_ticker_"
EXECUTIONS = "lightning_executions_"
CHILD_ORDER_EVENTS = "child_order_events"
PARENT_ORDER_EVENTS = "parent_order_events"

PUBLIC_PREFIXES = (BOARD_SNAPSHOT, BOARD, TICKER, EXECUTIONS)  # snapshot before board: longest prefix first
PRIVATE_CHANNELS = frozenset({CHILD_ORDER_EVENTS, PARENT_ORDER_EVENTS})

MAINTENANCE_CLOSE_CODE = 1012
MAINTENANCE_CLOSE_REASON = "scheduled maintenance"
PING_INTERVAL = 15.0

# JSON-RPC errors seen on the wire
PARSE_ERROR = (-32700, "Parse error")
METHOD_NOT_FOUND = (-32601, "Method not found")
INVALID_PARAMS = (-32602, "Invalid params")
INVALID_CHANNEL = (-32602, "invalid channel")
INVALID_SIGNATURE = (-32602, "Invalid signature")
AUTH_REQUIRED = (-32007, "authentication required")
ALREADY_SUBSCRIBED = (-32009, "already subscribed")


def board_snapshot(product: str) -> str:
    return BOARD_SNAPSHOT + product


def board(product: str) -> str:
    return BOARD + product


def ticker(product: str) -> str:
    return TICKER + product


def executions(product: str) -> str:
    return EXECUTIONS + product


def split(channel: str) -> tuple[str, str]:
    """``('lightning_board_', 'FX_BTC_JPY')`` for a public channel, ``(channel, '')`` for a private one,
    ``('', '')`` for an unknown name."""
    if channel in PRIVATE_CHANNELS:
        return channel, ""
    for prefix in PUBLIC_PREFIXES:
        if channel.startswith(prefix):
            return prefix, channel[len(prefix):]
    return "", ""
