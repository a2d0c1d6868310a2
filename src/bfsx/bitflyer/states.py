"""Exchange health and board states (docs/bitflyer.md#health-and-board-state), with spaces as on the wire."""

from __future__ import annotations

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
