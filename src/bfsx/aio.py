"""The one way bfsx runs an event loop, and the one retry back-off.

:func:`run` starts a coroutine on uvloop's loop when uvloop is installed (faster I/O on the hot
path), else on the standard loop; every command (trade, pos-server, sim, demo) goes through it.
:func:`backoff_delay` is the exponential back-off every retry loop uses (REST retries, realtime
reconnects, Discord posts, InfluxDB flushes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when uvloop is importable, else ``None`` (the standard loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop (uvloop when present) and close the loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def backoff_delay(attempt: int, first_s: float, max_s: float, *, jitter: bool = True) -> float:
    """Delay before retry number ``attempt`` (0-based): ``first_s`` doubled per attempt, capped at
    ``max_s``. With ``jitter`` the delay is drawn from its upper half ("equal jitter"), so peers that
    failed together do not retry together and the delay is never near zero.
    """
    d = min(max_s, first_s * 2.0**attempt)
    return d / 2 + random.uniform(0, d / 2) if jitter else d
