"""The one clock a bot's state runs on: wall time live, a replay's virtual time in a backtest.

Owns :class:`Clock` (what a clock answers), :class:`WallClock` (the default), :class:`VirtualClock`
(advanced by a backtest, never by itself) and the process's current clock. Everything that dates
or times bot state (``Strategy.time()``, ``every()``, candles, order ages, no-trade windows, the
runtime's own timers, the budget windows) reads :func:`time` / :func:`monotonic` here instead of
the :mod:`time` module, so a backtest swaps the clock in one place (:func:`install`).

Hot path: :func:`time` and :func:`monotonic` are module attributes rebound by :func:`install`, so a
call costs what ``time.time()`` costs: one attribute lookup, no wrapper frame, no allocation.
Callers must write ``clock.time()`` (the module attribute), never ``from bfsx.clock import time``.
"""

from __future__ import annotations

import contextlib
import time as _time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Protocol

_JST = timezone(timedelta(hours=9), "JST")  # bfsx.bitflyer.timestamps.JST: same zone, a floor above


class Clock(Protocol):
    """A source of epoch seconds (``time``) and of seconds that never go back (``monotonic``)."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class WallClock:
    """The machine's clocks: what a live bot runs on."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


class VirtualClock:
    """A clock that moves only when told (:meth:`advance_to`): a backtest's replay time.

    ``monotonic`` counts seconds from :data:`MONO_START_S` at the start of the replay (small numbers
    keep float steps far below a nanosecond, which the virtual event loop relies on); ``time`` is
    the epoch second of the same instant.
    """

    __slots__ = ("epoch_start_s", "mono_s", "now_s")

    #: ``monotonic()`` at the start: not 0.0, which several readers take for "never happened".
    MONO_START_S = 1.0

    def __init__(self, epoch_start_s: float) -> None:
        self.epoch_start_s = epoch_start_s
        self.mono_s = self.MONO_START_S
        self.now_s = epoch_start_s

    def time(self) -> float:
        return self.now_s

    def monotonic(self) -> float:
        return self.mono_s

    def advance_to(self, mono_s: float) -> None:
        """Move to ``mono_s`` seconds after the start; a time in the past is ignored."""
        if mono_s > self.mono_s:
            self.mono_s = mono_s
            self.now_s = self.epoch_start_s + (mono_s - self.MONO_START_S)


WALL = WallClock()
_current: Clock = WALL

#: Epoch seconds of the current clock (rebound by :func:`install`).
time: Callable[[], float] = _time.time
#: Never-decreasing seconds of the current clock (rebound by :func:`install`).
monotonic: Callable[[], float] = _time.monotonic


def current() -> Clock:
    """The clock installed now (:data:`WALL` unless a backtest runs)."""
    return _current


def now_jst() -> datetime:
    """The current clock's time as an aware JST datetime."""
    return datetime.fromtimestamp(time(), _JST)


@contextlib.contextmanager
def install(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the process's clock for the ``with`` block, then put the previous one back."""
    global _current, time, monotonic
    saved = _current, time, monotonic
    _current, time, monotonic = clock, clock.time, clock.monotonic
    try:
        yield clock
    finally:
        _current, time, monotonic = saved
