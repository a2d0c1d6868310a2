"""Hot reload: :class:`ConfigWatcher` polls one file and applies a valid edit, keeping the current
config on an invalid one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

from bfsx.config.base import (
    log,
)
from bfsx.errors import UserError

# ------------------------------------------------------------------------------------ hot reload
T = TypeVar("T")


class ConfigWatcher(Generic[T]):
    """Reload a config file when it changes (polls mtime, size and inode every ``interval`` s).

    On a valid edit ``on_change(new)`` is called (plain or async); on an invalid one a single
    warning with the :class:`ConfigError` text is logged and the previous config stays current.
    Touching a file without changing its content calls nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        loader: Callable[[Path], T],
        on_change: Callable[[T], Awaitable[None] | None],
        *,
        interval: float = 1.0,
        current: T | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self.current = current
        self.reloads = 0
        self.rejected = 0
        self._loader = loader
        self._on_change = on_change
        self._log = logger or log
        self._task: asyncio.Task[None] | None = None
        # Taken now, right after the caller loaded the file, so an edit made before start() counts.
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def start(self) -> None:
        """Start polling on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch {self.path}")

    def stop(self) -> None:
        """Stop polling (safe to call twice, or from a signal handler)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Poll once; True when a new config was applied."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            self._log.warning("%s: file not found; keeping the current config", self.path)
            return False
        try:
            new = await asyncio.to_thread(self._loader, self.path)
        except UserError as e:
            self.rejected += 1
            self._log.warning("%s (not reloaded: keeping the current config)", e)
            return False
        except Exception as e:  # a loader bug must not kill the watcher
            self.rejected += 1
            self._log.warning("%s: reload failed: %s: %s (keeping the current config)", self.path, type(e).__name__, e)
            return False
        if self.current is not None and new == self.current:
            return False
        self.current = new
        self.reloads += 1
        try:
            result = self._on_change(new)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("%s: applying the reloaded config failed", self.path)
        return True
