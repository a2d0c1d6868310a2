"""Id formats (docs/bitflyer.md#ids).

Acceptance ``JRFYYYYMMDD-HHMMSS-NNNNNN`` (UTC); child order ``JOR…`` on spot, ``JFX…F`` on FX/CFD;
parent ``JCP…``. Execution ids are strictly increasing integers across the venue.
"""

from __future__ import annotations

import re
from datetime import datetime

from bfsx.bitflyer.timestamps import utc_second

ACCEPTANCE_RE = re.compile(r"^JRF\d{8}-\d{6}-\d{6}$")
CHILD_ORDER_RE = re.compile(r"^(JOR\d{8}-\d{6}-\d{6}|JFX\d{8}-\d{6}-\d{6}F)$")


def _stamp(when: datetime) -> str:
    t = utc_second(when)  # 2023-05-25T08:02:46, made once per second (timestamps.utc_second)
    return f"{t[0:4]}{t[5:7]}{t[8:10]}-{t[11:13]}{t[14:16]}{t[17:19]}"


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
