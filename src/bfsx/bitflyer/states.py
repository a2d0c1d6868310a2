"""Exchange health and board states (docs/bitflyer.md#health-and-board-state), with spaces as on the
wire, and what a ``getchildorders`` ``child_order_state`` says about an order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

HEALTH_LEVELS = ("NORMAL", "BUSY", "VERY BUSY", "SUPER BUSY", "NO ORDER", "STOP")
BOARD_STATES = ("RUNNING", "CLOSED", "STARTING", "PREOPEN", "CIRCUIT BREAK", "AWAITING SQ", "MATURED")


def health_rank(health: str) -> int:
    """0 for NORMAL up to 5 for STOP; unknown strings rank as STOP (never trade on unknown data)."""
    try:
        return HEALTH_LEVELS.index(health)
    except ValueError:
        return len(HEALTH_LEVELS) - 1


def can_order(health: str, state: str = "RUNNING", worst: str = "SUPER BUSY") -> bool:
    """True when new orders make sense: board RUNNING and health no worse than ``worst``."""
    return state == "RUNNING" and health_rank(health) <= health_rank(worst)


#: ``child_order_state`` of an order still on the book (its row has ``id`` 0).
CHILD_ORDER_ACTIVE = "ACTIVE"

#: How a finished order ended, in the order tracker's state names (``bfsx.account.orders.OrderState``).
OrderOutcome = Literal["FILLED", "CANCELLED", "EXPIRED", "FAILED"]

_REST_OUTCOMES: Mapping[str, OrderOutcome] = {
    "COMPLETED": "FILLED",
    "CANCELED": "CANCELLED",
    "EXPIRED": "EXPIRED",
    "REJECTED": "FAILED",
}


def rest_outcome(child_order_state: object) -> OrderOutcome | None:
    """How the order of a ``getchildorders`` row ended, or None while it is ACTIVE (or the state is
    unknown)."""
    return _REST_OUTCOMES.get(str(child_order_state))
