"""Id formats (docs/bitflyer.md#ids).

Acceptance ``JRFYYYYMMDD-HHMMSS-NNNNNN`` (UTC); child order ``JOR…`` on spot, ``JFX…F`` on FX/CFD;
parent ``JCP…``. Execution ids are strictly increasing integers across the venue.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

ACCEPTANCE_RE = re.compile(r"^JRF\d{8}-\d{6}-\d{6}$")
CHILD_ORDER_RE = re.compile(r"^(JOR\d{8}-\d{6}-\d{6}|JFX\d{8}-\d{6}-\d{6}F)$")


_stamps: dict[datetime, str] = {}  # bounded: cleared when full


def _stamp(when: datetime) -> str:
    # strftime costs ~3.5 us and the simulator stamps every maker of every print: the quotes of one
    # flow step (and the orders of one second) share their datetime, so the text is made once
    text = _stamps.get(when)
    if text is None:
        if len(_stamps) >= 4096:
            _stamps.clear()
        text = _stamps[when] = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return text


def acceptance_id(when: datetime, serial: int) -> str:
    """``JRF20230525-080246-059340``."""
    return f"JRF{_stamp(when)}-{serial % 1_000_000:06d}"


def child_order_id(when: datetime, serial: int, fx: bool) -> str:
    """``JOR…`` (spot) or ``JFX…F`` (FX/CFD)."""
    if fx:
        return f"JFX{_stamp(when)}-{serial % 1_000_000:06d}F"
    return f"JOR{_stamp(when)}-{serial % 1_000_000:06d}"


def parent_order_id(when: datetime, serial: int) -> str:
    return f"JCP{_stamp(when)}-{serial % 1_000_000:06d}"
