"""Exchange health and board state, polled over REST (docs/bitflyer.md#health-and-board-state).

An error, a timeout or a reading older than ``stale_after`` makes both readings ``UNKNOWN``:
the poller never claims NORMAL / RUNNING on data it does not have (invariant 3,
docs/ARCHITECTURE.md#invariants).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from bfsx import clock
from bfsx.bitflyer.messages import BoardState
from bfsx.bitflyer.states import health_rank

log = logging.getLogger(__name__)

UNKNOWN = "UNKNOWN"


class BoardStateSource(Protocol):
    """What the poller needs from :class:`bfsx.bitflyer.rest.RestClient`."""

    async def get_board_state(self, product: str) -> BoardState: ...


class HealthPoller:
    """Polls ``getboardstate`` every ``interval`` seconds in a task of its own.

    ``can_trade`` is True only while the last reading is fresh, the board state is one of
    ``states`` and the health is no worse than ``worst_health``.
    """

    def __init__(
        self,
        rest: BoardStateSource,
        product: str,
        interval: float = 5.0,
        *,
        worst_health: str = "SUPER BUSY",
        states: Sequence[str] = ("RUNNING",),
        stale_after: float | None = None,
        timeout: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("HealthPoller: interval must be > 0")
        self.rest = rest
        self.product = product
        self.interval = interval
        self.worst_health = worst_health
        self.states = tuple(states)
        self.stale_after = stale_after if stale_after is not None else 3 * interval + 5.0
        self.timeout = timeout if timeout is not None else max(interval, 10.0)
        self._health = UNKNOWN
        self._state = UNKNOWN
        #: ``clock.monotonic()`` of the last successful poll (0.0: never).
        self.updated_at = 0.0
        #: One line describing the last failure, None after a success.
        self.last_error: str | None = None
        self.polls = 0
        self.errors = 0
        #: Called with (health, state) whenever either reading changes (UNKNOWN included).
        self.on_change: list[Callable[[str, str], object]] = []
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ readings
    def _fresh(self) -> bool:
        return self.updated_at > 0 and clock.monotonic() - self.updated_at <= self.stale_after

    @property
    def health(self) -> str:
        """``NORMAL`` … ``STOP``, or ``UNKNOWN`` (error, never polled, or stale)."""
        return self._health if self._fresh() else UNKNOWN

    @property
    def state(self) -> str:
        """``RUNNING``, ``CLOSED``, ``PREOPEN`` …, or ``UNKNOWN``."""
        return self._state if self._fresh() else UNKNOWN

    @property
    def can_trade(self) -> bool:
        health = self.health
        return (health != UNKNOWN and self.state in self.states
                and health_rank(health) <= health_rank(self.worst_health))

    # ------------------------------------------------------------------ polling
    async def poll_once(self) -> None:
        """One ``getboardstate`` call; updates the readings (UNKNOWN on any failure)."""
        self.polls += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self.rest.get_board_state(self.product)
            health = str(reply["health"])
            state = str(reply["state"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure means we do not know: never keep the old NORMAL
            self.errors += 1
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.last_error is None:
                log.warning("board state of %s unknown: %s", self.product, reason)
            self.last_error = reason
            self.updated_at = 0.0
            self._set(UNKNOWN, UNKNOWN)
            return
        if self.last_error is not None:
            log.info("board state of %s back: %s / %s", self.product, health, state)
        self.last_error = None
        self.updated_at = clock.monotonic()
        self._set(health, state)

    def _set(self, health: str, state: str) -> None:
        changed = (health, state) != (self._health, self._state)
        self._health, self._state = health, state
        if changed:
            for cb in self.on_change:
                try:
                    cb(health, state)
                except Exception:
                    log.exception("health listener failed")

    async def _run(self) -> None:
        while True:
            started = clock.monotonic()
            await self.poll_once()
            await asyncio.sleep(max(0.0, self.interval - (clock.monotonic() - started)))

    async def start(self) -> None:
        """Poll once now (so readings exist when this returns), then every ``interval`` in a task."""
        if self._task is not None:
            return
        await self.poll_once()
        self._task = asyncio.get_running_loop().create_task(self._loop_after_first())

    async def _loop_after_first(self) -> None:
        await asyncio.sleep(self.interval)
        await self._run()

    async def stop(self) -> None:
        """Stop polling (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    close = stop

    def __repr__(self) -> str:
        return f"HealthPoller({self.product}, health={self.health}, state={self.state})"
