"""Discord webhook posting: charts as multipart attachments plus a compact text table.

:class:`DiscordWebhook` is one webhook URL: it never raises, retries 5xx / timeouts with backoff,
waits out HTTP 429 as Discord asks, and logs only a redacted URL (the token in a webhook URL is a
credential: anyone holding it can post to the channel).

:class:`DiscordReporter` (position server) and :class:`BotChartReporter` (one bot, its own
webhook) post every N minutes from a background task; rendering runs in an executor and a slow
webhook only delays its own post, never the caller's loop or the next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby, zip_longest
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson

from bfsx.aio import backoff_delay
from bfsx.bitflyer.timestamps import JST
from bfsx.reporting.charts import (
    base_unit,
    format_jpy,
    format_size,
    render_account_chart,
    render_bot_chart,
    render_market_chart,
    render_pnl_bitflyer,
)
from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

__all__ = [
    "BotChartReporter",
    "DiscordReporter",
    "DiscordWebhook",
    "ReportSettings",
    "format_bot_text",
    "redact_webhook_url",
    "split_message",
]

log = logging.getLogger("bfsx.posserver.discord")  # name kept: log lines unchanged by the move

MESSAGE_LIMIT: Final = 2000  # Discord rejects longer ``content``
FILES_PER_MESSAGE: Final = 10  # Discord's attachment count limit per message
_WEBHOOK_PATH = re.compile(r"^(?P<prefix>/api(?:/v\d+)?/webhooks/)(?P<id>[^/]+)(?:/|$)")

FileList = Sequence[tuple[str, bytes]]


# --------------------------------------------------------------------------- text helpers


def redact_webhook_url(url: str) -> str:
    """``https://discord.com/api/webhooks/123/SECRET`` → ``https://discord.com/api/webhooks/123/…``.

    Anything that does not look like a webhook URL keeps only its scheme and host.
    """
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]  # never echo user:password either
    except ValueError:
        return "<invalid webhook url>"
    match = _WEBHOOK_PATH.match(parts.path)
    if match:
        return f"{parts.scheme}://{host}{match['prefix']}{match['id']}/…"
    return f"{parts.scheme}://{host}/…"


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into Discord-sized messages on line boundaries.

    A ``` code block cut in two is closed at the end of one message and reopened at the start of
    the next, so a table stays monospace. A single line longer than the limit is hard-cut.
    """
    if len(text) <= limit:
        return [text] if text else []
    closing = "\n```"
    width = max(1, limit - 32)  # room for a reopened fence line and the closing fence
    chunks: list[str] = []
    lines: list[str] = []
    fence: str | None = None  # the opening ``` line of the block open at the end of ``lines``
    for raw in text.split("\n"):
        for line in [raw[i : i + width] for i in range(0, len(raw), width)] or [""]:
            after = (
                (None if fence is not None else line.strip()) if line.lstrip().startswith("```") else fence
            )
            candidate = "\n".join([*lines, line]) + (closing if after is not None else "")
            if len(candidate) > limit and lines != ([fence] if fence is not None else []):
                chunks.append("\n".join(lines) + (closing if fence is not None else ""))
                lines = [fence] if fence is not None else []
            lines.append(line)
            fence = after
    if lines:
        chunks.append("\n".join(lines))
    return chunks


def format_bot_text(bots: Iterable[BotSample]) -> str:
    """A compact monospace table of the bots (one code block) with a total per market.

    ``bot  market  position  PnL(JPY)  API`` — short enough to read in Discord on a phone.
    """
    rows = sorted(bots, key=lambda b: (b.market, b.bot))
    if not rows:
        return "```\nno bots\n```"

    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    # One decimal count for the column so the points line up (0.5 and 0.125 → 0.500, 0.125).
    decimals = max(len(format_size(b.position).partition(".")[2]) for b in rows)

    def size(value: float) -> str:
        text = f"{value:+,.{decimals}f}"
        return text[1:] if float(text) == 0 else text

    table: list[tuple[str, str, str, str, str]] = [("bot", "market", "position", "PnL(JPY)", "API")]
    for market, group in groupby(rows, key=lambda b: b.market):
        members = list(group)
        for b in members:
            api = "" if b.api_remaining is None else str(b.api_remaining)
            table.append((cut(b.bot, 18), market, size(b.position), _pnl(b.profit), api))
        if len(members) > 1:
            pos = sum(b.position for b in members)
            table.append(("= total", market, size(pos), _pnl(sum(b.profit for b in members)), ""))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [r[i].rjust(widths[i]) for i in (2, 3, 4)]
        lines.append("  ".join(cells).rstrip())
    return "```\n" + "\n".join(lines) + "\n```"


