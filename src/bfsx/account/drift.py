"""Drift check: when does the exchange's position disagree with ours for long enough to correct?

Pure logic, shared by single-bot correction (``adjust_position_with_api``) and the position server.
The caller samples ``expected`` (what the bots believe, plus base_position where it applies) and
``actual`` (the exchange) every check interval and sends the :class:`Correction` it gets back.

Rules (invariants 3 and 8, docs/ARCHITECTURE.md#invariants):

* **Unknown is not zero.** ``None`` for either side (API error, timeout) is no observation: it
  neither counts toward nor resets the streak, and never yields an order. Not resetting keeps a
  flaky API from postponing a real correction forever; not counting keeps a correction from ever
  resting on a sample that was not taken.
* **Not quiet** (fills or orders in flight recently): the difference may include a fill not yet
  reported, so the sample is skipped like an unknown one: it neither counts nor resets (it is still
  shown as ``last_diff``). Resetting would let bots that trade more often than the quiet time hold a
  real drift back for ever: a busy market maker is rarely quiet for ``consecutive`` checks in a row.
* A difference below ``min_size`` is no drift and resets the streak.
* ``consecutive`` identical differences (``actual - expected``, compared at the size step) in
  quiet samples, with no other difference in a quiet sample between them, yield
  ``Correction(side, size)`` with ``size = min(|diff|, max_order)`` rounded *down* to the size
  step, ``side`` moving the exchange toward ``expected``; the streak then starts over, so the next
  correction needs fresh evidence that this one did not land. A correction the exchange *refused*
  (:meth:`DriftCheck.refused`) did not land, so the next identical difference sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

SIZE_STEP = Decimal("0.00000001")  # bitFlyer sizes have 8 decimals (ProductSpec.size_decimals)

SELF_HEAL_SECONDS = 60.0
"""A bot finds a fill whose private event was lost within this long on its own (its settle
resync). A position server that judges a drift stable sooner may correct what the bot is about to
heal, and then correct back: two needless market orders."""


@dataclass(frozen=True, slots=True)
class Correction:
    """A market order that moves the exchange position toward the expected one."""

    side: Literal["BUY", "SELL"]
    size: Decimal
    diff: Decimal  # the observed actual - expected that triggered it

    def __str__(self) -> str:
        return f"{self.side} {self.size}"


class DriftCheck:
    """Counts consecutive identical position differences; see the module docstring."""

    def __init__(self, min_size: Decimal, consecutive: int, max_order: Decimal, *, size_step: Decimal = SIZE_STEP) -> None:
        if consecutive < 1:
            raise ValueError("consecutive must be >= 1")
        self.min_size = Decimal(min_size)
        self.consecutive = consecutive
        self.max_order = Decimal(max_order)
        self.size_step = Decimal(size_step)
        self.streak = 0
        """Identical differences seen in a row (for consoles)."""
        self.last_diff: Decimal | None = None
        """The latest known difference ``actual - expected`` (None before the first known sample)."""
        self._streak_diff: Decimal | None = None  # the difference the streak counts
        self.unknown = 0
        """Samples skipped because a side was unknown (cumulative)."""
        self.corrections = 0
        """Correcting orders the caller actually sent (see :meth:`sent`); a correction refused
        later (health, a failed POST) is not one."""
        self._yielded = False  # the last sample yielded a correction (what :meth:`refused` refers to)

    def sent(self) -> None:
        """The caller sent the correction :meth:`observe` returned."""
        self.corrections += 1

    def reset(self) -> None:
        """Forget the streak (e.g. after the caller's correcting order failed)."""
        self.streak = 0

    def refused(self) -> None:
        """The exchange refused the correction the last sample yielded (an error answer, so it
        never traded): the evidence for it stands, and the next quiet sample of the same difference
        yields it again, without a new streak of ``consecutive`` samples. A different difference
        starts a new streak."""
        if self._yielded:
            self.streak = self.consecutive - 1

    def observe(self, expected: Decimal | None, actual: Decimal | None, *, quiet: bool) -> Correction | None:
        """One sample; returns the correction to send, or None."""
        self._yielded = False
        if expected is None or actual is None:
            self.unknown += 1
            return None
        # Nearest step: float noise (0.30000000000000004) must not make equal diffs differ.
        diff = (Decimal(actual) - Decimal(expected)).quantize(self.size_step)
        self.last_diff = diff
        if not quiet:
            return None  # skipped: a fill in flight may be in it (neither counts nor resets)
        if abs(diff) < self.min_size:
            self.streak = 0
            return None
        self.streak = self.streak + 1 if diff == self._streak_diff and self.streak else 1
        self._streak_diff = diff
        if self.streak < self.consecutive:
            return None
        self.streak = 0
        size = min(abs(diff), self.max_order).quantize(self.size_step, rounding=ROUND_DOWN)
        if size < self.min_size or size <= 0:
            return None  # max_order below the exchange minimum: nothing sendable
        self._yielded = True
        return Correction("SELL" if diff > 0 else "BUY", size, diff)


async def run_drift_loop(
    interval_s: Callable[[], float],
    one_round: Callable[[], Awaitable[object]],
    *,
    log: logging.Logger,
    what: str = "position check",
    running: Callable[[], bool] = lambda: True,
    wake: asyncio.Event | None = None,
) -> None:
    """The loop both drift checks run, the single bot's and the position server's: wait one
    interval (read anew every round, so a live reload applies at once), or until ``wake`` is set
    (the caller wants a round sooner), then run one round.

    A round that raises is logged with its traceback once, and again only when the error changes
    or after a round that worked: a bug must neither end the guard nor fill the log every round.
    """
    failing: type[BaseException] | None = None
    while running():
        if wake is None:
            await asyncio.sleep(interval_s())
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_s())
            wake.clear()
        if not running():
            return
        try:
            await one_round()
        except Exception as e:
            if type(e) is not failing:
                log.exception("%s failed", what)
            failing = type(e)
        else:
            if failing is not None:
                log.info("%s works again", what)
            failing = None
