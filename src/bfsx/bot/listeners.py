"""How strategy callbacks are called: :class:`Listener` (plain or ``async def``, never a queue of
tasks) and :func:`call_maybe_async`.

Owns nothing but each callback's "running" flag and its latest pending argument.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

Callback = Callable[..., Awaitable[None] | None]


class Listener:
    """Calls a strategy callback; an async one runs as a task, at most one at a time per callback.

    While it runs, newer events only remember the latest argument (bounded: never a queue of tasks)
    and the callback runs once more with it when the current call ends.
    """

    __slots__ = ("_cb", "_is_async", "_log", "_pending", "_running", "_tasks")

    def __init__(self, cb: Callback, log: logging.Logger, tasks: set[asyncio.Task[None]]) -> None:
        self._cb = cb
        self._is_async = inspect.iscoroutinefunction(cb)
        self._log = log
        self._running = False
        self._pending: tuple[Any, ...] | None = None
        self._tasks = tasks

    def __call__(self, *args: Any) -> None:
        if not self._is_async:
            try:
                self._cb(*args)
            except Exception:
                self._log.exception("strategy callback %s failed", getattr(self._cb, "__name__", self._cb))
            return
        if self._running:
            self._pending = args
            return
        self._running = True
        task = asyncio.get_running_loop().create_task(self._run(args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, args: tuple[Any, ...]) -> None:
        try:
            while True:
                try:
                    await self._cb(*args)  # type: ignore[misc]
                except Exception:
                    self._log.exception("strategy callback %s failed", getattr(self._cb, "__name__", self._cb))
                if self._pending is None:
                    return
                args, self._pending = self._pending, None
        finally:
            self._running = False


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plain or ``async def`` function and return its result."""
    result: Any = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result