def _pnl(value: float) -> str:
    return format_jpy(value).removesuffix(" JPY")


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "chart"


# --------------------------------------------------------------------------- webhook


class DiscordWebhook:
    """One Discord webhook. :meth:`post` never raises; it returns whether Discord took it.

    ``max_retries`` is the number of retries after the first attempt (5xx, timeouts, connection
    errors, 429). A 429 waits ``retry_after`` (JSON body, seconds) or the ``Retry-After`` header;
    a wait longer than ``max_retry_after`` gives up instead (the next interval posts anyway).
    Other 4xx (a deleted webhook, a bad payload) are not retried.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        session: aiohttp.ClientSession | None = None,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        username: str | None = None,
    ) -> None:
        self._url = url
        self.redacted_url = redact_webhook_url(url)
        self._secret = url.rstrip("/").rsplit("/", 1)[-1] if _WEBHOOK_PATH.match(urlsplit(url).path) else url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_retries = max(0, max_retries)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._username = username
        self._session = session
        self._own_session = session is None
        self._closed = False

    async def close(self) -> None:
        """Close the HTTP session if this webhook created it."""
        self._closed = True
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> DiscordWebhook:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def post(self, content: str | None = None, files: FileList = ()) -> bool:
        """Post ``content`` (split at 2000 characters) and ``files`` (``(filename, bytes)``).

        More than 10 files or a long text become several messages, in order. Returns True when
        every message was accepted; on failure logs one line (redacted URL) and returns False.
        """
        try:
            for text, batch in self._messages(content, files):
                if not await self._send(text, batch):
                    return False
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the contract is "never raises": a reporter must not kill its caller
            log.warning("Discord webhook %s: post failed: %s", self.redacted_url, self._scrub(repr(exc)))
            return False

    @staticmethod
    def _messages(content: str | None, files: FileList) -> list[tuple[str | None, FileList]]:
        texts: list[str] = split_message(content) if content else []
        batches = [files[i : i + FILES_PER_MESSAGE] for i in range(0, len(files), FILES_PER_MESSAGE)]
        return [(t, b or ()) for t, b in zip_longest(texts, batches)]

    def _form(self, content: str | None, files: FileList) -> aiohttp.FormData:
        payload: dict[str, Any] = {
            # Bot names and text are data, not mentions: never ping @everyone from a report.
            "allowed_mentions": {"parse": []},
            "attachments": [{"id": i, "filename": name} for i, (name, _data) in enumerate(files)],
        }
        if content:
            payload["content"] = content
        if self._username:
            payload["username"] = self._username
        form = aiohttp.FormData()
        form.add_field("payload_json", orjson.dumps(payload).decode(), content_type="application/json")
        for i, (name, data) in enumerate(files):
            kind = "image/png" if name.lower().endswith(".png") else "application/octet-stream"
            form.add_field(f"files[{i}]", data, filename=name, content_type=kind)
        return form

    async def _send(self, content: str | None, files: FileList) -> bool:
        if self._closed:
            log.debug("Discord webhook %s: closed; not posting", self.redacted_url)
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession()
        session = self._session
        reason = ""
        attempts = self._max_retries + 1
        for attempt in range(attempts):
            delay = backoff_delay(attempt, self._backoff, self._max_backoff, jitter=False)
            try:
                async with session.post(
                    self._url, data=self._form(content, files), timeout=self._timeout
                ) as resp:
                    if resp.status < 300:
                        return True
                    body = await resp.read()
                    if resp.status == 429:
                        delay = _retry_after(resp.headers, body, fallback=delay)
                        reason = f"rate limited, retry_after {delay:g}s"
                        if delay > self._max_retry_after:
                            break
                    elif resp.status >= 500:
                        reason = f"HTTP {resp.status}"
                    else:
                        text = self._scrub(body[:200].decode("utf-8", "replace"))
                        log.warning("Discord webhook %s: HTTP %d %s", self.redacted_url, resp.status, text)
                        return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
                if str(exc):
                    reason += f": {self._scrub(str(exc))[:200]}"
            if self._closed:
                return False
            if attempt + 1 < attempts:
                log.debug("Discord webhook %s: %s; retry in %.1fs", self.redacted_url, reason, delay)
                await asyncio.sleep(delay)
        log.warning(
            "Discord webhook %s: giving up after %d attempt(s) (%s)", self.redacted_url, attempts, reason
        )
        return False

    def _scrub(self, text: str) -> str:
        """Remove the URL and its token from text that may echo them (aiohttp error messages do)."""
        text = text.replace(self._url, self.redacted_url)
        return text.replace(self._secret, "…") if self._secret else text


def _retry_after(headers: Mapping[str, str], body: bytes, *, fallback: float) -> float:
    """Seconds Discord wants us to wait: JSON ``retry_after`` first, then the HTTP headers."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        value = float(orjson.loads(body)["retry_after"])
        if math.isfinite(value) and value >= 0:
            return value
    for name in ("Retry-After", "X-RateLimit-Reset-After"):
        with contextlib.suppress(ValueError, TypeError):
            value = float(headers.get(name, ""))
            if math.isfinite(value) and value >= 0:
                return value
    return fallback


