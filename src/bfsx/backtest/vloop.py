"""The virtual-time event loop a backtest runs the bot runtime on.

Owns :class:`VirtualLoop`: an ordinary asyncio selector loop whose ``time()`` is a
:class:`~bfsx.clock.VirtualClock` and whose selector never waits. When the loop would sleep until
its next timer, the clock jumps to that timer instead. Every ``asyncio.sleep``, ``call_later``,
``asyncio.timeout`` and ``wait_for`` of the unchanged runtime therefore runs in replay time, as
fast as the CPU allows, in exactly the order it would run live. Market events are timers too
(``call_at`` chains of :mod:`bfsx.backtest.market`), so nothing here knows about markets.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import TypeVarTuple, Unpack

from bfsx.clock import VirtualClock

_Ts = TypeVarTuple("_Ts")


class BacktestStalled(RuntimeError):
    """Nothing is ready and nothing is scheduled: the run can never go on (a strategy waits forever)."""


class _JumpingSelector(selectors.DefaultSelector):
    """A selector whose ``select(timeout)`` moves the clock by ``timeout`` instead of waiting.

    The loop's own self-pipe stays registered (asyncio needs it), but it is never polled: no
    thread or signal wakes a backtest, and not polling saves a system call per loop turn.
    """

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise BacktestStalled("backtest stalled: no timer and nothing ready (a callback awaits forever?)")
        if timeout > 0:
            self._clock.advance_to(self._clock.mono_s + timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a :class:`VirtualClock` (``loop.time()`` is ``clock.monotonic()``)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_JumpingSelector(clock))
        self.clock = clock
        # Timers due within this much of "now" run in this turn. The virtual monotonic time stays
        # small (seconds since the replay's start), where float steps are ~1e-10 s.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.mono_s

    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts) -> None:
        # A backtest is stopped by its data ending (or by KeyboardInterrupt from the process's
        # default handler), never through the self-pipe, which this loop does not poll.
        raise NotImplementedError("signals are not handled in a backtest loop")
