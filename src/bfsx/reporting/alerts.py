"""Short event messages ("alerts") to a Discord webhook: never blocking, bounded, rate-limited.

:class:`Alerts` owns one webhook's alert queue. :meth:`Alerts.emit` is synchronous and O(1): it
only appends to a bounded queue (the oldest message is dropped and counted when it is full), so a
caller on the event loop never waits for the network. A background task posts the queue in order;
when the webhook fails it backs off (:func:`bfsx.aio.backoff_delay`) and keeps the message, so a
dead webhook costs memory bounded by ``max_queue`` and no loop time.

Each kind is rate-limited: at most one message per ``per_kind_interval_s``; what comes meanwhile
is counted, and when the window ends one summary says how many were suppressed and shows the
latest. The webhook URL is a credential: only :func:`bfsx.logs.mask_url`'s form is ever logged.
It loads neither matplotlib nor pillow: alerts cost a bot or the server nothing but aiohttp.

Used by the position server (``pos_server_discord``, kinds chosen by ``pos_server_alerts``) and by
bots (their strategy's ``discord_webhook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson

from bfsx.aio import backoff_delay
from bfsx.logs import mask_url

__all__ = ["ALERT_KINDS", "BOT_ALERT_KINDS", "DEFAULT_ALERT_KINDS", "Alerts"]

log = logging.getLogger("bfsx.alerts")

#: Every kind of alert, with what it means (docs/config.md#margin-and-alerts lists them for users).
ALERT_KINDS: Final[dict[str, str]] = {
    "correction": "the position server sent a correcting order",
    "correction_failed": "a correcting order failed or was refused",
    "freeze": "a market was frozen (a correction would add exposure)",
    "self_trade": "a correction would trade with the account's own orders: the market's bots step aside",
    "eviction": "a bot was evicted (not after a clean, flat stop)",
    "bot_died": "a bot went silent, without a last report, while holding a position",
    "duplicate": "two live senders claim one bot id",
    "over_limit": "the exchange answered -1 (over an API limit): orders pause",
    "health_stop": "the exchange's health is STOP / NO ORDER on a market",
    "keep_rate_warn": "the keep rate fell below pos_server_keep_rate_warn",
    "keep_rate_close_only": "the keep rate fell below pos_server_keep_rate_close_only (or recovered)",
    "daily_loss": "today's account loss exceeds pos_server_max_daily_loss",
    "loss_cut": "the exchange loss-cut the account (or is about to)",
    "margin_unknown": "the collateral could not be read for a while",
    "kill_switch": "an operator command (bfsx ctl)",
    "reconnect_storm": "a bot's realtime connection keeps reconnecting",
}
#: What the position server posts unless ``pos_server_alerts`` says otherwise: everything an
#: operator may have to act on. A successful correction is routine healing (shown in the console
#: and the charts), so it is left out.
DEFAULT_ALERT_KINDS: Final[frozenset[str]] = frozenset(ALERT_KINDS) - {"correction"}
#: What a bot posts to its strategy's webhook.
BOT_ALERT_KINDS: Final[frozenset[str]] = frozenset({"over_limit", "health_stop", "reconnect_storm"})

_TEXT_LIMIT: Final = 1900  # Discord takes 2000 characters of content: room for the prefix


@dataclass(slots=True)
class _Pending:
    kind: str
    text: str
    attempts: int = 0


@dataclass(slots=True)
class _Window:
    opened_m: float  # monotonic: the last admitted message of the kind
    suppressed: int = 0
    latest: str = ""


class Alerts:
    """One webhook's alerts. ``emit`` from the loop; ``start`` once a loop runs; ``await close()``.

    ``kinds``: the kinds posted (others are counted in ``filtered`` and not sent); ``None``: all.
    ``per_kind_interval_s``: the shortest time between two messages of one kind. ``max_queue``:
    messages waiting at most (the oldest dropped beyond). ``max_attempts``: posts of one message
    before it is given up (a webhook that answers 4xx forever must not hold the queue).
    """

    def __init__(
        self,
        url: str,
        *,
        source: str = "bfsx",
        kinds: Iterable[str] | None = None,
        per_kind_interval_s: float = 60.0,
        max_queue: int = 100,
        timeout_s: float = 10.0,
        backoff_first_s: float = 1.0,
        backoff_max_s: float = 300.0,
        max_attempts: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.redacted_url = mask_url(url)
        self.source = source
        self.kinds: frozenset[str] | None = frozenset(kinds) if kinds is not None else None
        self.per_kind_interval_s = per_kind_interval_s
        self.timeout_s = timeout_s
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self.max_attempts = max(1, max_attempts)
        self._clock = clock
        self._queue: deque[_Pending] = deque(maxlen=max(1, max_queue))
        self._windows: dict[str, _Window] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self.sent = 0
        self.failed = 0  # failed post attempts
        self.given_up = 0  # messages dropped after max_attempts
        self.dropped = 0  # messages dropped because the queue was full
        self.filtered = 0  # kinds not selected
        self.suppressed: dict[str, int] = {}  # by kind, since the start

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ the loop's side
    def emit(self, kind: str, text: str) -> None:
        """Queue one alert (never blocks, never raises on the text). Within ``per_kind_interval_s``
        of the last message of ``kind`` it is counted instead, and summarized when the window ends."""
        if self.kinds is not None and kind not in self.kinds:
            self.filtered += 1
            return
        now = self._clock()
        w = self._windows.get(kind)
        if w is not None and now - w.opened_m < self.per_kind_interval_s:
            w.suppressed += 1
            w.latest = text
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            self._wake.set()  # the sender schedules the summary
            return
        self._windows[kind] = _Window(now)
        self._push(_Pending(kind, text))

    def _push(self, item: _Pending) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        self._queue.append(item)
        self._wake.set()

    def start(self) -> None:
        """Start the sender task (call from the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bfsx-alerts")

    async def close(self, flush_s: float = 2.0) -> None:
        """Post what is queued for up to ``flush_s`` seconds, then stop and close the session."""
        if self._task is not None:
            if self._queue and flush_s > 0 and not self._failing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(flush_s):
                        while self._queue and not self._failing and not self._task.done():
                            await asyncio.sleep(0.02)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ the sender
    def _summaries_due(self, now: float) -> float | None:
        """Queue the summary of every window that ended with suppressed messages; returns the
        seconds until the next window with suppressed messages ends (None: none is open)."""
        nearest: float | None = None
        for kind, w in self._windows.items():
            if not w.suppressed:
                continue
            left = w.opened_m + self.per_kind_interval_s - now
            if left <= 0:
                text = (f"{w.suppressed} more suppressed in the last {self.per_kind_interval_s:g} s; "
                        f"latest: {w.latest}")
                self._windows[kind] = _Window(now)
                self._push(_Pending(kind, text))
            elif nearest is None or left < nearest:
                nearest = left
        return nearest

    async def _run(self) -> None:
        while True:
            wait = self._summaries_due(self._clock())
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            item = self._queue[0]
            ok = await self._post(item)
            if ok:
                self.sent += 1
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
                if self._failing:
                    self._failing = False
                    log.info("alerts webhook %s works again", self.redacted_url)
                continue
            self.failed += 1
            item.attempts += 1
            if item.attempts >= self.max_attempts:
                self.given_up += 1
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
            delay = backoff_delay(min(item.attempts - 1, 30), self.backoff_first_s, self.backoff_max_s)
            await asyncio.sleep(delay)

    def _content(self, item: _Pending) -> str:
        text = " ".join(item.text.split())  # one line: a network-borne id cannot fake a second alert
        if len(text) > _TEXT_LIMIT:
            text = text[: _TEXT_LIMIT - 1] + "…"
        return f"**{self.source}** `{item.kind}`: {text}"

    async def _post(self, item: _Pending) -> bool:
        """One attempt; False on any failure (logged once per failing streak, URL redacted)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        # Names and ids are data, never mentions: no @everyone from an alert.
        body = orjson.dumps({"content": self._content(item), "allowed_mentions": {"parse": []}})
        reason = ""
        try:
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                if resp.status < 300:
                    return True
                reason = f"HTTP {resp.status}"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = type(exc).__name__  # never str(exc): aiohttp's messages echo the URL
        if not self._failing:
            self._failing = True
            log.warning("alerts webhook %s failed (%s): retrying with backoff, %d queued (logged once until it "
                        "works again)", self.redacted_url, reason, len(self._queue))
        return False