# --------------------------------------------------------------------------- periodic posting


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The live-reloadable reporting keys of trade.yaml, in their own units.

    The keys are documented in docs/config.md#position-server.
    """

    webhook_url: str = field(default="", repr=False)  # pos_server_discord; "" = off. A secret.
    interval_minutes: float = 60.0  # pos_server_discord_interval (may be fractional)
    period_hours: float = 6.0  # pos_server_graph_period
    send_text: bool = False  # pos_server_discord_send_text
    bitflyer_color: bool = False  # pos_server_bitflyer_color

    @classmethod
    def from_config(cls, config: Any) -> ReportSettings:
        """The position server's settings from a ``TradeConfig`` (missing keys keep defaults)."""
        d = cls()
        return cls(
            webhook_url=_clear(getattr(config, "pos_server_discord", d.webhook_url)),
            interval_minutes=float(getattr(config, "pos_server_discord_interval", d.interval_minutes)),
            period_hours=float(getattr(config, "pos_server_graph_period", d.period_hours)),
            send_text=bool(getattr(config, "pos_server_discord_send_text", d.send_text)),
            bitflyer_color=bool(getattr(config, "pos_server_bitflyer_color", d.bitflyer_color)),
        )

    @classmethod
    def from_strategy_config(cls, config: Any) -> ReportSettings:
        """A bot's own chart settings from its ``StrategyConfig``: ``discord_webhook``,
        ``discord_interval`` (minutes), ``discord_graph_period`` (hours); the one-row text is on."""
        d = cls()
        return cls(
            webhook_url=_clear(getattr(config, "discord_webhook", d.webhook_url)),
            interval_minutes=float(getattr(config, "discord_interval", d.interval_minutes)),
            period_hours=float(getattr(config, "discord_graph_period", d.period_hours)),
            send_text=True,
        )

    @property
    def interval_seconds(self) -> float:
        return max(self.interval_minutes * 60.0, 0.05)


def _clear(value: Any) -> str:
    """A config value in clear text: the webhook URL is a pydantic ``SecretStr`` in the configs."""
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value or "").strip()


Report = tuple[str | None, list[tuple[str, bytes]]]


class _PeriodicPoster:
    """Schedules :meth:`_compose` + post every interval in a background task (one post at a time)."""

    def __init__(
        self,
        settings: ReportSettings,
        *,
        executor: Executor | None,
        webhook_factory: Callable[[str], DiscordWebhook] | None,
    ) -> None:
        self._settings = settings
        self._executor = executor
        self._factory = webhook_factory or DiscordWebhook
        self._webhook: DiscordWebhook | None = (
            self._factory(settings.webhook_url) if settings.webhook_url else None
        )
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self.posts_ok = 0
        self.posts_failed = 0
        self.posts_skipped = 0  # an interval came while the previous post was still running

    @property
    def settings(self) -> ReportSettings:
        return self._settings

    def update(self, settings: ReportSettings) -> None:
        """Apply new settings live (config reload); a new interval counts from the last post."""
        if settings == self._settings:
            return
        if settings.webhook_url != self._settings.webhook_url:
            if self._inflight is not None:
                self._inflight.cancel()  # a post to the old URL is no longer wanted
            old, self._webhook = (
                self._webhook,
                (self._factory(settings.webhook_url) if settings.webhook_url else None),
            )
            if old is not None:
                task = asyncio.get_running_loop().create_task(old.close())
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        self._settings = settings
        self._changed.set()

    def start(self) -> None:
        """Start the schedule (first post one interval from now). Call from the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=type(self).__name__)

    async def close(self) -> None:
        """Stop the schedule, cancel a post in flight and close the webhook session."""
        for task in (self._task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._inflight = None
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
        if self._webhook is not None:
            await self._webhook.close()

    async def post_now(self) -> bool:
        """Compose and post once, now. False when off, when there is nothing to post, or on failure."""
        webhook = self._webhook
        if webhook is None:
            return False
        try:
            report = await self._compose()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: could not build the report", type(self).__name__)
            self.posts_failed += 1
            return False
        if report is None:
            return False
        ok = await webhook.post(*report)
        if ok:
            self.posts_ok += 1
        else:
            self.posts_failed += 1
        return ok

    async def _compose(self) -> Report | None:
        raise NotImplementedError

    async def _render(self, jobs: Sequence[tuple[str, Callable[[], bytes]]]) -> list[tuple[str, bytes]]:
        """Render every chart in one executor call: the loop only waits, it never draws."""

        def run() -> list[tuple[str, bytes]]:
            return [(name, job()) for name, job in jobs]

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            due = last + self._settings.interval_seconds
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation at close.
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._changed.wait()
                self._changed.clear()
                continue  # settings changed: recompute the due time from the same ``last``
            except TimeoutError:
                pass
            last = max(due, time.monotonic() - self._settings.interval_seconds)
            if self._webhook is None:
                continue
            if self._inflight is not None and not self._inflight.done():
                self.posts_skipped += 1
                log.info("%s: previous post still running; skipping this interval", type(self).__name__)
                continue
            self._inflight = asyncio.get_running_loop().create_task(self.post_now())


MarketHistory = Callable[
    [float], Mapping[str, Sequence[MarketSample]] | Awaitable[Mapping[str, Sequence[MarketSample]]]
]
BotSnapshot = Callable[[], Sequence[BotSample] | Awaitable[Sequence[BotSample]]]
AccountHistory = Callable[[float], Sequence[AccountSample] | Awaitable[Sequence[AccountSample]]]
Thresholds = Callable[[], Sequence[tuple[str, float]]]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class DiscordReporter(_PeriodicPoster):
    """The position server's periodic report.

    ``market_history(since_ts)`` returns ``{market: samples}`` for the chart period, oldest first,
    ideally including the last sample before ``since_ts`` (carried into the chart's left edge);
    ``bot_samples()`` returns the latest sample of every live bot. Either may be sync or async.
    Posts one chart per market, the bitFlyer-style total PnL chart when ``bitflyer_color``, the
    account's margin chart when ``account_history(since_ts)`` has samples (``account_thresholds()``
    names the keep-rate lines to draw), and the per-bot table when ``send_text``.
    """

    def __init__(
        self,
        settings: ReportSettings,
        market_history: MarketHistory,
        bot_samples: BotSnapshot,
        *,
        executor: Executor | None = None,
        webhook_factory: Callable[[str], DiscordWebhook] | None = None,
        clock: Callable[[], float] = time.time,
        account_history: AccountHistory | None = None,
        account_thresholds: Thresholds | None = None,
    ) -> None:
        super().__init__(settings, executor=executor, webhook_factory=webhook_factory)
        self._account_history = account_history
        self._account_thresholds = account_thresholds
        self._market_history = market_history
        self._bot_samples = bot_samples
        self._clock = clock

    async def render_files(self, now: float | None = None) -> list[tuple[str, bytes]]:
        """The PNGs of one report as ``(filename, bytes)`` (also what ``bfsx demo`` writes to disk)."""
        return (await self._report(now))[1]

    async def _compose(self) -> Report | None:
        text, files = await self._report(None)
        return (text, files) if files else None

    async def _report(self, now: float | None) -> tuple[str, list[tuple[str, bytes]]]:
        s = self._settings
        at = self._clock() if now is None else now
        history: Mapping[str, Sequence[MarketSample]] = await _maybe_await(
            self._market_history(at - s.period_hours * 3600.0)
        )
        history = {m: list(v) for m, v in history.items() if v}
        jobs: list[tuple[str, Callable[[], bytes]]] = [
            (f"{_safe_filename(market)}.png", _bind_market(market, samples, s.period_hours, at))
            for market, samples in sorted(history.items())
        ]
        if s.bitflyer_color and history:
            jobs.append(("pnl_total.png", _bind_total(history, s.period_hours, at)))
        account: list[AccountSample] = []
        if self._account_history is not None:
            account = list(await _maybe_await(self._account_history(at - s.period_hours * 3600.0)))
        if account:
            lines_of = list(self._account_thresholds()) if self._account_thresholds else []
            jobs.append(("account.png", _bind_account(account, s.period_hours, at, lines_of)))
        files = await self._render(jobs) if jobs else []
        total = sum(samples[-1].profit for samples in history.values())
        lines = [
            f"**bfsx** {datetime.fromtimestamp(at, JST):%m/%d %H:%M} JST · total PnL **{format_jpy(total)}**"
        ]
        # One line per market: what a phone notification shows before the images load.
        for market, samples in sorted(history.items()):
            last = samples[-1]
            line = f"{market}: {format_size(last.position, base_unit(market))} · {format_jpy(last.profit)}"
            if last.exchange_position is not None and abs(last.exchange_position - last.position) > 1e-9:
                line += f" · exchange {format_size(last.exchange_position)}"
            lines.append(line)
        if account:
            a = account[-1]
            keep = "-" if a.keep_rate is None else f"{a.keep_rate:.0%}"
            today = "?" if a.pnl_today is None else format_jpy(a.pnl_today)
            lines.append(f"account: keep rate {keep} · collateral {format_jpy(a.collateral, signed=False)} · "
                         f"PnL today {today} (Σ bots {format_jpy(a.bots_pnl)})")
        text = "\n".join(lines)
        if s.send_text:
            bots: Sequence[BotSample] = await _maybe_await(self._bot_samples())
            text += "\n" + format_bot_text(bots)
        return text, files


def _bind_market(
    market: str, samples: Sequence[MarketSample], hours: float, now: float
) -> Callable[[], bytes]:
    return lambda: render_market_chart(market, samples, hours, now)


def _bind_account(
    samples: Sequence[AccountSample], hours: float, now: float, thresholds: Sequence[tuple[str, float]]
) -> Callable[[], bytes]:
    return lambda: render_account_chart(samples, hours, now, thresholds)


def _bind_total(
    history: Mapping[str, Sequence[MarketSample]], hours: float, now: float
) -> Callable[[], bytes]:
    return lambda: render_pnl_bitflyer(history, hours, now)


class BotChartReporter(_PeriodicPoster):
    """One bot posting its own position / PnL chart to its own webhook, as BFS-X bots did.

    The bot calls :meth:`record` with a :class:`BotSample` (e.g. at every heartbeat); the history
    is bounded by ``maxlen`` and by the chart period. ``settings.send_text`` adds the one-row table.
    """

    def __init__(
        self,
        bot: str,
        settings: ReportSettings,
        *,
        maxlen: int = 20_000,
        executor: Executor | None = None,
        webhook_factory: Callable[[str], DiscordWebhook] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, executor=executor, webhook_factory=webhook_factory)
        self.bot = bot
        self._history: deque[BotSample] = deque(maxlen=maxlen)
        self._clock = clock

    def record(self, sample: BotSample) -> None:
        """Remember one sample (cheap; drops samples older than the chart period)."""
        if sample.bot != self.bot:
            sample = replace(sample, bot=self.bot)
        self._history.append(sample)
        horizon = sample.ts - self._settings.period_hours * 3600.0
        # Keep one sample older than the window: it is the chart's value at the left edge.
        while len(self._history) > 1 and self._history[1].ts < horizon:
            self._history.popleft()

    @property
    def history(self) -> list[BotSample]:
        return list(self._history)

    async def _compose(self) -> Report | None:
        if not self._history:
            return None
        samples = list(self._history)
        now = self._clock()
        hours = self._settings.period_hours
        files = await self._render(
            [(f"{_safe_filename(self.bot)}.png", lambda: render_bot_chart(self.bot, samples, hours, now))]
        )
        last = samples[-1]
        text = f"**{self.bot}** {datetime.fromtimestamp(now, JST):%m/%d %H:%M} JST · PnL **{format_jpy(last.profit)}**"
        if self._settings.send_text:
            text += "\n" + format_bot_text([last])
        return text, files
