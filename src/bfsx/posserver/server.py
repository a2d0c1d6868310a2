"""The position server: one source of truth for the account's total position.

User guide: README.md#the-position-server; wire format: docs/protocol.md.

Bots report their absolute position by UDP; the server keeps the latest report of every bot
(:class:`~bfsx.posserver.registry.Registry`) and, every ``pos_server_check_interval``, compares per
market ``Σ bots + base_position`` with the exchange. A :class:`~bfsx.account.drift.DriftCheck` per
market decides when a difference is real; the server then sends a correcting MARKET order capped by
``adjust_max_size``. It never judges on data it does not have (API error, timeout), while the
exchange is not trading (health STOP / NO ORDER, board not RUNNING), while a bot's position moved in
the last seconds, while a bot id is claimed by two live senders, or — right after its own start —
before every live bot had a chance to report.

It acts only on valid input (invariant 10): the decoder and the registry refuse unknown or
non-canonical markets, unbounded numbers, a second live sender per bot id and a third market per
bot; a market no live bot reports retires; each market's check runs isolated (an error is logged
once and never stops the other markets, the history or the console); and no order leaves unless
its size is finite and within a finite ``adjust_max_size``.

TCP serves the account-wide API budget (all bots' readings combined) and a status query.
Everything mutable lives on the one event loop; SQLite, charts and InfluxDB run off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bfsx import aio
from bfsx.account.drift import Correction, DriftCheck, run_drift_loop
from bfsx.bitflyer.budget import ApiBudget, BudgetSnapshot
from bfsx.bitflyer.errors import SELF_TRADE, ApiError, BitflyerError
from bfsx.bitflyer.products import PRODUCTS, get_product
from bfsx.bitflyer.rest import RestClient
from bfsx.bitflyer.states import health_rank
from bfsx.config import (
    ConfigError,
    ConfigWatcher,
    TradeConfig,
    changed_keys,
    load_trade_config,
)
from bfsx.net import is_loopback
from bfsx.posserver import protocol as p
from bfsx.posserver.controls import ALL, FLATTEN, FROZEN, OPERATOR, STEP_ASIDE_WAIT_S, Controls
from bfsx.posserver.history import History
from bfsx.posserver.lease_budget import HostBudget
from bfsx.posserver.lease_desk import HEALTH_FEED_INTERVAL_S, LeaseDesk, epoch_base, host_of
from bfsx.posserver.margin import DAILY_LOSS_HOLD, KEEP_RATE_HOLD, MarginWatch
from bfsx.posserver.registry import ZERO, BotState, Registry, dec
from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

log = logging.getLogger("bfsx.posserver")

DEFAULT_PORT = p.DEFAULT_PORT
DEFAULT_HOST = p.DEFAULT_HOST
#: Never judge a market within this many seconds of any bot's position change on it.
MAX_QUIET_SECONDS = 5.0
UDP_RCVBUF = 4 * 1024 * 1024
BAD_LOG_EVERY = 60.0  # seconds between two log lines about bad packets of one reason
#: trade.yaml keys the server applies without a restart (the rest are logged as "needs restart").
LIVE_KEYS = frozenset({  # the InfluxDB target is not live: it needs a restart
    "pos_server_graph_period", "pos_server_discord", "pos_server_discord_interval",
    "pos_server_discord_send_text", "pos_server_bitflyer_color", "pos_server_check_interval",
    "pos_server_consecutive", "pos_server_evict_after", "adjust_max_size", "log_level",
    "pos_server_report_interval", "pos_server_margin_interval", "pos_server_keep_rate_warn",
    "pos_server_keep_rate_close_only", "pos_server_max_daily_loss", "pos_server_alerts", "pos_server_alert_interval", "pos_server_correct_all",
})
#: Keys that mean nothing to the server: never worth a "needs restart" line.
IGNORED_KEYS = frozenset({
    "strategy_py", "strategy_yaml", "bot_name", "log_folder", "console_output", "base_position",
    "adjust_position_with_api", "adjust_position_interval", "adjust_consecutive", "close_on_exit",
    "api_reserve", "over_limit_pause", "trade_health", "health_interval", "ws_silence_timeout",
    "pos_server_query_interval", "ws_endpoint", "pos_server_control_interval",
})
STOP_HEALTH = health_rank("NO ORDER")
PRICE_EVERY = 10.0  # seconds between two ticker requests per market (the price is for charts only)
#: The check loop's pace whatever the config says (see ``PosServer.check_interval_s``).
MIN_CHECK_INTERVAL_S = 0.1
MAX_CHECK_INTERVAL_S = 3600.0
DEFAULT_CHECK_INTERVAL_S = 30.0
#: Seconds from a correction refused as a self trade to the check that sends it again: the bots
#: see their pause within pos_server_control_interval, then cancel over REST.
STEP_ASIDE_RECHECK_S = 2.0
#: Connections from one peer address that have sent no valid query for ``PENDING_GRACE_S``. A real
#: client sends its query right after connecting, so beyond this the address hoards slots: its oldest
#: silent ones are closed when any connection arrives (refusing the newcomer instead would let the
#: hoarder keep every slot it holds). Connections that sent a valid (signed) query are not limited
#: per address: every bot on one host shares it. When all ``max_connections`` are taken, the oldest
#: silent connection of any address makes room.
MAX_PENDING_PER_PEER = 8
#: A connection this young may still be about to speak (a burst of bots starting together).
PENDING_GRACE_S = 1.0
#: A new connection must deliver its first frame within this many seconds.
FIRST_FRAME_TIMEOUT_S = 5.0
#: Distinct senders whose bad packets / refusals are each logged once; beyond, once a minute per reason.
MAX_LOGGED_SENDERS = 1024


@dataclass(slots=True)
class CheckResult:
    """One market at one check (what the console, history and reporters show)."""

    market: str
    total: Decimal
    base: Decimal
    expected: Decimal
    exchange: Decimal | None
    profit: float
    price: float | None
    skip_reason: str
    correction: str = ""


def _default_state_dir(config: TradeConfig) -> Path:
    # log_folder names a bot's folder (./logs/<bot_name> by default): the server's lives beside it.
    return Path(config.log_folder or "./logs/pos_server").parent / "pos_server"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: PosServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class PosServer:
    """The position server. ``await start()``, then ``await wait_closed()`` (or ``run()``)."""

    def __init__(
        self,
        config: TradeConfig,
        *,
        config_path: str | os.PathLike[str] | None = None,
        rest: RestClient | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        chart_dir: str | os.PathLike[str] | None = None,
        console: bool | None = None,
        chart_interval: float | None = None,
        max_age: float = p.DEFAULT_MAX_AGE,
        quiet_seconds: float | None = None,
        startup_grace: float | None = None,
        tcp_timeout: float = 30.0,
        max_connections: int = 256,
        max_bots: int = 1000,
        warn_fast_judging: bool = True,
    ) -> None:
        """``state_dir``: where the SQLite history lives (default ``<log_folder>/../pos_server``).
        ``chart_dir``: also write the PNG charts there every ``chart_interval`` seconds (default
        ``pos_server_discord_interval`` minutes) and at stop. ``quiet_seconds``:
        no judging this long after a position change (default ``min(check_interval, 5)``).
        ``startup_grace``: no judging this long after start (default ``2 × report_interval + 1``).
        ``warn_fast_judging``: ignored (kept for callers): the server no longer races a bot's own
        settle, since it asks every bot to settle before correcting (settle rounds, lease_desk.py)."""
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else config.source
        bind = config.pos_server_bind_address()
        if bind is None:
            bind = (config.pos_server_bind or DEFAULT_HOST, DEFAULT_PORT)
        self.host, self.port = bind
        # Raises (one line) off loopback without a secret of 16 non-blank characters, also for a
        # config built in code: the rule lives in the config, where the bots get the secret too.
        self._secret = config.pos_server_secret_value().encode()
        if not self._secret and not is_loopback(self.host):
            where = self.config_path or "trade.yaml"
            raise ConfigError(f"{where}: refusing to bind {self.host} (not loopback) without 'pos_server_secret'")
        self.own_budget: ApiBudget = HostBudget()  # HostBudget: the server's per-IP usage counts in the leases
        self.rest = rest if rest is not None else RestClient(
            config.endpoint, config.api_key() or None, config.api_secret() or None, budget=self.own_budget)
        if rest is not None:
            self.own_budget = rest.budget
        self.state_dir = Path(state_dir) if state_dir is not None else _default_state_dir(config)
        self.chart_dir = Path(chart_dir) if chart_dir is not None else None
        self.console_enabled = config.console_output if console is None else console
        self.max_age = max_age
        self._quiet_override = quiet_seconds
        self._grace_override = startup_grace
        self.tcp_timeout = tcp_timeout
        self.max_connections = max_connections

        self.registry = Registry(max_bots=max_bots)
        # budget leases, health feed, settle rounds (lease_desk.py); epochs above a former run's
        self.leases = LeaseDesk(first_epoch=epoch_base())
        self.guard = p.ReplayGuard()
        self.sender = p.Sender(self._secret)
        self.history = History(self.state_dir / "history.db", horizon=config.pos_server_graph_period * 3600)
        #: What the bots may do per market, frozen markets, adopted bases (controls.py; `bfsx ctl`).
        self.controls = Controls(self.state_dir)
        #: Per market, the positions evicted bots held (bot → size): a drift they explain is
        #: corrected in either direction (its cause is known); the rest only when it reduces.
        self._orphans: dict[str, dict[str, Decimal]] = {}
        #: How long the bots of a market get to cancel their orders after a correction was refused
        #: as a self trade; refused again after that, the order in the way is not theirs.
        self.step_aside_wait_s = STEP_ASIDE_WAIT_S
        self.step_aside_recheck_s = STEP_ASIDE_RECHECK_S
        self._check_soon = asyncio.Event()  # set: the check loop runs a round now (see _check_again_in)
        self.bad: Counter[str] = Counter({r: 0 for r in p.REASONS})
        self.counters: Counter[str] = Counter(
            {"reports": 0, "corrections": 0, "correction_errors": 0, "evictions": 0, "queries": 0, "full": 0,
             "duplicates": 0, "market_cap": 0, "check_errors": 0, "retired": 0, "corrections_refused": 0,
             "connections_closed": 0, "reopen_refused": 0, "ctl_commands": 0, "ctl_refused": 0,
             "control_queries": 0, "self_trade_steps": 0})
        self.results: dict[str, CheckResult] = {}
        self._drift: dict[str, DriftCheck] = {}
        self._saved_bases: dict[str, Decimal] = {}
        self._bad_logged: dict[str, float] = {}
        self._logged_once: set[tuple[str, ...]] = set()
        self._failing: dict[str, str] = {}  # market → the error its check last failed with (logged once)
        #: Connections that have not yet sent a valid query, oldest first: peer address, since (monotonic).
        self._pending: OrderedDict[asyncio.StreamWriter, tuple[str, float, asyncio.Task[Any]]] = OrderedDict()
        self._prices: dict[str, tuple[float, float | None]] = {}
        self.on_report: Callable[[p.Report, str], None] | None = None  # benches / tools: after each apply
        self.alerts: Any = None  # reporting.alerts.Alerts when pos_server_discord is set
        self.alerts_logged = 0
        #: The account's margin, polled once for the account (margin.py).
        # Late-bound (not self.alert itself): tools and tests that wrap alert() see the margin's too.
        self.margin = MarginWatch(self.rest, lambda: self.config, self.controls,
                                  lambda kind, text: self.alert(kind, text), self.bots_cfd_pnl)
        self.margin.on_sample = self._account_sample
        # The margin holds follow the live readings: recomputed after a restart, never restored.
        self.controls.volatile |= {KEEP_RATE_HOLD, DAILY_LOSS_HOLD}
        self._health_stopped: set[str] = set()  # markets whose STOP / NO ORDER was alerted
        self._over_limit_alerted: dict[str, float] = {}  # bot id ("" = the server) → paused, alerted

        self.started_at = 0.0  # unix
        self._started_m = 0.0  # monotonic
        self.reports_since_start = 0
        self.checks = 0
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: ConfigWatcher[TradeConfig] | None = None
        self._closed = asyncio.Event()
        self._stopping = False
        self._console: Any = None
        self.influx: Any = None  # InfluxWriter when pos_server_discord_influxdb is set
        self.reporter: Any = None  # DiscordReporter (also renders the charts for chart_dir)
        self.chart_interval = chart_interval
        self.charts_written = 0

    # ------------------------------------------------------------------ timing knobs
    @property
    def quiet_seconds(self) -> float:
        if self._quiet_override is not None:
            return self._quiet_override
        return min(self.check_interval_s(), MAX_QUIET_SECONDS)

    @property
    def startup_grace(self) -> float:
        if self._grace_override is not None:
            return self._grace_override
        return 2 * self.config.pos_server_report_interval + 1.0

    @property
    def restart_after(self) -> float:
        """Silence (3 missed heartbeats, at most the eviction time) after which a new boot of a bot id
        from the holder's own host is a restart rather than a second live sender."""
        return min(self.config.pos_server_evict_after, 3 * self.config.pos_server_report_interval)

    @property
    def orphan_grace(self) -> float:
        """How long a market without bots is still checked (and corrected) before it retires: time
        for an evicted bot's position to be judged ``consecutive`` times, twice over."""
        c = self.config
        return max(c.pos_server_evict_after,
                   2 * c.pos_server_consecutive * self.check_interval_s() + self.quiet_seconds)

    def order_cap(self) -> Decimal | None:
        """``adjust_max_size`` as the largest correcting order, or None when it is not a finite
        positive size (a config built in code bypasses the model's checks): then nothing is sent."""
        cap = dec(self.config.adjust_max_size) if isinstance(self.config.adjust_max_size, int | float) else None
        if cap is None or not cap.is_finite() or cap <= 0:
            return None
        return cap

    def _drift_for(self, market: str) -> DriftCheck:
        d = self._drift.get(market)
        if d is None:
            spec = get_product(market)
            d = DriftCheck(
                min_size=spec.min_size if spec is not None else Decimal("0.001"),
                consecutive=self.config.pos_server_consecutive,
                max_order=self.order_cap() or ZERO,  # 0: a drift is judged, never sized into an order
            )
            self._drift[market] = d
        return d

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the history, bind UDP and TCP (same port), start the check loop and the watcher."""
        self.started_at, self._started_m = time.time(), time.monotonic()
        # A captured message still within the freshness window would pass a guard that remembers
        # nothing: refuse everything sent before this start (see ReplayGuard.check).
        self.guard = p.ReplayGuard(not_before=self.started_at)
        await self.history.open()
        self.controls.load(frozenset(PRODUCTS))
        await self._restore()
        await self._bind()
        self._spawn(self._check_loop(), "check")
        self._spawn(self._health_feed_loop(), "health-feed")
        if self.config_path is not None and self.config_path.exists():
            self._watcher = ConfigWatcher(self.config_path, load_trade_config, self._config_changed,
                                          current=self.config, logger=log)
            self._watcher.start()
        self._start_reporting()
        self._start_alerts()
        if self.config.has_credentials:
            self.leases.margin_interval_s = self.margin.interval_s
            self._spawn(self.margin.run(), "margin")
        if self.console_enabled:
            from bfsx.posserver.console import Console

            self._console = Console(self)
            self._console.start()
        if not self.config.has_credentials:
            log.warning("apikey / secret missing: the exchange position is unknown, no drift is ever corrected")
        log.info("position server on %s:%d (UDP reports, TCP budget/status); check every %.3g s, "
                 "%d identical diffs, evict after %.3g s", self.host, self.port,
                 self.config.pos_server_check_interval, self.config.pos_server_consecutive,
                 self.config.pos_server_evict_after)
        self._warn_if_no_cap()

    def _warn_if_no_cap(self) -> None:
        if self.order_cap() is None:
            log.error("adjust_max_size %r is not a finite positive size: no correcting order is ever sent",
                      self.config.adjust_max_size)


    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port or None, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_PASSIVE)
        addrs: list[tuple[int, str]] = []
        for family, _, _, _, sa in infos:
            if (family, sa[0]) not in addrs and family in (socket.AF_INET, socket.AF_INET6):
                addrs.append((family, str(sa[0])))
        if not addrs:
            raise ConfigError(f"pos_server: cannot resolve {self.host!r}")
        if self.port == 0:  # tests: pick a free port on the first address, then use it everywhere
            with socket.socket(addrs[0][0], socket.SOCK_STREAM) as s:
                s.bind((addrs[0][1], 0))
                self.port = s.getsockname()[1]
        try:
            self._tcp = await asyncio.start_server(
                self._on_connection, [a for _, a in addrs], self.port, reuse_address=True, limit=p.MAX_DATAGRAM + 64)
        except OSError as e:
            raise ConfigError(f"pos_server: cannot listen on {self.host}:{self.port} (TCP): {e.strerror or e}") from None
        for fam, addr in addrs:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(addr, self.port), family=fam)
            except OSError as e:
                if not self._udp and (fam, addr) == addrs[-1]:
                    raise ConfigError(f"pos_server: cannot listen on {addr}:{self.port} (UDP): {e.strerror or e}") from None
                log.debug("UDP bind %s:%d failed: %s", addr, self.port, e)
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            self._udp.append(transport)

    async def stop(self) -> None:
        """Stop serving and close everything (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        if self._watcher is not None:
            self._watcher.stop()
        if self._console is not None:
            self._console.stop()
        await self._stop_reporting()
        if self.alerts is not None:
            await self.alerts.close()
        for t in self._udp:
            t.close()
        if self._tcp is not None:
            self._tcp.close()
        tasks = list(self._tasks) + list(self._conns)
        while tasks:  # cancel again if a task swallowed it (a wait_for race on 3.11)
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
        await self.rest.close()
        await self.history.close()
        self._closed.set()
        log.info("position server stopped")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # ------------------------------------------------------------------ alerts
    def alert(self, kind: str, text: str) -> None:
        """Tell the operator about an event: a log line, and a ``pos_server_discord`` message when
        ``kind`` is one ``pos_server_alerts`` selects (rate-limited per kind; never blocks)."""
        self.alerts_logged += 1
        log.warning("ALERT %s: %s", kind, text)
        if self.alerts is not None:
            try:
                self.alerts.emit(kind, text)
            except Exception:  # an alert must never break what raised it
                self._log_once_exception("alert", "queuing an alert failed")

    def _alert_settings(self) -> dict[str, Any]:
        return {"kinds": self.config.pos_server_alerts, "per_kind_interval_s": self.config.pos_server_alert_interval}

    def _start_alerts(self) -> None:
        url = self.config.pos_server_discord_value()
        if not url or self.alerts is not None:
            return
        from bfsx.reporting.alerts import Alerts

        self.alerts = Alerts(url, source="bfsx pos_server", **self._alert_settings())
        self.alerts.start()

    def bots_cfd_pnl(self) -> float:
        """Σ the live bots' PnL today (their reports) on CFD markets: what the collateral shows."""
        total = 0.0
        for b in self.registry.bots.values():
            spec = get_product(b.market)
            if spec is not None and spec.is_fx:
                total += b.profit
        return total

    def _alert_eviction(self, b: BotState) -> None:
        """A bot that stopped flat after saying so is routine (no alert); any other eviction is told:
        a bot gone silent without a last report died (``bot_died`` when it held a position)."""
        after = f"{self.config.pos_server_evict_after:.0f} s"
        if b.final and not b.position:
            return
        if b.final:
            self.alert("eviction", f"bot {b.bot} stopped holding {b.position} on {b.market} and was evicted after "
                                   f"{after}: its position is drift now")
        elif b.position:
            self.alert("bot_died", f"bot {b.bot} went silent for {after} holding {b.position} on {b.market}: evicted, "
                                   "its position is drift now")
        else:
            self.alert("eviction", f"bot {b.bot} went silent for {after} (flat on {b.market}): evicted")

    def _alert_over_limits(self) -> None:
        """One ``over_limit`` alert per -1 pause, the server's own or any bot's (their reports)."""
        now = time.time()
        pauses = {"": self.own_budget.paused_until}
        pauses.update({b.bot: b.budget.paused_until for b in self.registry.bots.values() if b.budget is not None})
        for who, until in pauses.items():
            # One alert per pause: a -1 during a pause extends it, it does not start another.
            if until <= now:
                self._over_limit_alerted.pop(who, None)
            elif who not in self._over_limit_alerted:
                self._over_limit_alerted[who] = until
                name = "the position server" if not who else f"bot {who}"
                self.alert("over_limit", f"{name} got -1 (over an API limit): orders pause for "
                                         f"{until - now:.0f} s")
        for who in [w for w in self._over_limit_alerted if w and w not in self.registry.bots]:
            del self._over_limit_alerted[who]  # bounded by the live bots

    def note(self, text: str) -> None:
        """Show one line to the operator: above the live table when there is one, else on stdout."""
        if self._console is not None:
            self._console.note(text)
        else:
            print(text, flush=True)

    async def run(self) -> int:
        """Start, serve until SIGINT / SIGTERM, stop; 0 on a clean stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
        return 0

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"posserver-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ UDP reports
    def on_datagram(self, data: bytes, addr: Any) -> None:
        """Verify one datagram and apply it; anything wrong is counted and changes nothing."""
        try:
            msg = p.decode(data, self._secret, max_age=self.max_age)
            if not isinstance(msg, p.Report) or msg.header is None:
                raise p.ProtocolError("malformed", "not a report on the UDP port")
            self.guard.check(p.sender_of(msg), msg.header)
        except p.ProtocolError as e:
            self._bad(e, addr)
            return
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        applied = self.registry.apply(msg, where, silent_after=self.config.pos_server_evict_after,
                                      restart_after=self.restart_after)
        if applied == "refused":  # a report built in code with what the decoder refuses off the wire
            self._bad(p.ProtocolError("malformed", f"market {msg.market!r} or a number out of bounds", msg.bot), addr)
            return
        self.counters["reports"] += 1
        self.reports_since_start += 1
        if applied == "new" and self._orphans:
            orphans = self._orphans.get(msg.market)
            if orphans is not None and orphans.pop(msg.bot, None) is not None and not orphans:
                del self._orphans[msg.market]  # it is back: its position is counted again
        if applied == "full":
            self.counters["full"] += 1
            self._log_rate("full", "registry full (%d bots): report of %s ignored", self.registry.max_bots, msg.bot)
        elif applied == "duplicate":
            self.counters["duplicates"] += 1
            boot = msg.header.boot
            holder = self.registry.bots[msg.bot]
            if self._first_time("duplicate", msg.bot, str(boot)):
                log.error("bot id %s is already held by a live sender (boot %d, pid %d, %s): reports of a second "
                          "sender (boot %d, pid %d, %s) are refused until the first is silent for %.3g s (%.3g s from the "
                          "same host); give each bot its own bot_name. Judging of %s is held meanwhile", msg.bot,
                          holder.boot, holder.pid, holder.addr, boot, msg.pid, where,
                          self.config.pos_server_evict_after, self.restart_after, msg.market)
                self.alert("duplicate", f"bot id {msg.bot} is claimed by a second live sender (pid {msg.pid}, "
                                        f"{where}; the holder is pid {holder.pid}): judging of {msg.market} is held")
        elif applied == "market_cap":
            self.counters["market_cap"] += 1
            if self._first_time("market_cap", msg.bot):
                log.warning("bot %s reports %s beyond its %d markets of the last %.3g s: refused (at most %d "
                            "markets per bot; further ones counted, not logged)", msg.bot, msg.market,
                            self.registry.max_markets_per_bot, self.config.pos_server_evict_after,
                            self.registry.max_markets_per_bot)
        if self.on_report is not None:
            self.on_report(msg, applied)

    def _first_time(self, *key: str) -> bool:
        """True the first time ``key`` is seen (bounded: past ``MAX_LOGGED_SENDERS`` keys, once a
        minute per kind instead), so a repeating problem is one log line, not one per datagram."""
        if key in self._logged_once:
            return False
        if len(self._logged_once) >= MAX_LOGGED_SENDERS:
            now = time.monotonic()
            if now - self._bad_logged.get(key[0], -BAD_LOG_EVERY) < BAD_LOG_EVERY:
                return False
            self._bad_logged[key[0]] = now
            return True
        self._logged_once.add(key)
        return True

    def _bad(self, e: p.ProtocolError, addr: Any) -> None:
        self.bad[e.reason] += 1
        # Keyed on the id a signed body claims, else on the peer's address (its port changes).
        sender = f"id {e.sender}" if e.sender is not None else str(addr[0] if isinstance(addr, tuple) else addr)
        if self._first_time("bad", e.reason, sender):
            log.warning("bad packet from %s (%s): %s (further ones from this sender are counted, not logged)",
                        addr, sender, e)

    def _log_rate(self, key: str, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._bad_logged.get(key, -BAD_LOG_EVERY) >= BAD_LOG_EVERY:
            self._bad_logged[key] = now
            log.warning(fmt + " (further ones counted, logged at most once a minute)", *args)

    # ------------------------------------------------------------------ TCP queries
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self._make_room()
        if len(self._conns) >= self.max_connections or task is None:
            self.counters["connections_closed"] += 1
            writer.close()
            return
        self._conns.add(task)
        self._pending[writer] = (ip, time.monotonic(), task)
        try:
            await self._serve_connection(reader, writer, peer)
        except asyncio.CancelledError:
            # Server stopping: end quietly (asyncio's stream callback logs a cancelled handler).
            pass
        finally:
            self._conns.discard(task)
            self._pending.pop(writer, None)
            writer.close()

    @property
    def silent_connections(self) -> int:
        """TCP connections open that have not sent a valid query yet (tools, tests)."""
        return len(self._pending)

    def _make_room(self) -> None:
        """Before a new connection: close what hoards slots (see ``MAX_PENDING_PER_PEER``)."""
        now = time.monotonic()
        silent: dict[str, list[asyncio.StreamWriter]] = {}
        for w, (ip, since, _) in self._pending.items():
            if now - since >= PENDING_GRACE_S:
                silent.setdefault(ip, []).append(w)
        for ws in silent.values():
            for w in ws[:len(ws) - MAX_PENDING_PER_PEER]:  # oldest first
                self._close_pending(w)
        if len(self._conns) >= self.max_connections and self._pending:
            self._close_pending(next(iter(self._pending)))

    def _close_pending(self, writer: asyncio.StreamWriter) -> None:
        entry = self._pending.pop(writer, None)
        if entry is None:
            return
        ip, _, task = entry
        self._conns.discard(task)  # its slot is free now: the handler ends on the next read
        self.counters["connections_closed"] += 1
        if self._first_time("tcp", "pending", ip):
            log.warning("TCP: %s holds more connections that sent no query than allowed (%d per address, %d in "
                        "all): the oldest are closed (further ones counted, not logged)",
                        ip, MAX_PENDING_PER_PEER, self.max_connections)
        writer.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any) -> None:
        verified = False
        while not self._stopping:
            # Idle read timeout: short for the first frame (a client speaks at once), then tcp_timeout.
            idle_s = self.tcp_timeout if verified else min(self.tcp_timeout, FIRST_FRAME_TIMEOUT_S)
            try:
                async with asyncio.timeout(idle_s):
                    prefix = await reader.readexactly(p.FRAME_PREFIX.size)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            try:
                n = p.read_frame_length(prefix, p.MAX_DATAGRAM)
                async with asyncio.timeout(self.tcp_timeout):
                    data = await reader.readexactly(n)
                msg = p.decode(data, self._secret, max_age=self.max_age)
                if not isinstance(msg, p.BudgetQuery | p.StatusQuery | p.LeaseQuery | p.ControlQuery | p.CtlCommand) \
                        or msg.header is None:
                    raise p.ProtocolError("malformed", "not a query on the TCP port")
                self.guard.check(p.sender_of(msg), msg.header)
            except p.ProtocolError as e:
                self._bad(e, peer)
                return  # a broken or hostile peer: drop the connection
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            if not verified:
                verified = True
                self._pending.pop(writer, None)
            self.counters["queries"] += 1
            reply: p.Message
            try:
                if isinstance(msg, p.LeaseQuery):
                    reply = self.lease_grant(msg, peer)
                elif isinstance(msg, p.BudgetQuery):
                    reply = self.budget_reply(msg.header.seq)
                elif isinstance(msg, p.ControlQuery):
                    reply = self.control_reply(msg)
                elif isinstance(msg, p.CtlCommand):
                    reply = await self.ctl(msg)
                else:
                    reply = p.StatusReply(re=msg.header.seq, status=self.status())
            except Exception:  # a bug of ours: logged once per kind, the client retries, the guard runs on
                self.counters["query_errors"] += 1
                if self._first_time("query_error", type(msg).__name__):
                    log.exception("answering a %s failed (logged once per kind; the connection is dropped and "
                                  "the client asks again)", type(msg).__name__)
                return
            writer.write(p.frame(self.sender.encode(reply)))
            try:
                async with asyncio.timeout(self.tcp_timeout):
                    await writer.drain()
            except (TimeoutError, ConnectionError):
                return

    def account_budget(self, now: float | None = None) -> tuple[BudgetSnapshot, int]:
        """The account-wide budget: every bot's latest readings and the server's own usage
        combined (:meth:`ApiBudget.combine`); returns it with the number of bots combined."""
        t = time.time() if now is None else now
        snaps = self.registry.budget_snapshots()
        n = len(snaps)
        own = self.own_budget.snapshot(t)
        if own.private_since or own.private_reset:
            snaps.append(own)
        return ApiBudget.combine(snaps, t), n

    def budget_reply(self, re: int) -> p.BudgetReply:
        combined, n = self.account_budget()
        return p.BudgetReply(re=re, remaining=combined.private_remaining, advice=combined.advice, bots=n,
                             budget=combined)

    def status(self) -> dict[str, Any]:
        """Bots, market totals and counters as plain JSON values (docs/protocol.md §3)."""
        now_m = time.monotonic()
        bots = [
            {"id": b.bot, "market": b.market, "pos": float(b.position), "base": float(b.base_position),
             "profit": b.profit, "realized": b.realized, "pid": b.pid, "age": round(now_m - b.last_seen, 3),
             "private_remaining": b.api_remaining, "advice": b.budget.advice if b.budget else None,
             "addr": b.addr}
            for b in sorted(self.registry.bots.values(), key=lambda b: b.bot)
        ]
        markets = []
        for m, ms in sorted(self.registry.markets.items()):
            d = self._drift.get(m)
            markets.append({
                "market": m, "total": float(self.registry.total(m)), "base": float(ms.base),
                "expected": float(self.registry.total(m) + self.base_of(m)),
                "exchange": float(ms.exchange) if ms.exchange is not None else None,
                "diff": float(ms.diff) if ms.diff is not None else None,
                "consecutive": d.streak if d is not None else 0, "profit": self.registry.profit(m),
                "bots": len(self.registry.bots_of(m)), "last_check": ms.last_check,
                "skip_reason": ms.skip_reason, "corrections": ms.corrections,
                "health": ms.health, "state": ms.board_state,
                "base_adjust": float(self.controls.adjust_of(m)), "frozen": self.controls.frozen_why(m),
                "mode": self.controls.bot_control(m).mode,
            })
        try:
            budget: dict[str, Any] | None = self.account_budget()[0].to_dict()
        except Exception:  # never let a status query fail on a budget corner case
            budget = None
        duplicates = [
            {"id": c.bot, "boot": c.boot, "market": c.market, "pid": c.pid, "addr": c.addr, "refused": c.refused,
             "age": round(now_m - c.last_seen, 3)}
            for c in self.registry.claimants.values()
        ]
        return {
            "started": self.started_at, "uptime": round(time.time() - self.started_at, 3), "checks": self.checks,
            "bots": bots, "markets": markets, "counters": {**self.bad, **self.counters}, "budget": budget,
            "duplicates": duplicates,
            "leases": self.leases.status(),
            "margin": self.margin.status(),
            "controls": self.controls.to_dict(),
        }

    # ------------------------------------------------------------------ the check
    def check_interval_s(self) -> float:
        """``pos_server_check_interval``, held to [``MIN_CHECK_INTERVAL_S``, ``MAX_CHECK_INTERVAL_S``]
        (the config model checks it; a config built in code does not): a tiny one would spend the
        account's API budget on checks, a non-finite one would end the check loop."""
        v = self.config.pos_server_check_interval
        if not isinstance(v, int | float) or math.isnan(v):
            return DEFAULT_CHECK_INTERVAL_S
        return min(max(float(v), MIN_CHECK_INTERVAL_S), MAX_CHECK_INTERVAL_S)

    async def _check_loop(self) -> None:
        # The same loop as a single bot's drift check: a bug in one round must not end the guard.
        await run_drift_loop(self.check_interval_s, self.check_all, log=log, what="position check",
                             wake=self._check_soon)

    def _check_again_in(self, delay_s: float) -> None:
        """Run the next check round ``delay_s`` from now, if the interval would come later."""
        asyncio.get_running_loop().call_later(delay_s, self._check_soon.set)

    async def check_all(self) -> list[CheckResult]:
        """One round: evict silent bots, check every market, retire the markets no bot reports,
        record the samples. Each step and each market is isolated: one failing never stops the rest."""
        try:
            for b in self.registry.evict_silent(self.config.pos_server_evict_after):
                self.counters["evictions"] += 1
                log.warning("bot %s evicted after %.0f s of silence, holding %s on %s: its position now counts as "
                            "drift", b.bot, self.config.pos_server_evict_after, b.position, b.market)
                self._alert_eviction(b)
                if b.position != 0:
                    self._orphans.setdefault(b.market, {})[b.bot] = b.position
        except Exception:
            self._log_once_exception("eviction", "evicting silent bots failed")
        try:
            self._alert_over_limits()
        except Exception:
            self._log_once_exception("over_limit", "over-limit alerts failed")
        markets = list(self.registry.markets)
        results = list(await asyncio.gather(*(self._check_market_isolated(m) for m in markets)))
        self.checks += 1
        for r in results:
            self.results[r.market] = r
        try:
            self._retire()
        except Exception:
            self._log_once_exception("retire", "retiring markets failed")
        try:
            await self._record(results)
        except Exception:
            self._log_once_exception("record", "recording the check failed")
        if self._console is not None:
            try:
                self._console.on_check(results)
            except Exception:
                self._log_once_exception("console", "console lines failed")
        return results

    def _log_once_exception(self, key: str, what: str) -> None:
        if self._first_time("step", key):
            log.exception("%s (logged once; the other steps of the round go on)", what)

    def _retire(self) -> None:
        for ms in self.registry.retire_markets(self.config.pos_server_evict_after, self.orphan_grace):
            m = ms.market
            self.counters["retired"] += 1
            self._drift.pop(m, None)
            self.results.pop(m, None)
            self._prices.pop(m, None)
            self._failing.pop(m, None)
            self._orphans.pop(m, None)
            if ms.diff is not None and ms.in_sync_at is None:
                log.warning("%s retired: no live bot reports it; the exchange still differs by %s from the base %s "
                            "(not corrected any more)", m, ms.diff, ms.base)
            else:
                log.info("%s retired: no live bot reports it", m)

    async def _check_market_isolated(self, market: str) -> CheckResult:
        """:meth:`_check_market`, never raising: a failure is logged once per market and kind (and
        once more when the market checks again), and the market shows it as its skip reason."""
        try:
            result = await self._check_market(market)
        except Exception as e:
            self.counters["check_errors"] += 1
            kind = type(e).__name__
            if self._failing.get(market) != kind:
                self._failing[market] = kind
                log.exception("%s: the check failed (logged once; the other markets go on)", market)
            reason = f"check failed ({kind})"
            try:
                self.registry.record_check(market, health="UNKNOWN", board_state="UNKNOWN", price=None, exchange=None,
                                           skip_reason=reason, started=time.monotonic(), in_sync=False)
            except Exception:
                pass  # what the market shows is secondary: the round goes on
            ms = self.registry.markets.get(market)
            base = ms.base if ms is not None else ZERO
            total = self.registry.total(market)
            return CheckResult(market, total, base, total + base, None, self.registry.profit(market), None, reason)
        if self._failing.pop(market, None) is not None:
            log.info("%s: the check works again", market)
        return result

    async def _check_market(self, market: str) -> CheckResult:
        ms = self.registry.markets[market]
        drift = self._drift_for(market)
        t0 = time.monotonic()
        change_before = ms.last_change
        state_r, actual_r, ticker_r = await asyncio.gather(
            self.rest.get_board_state(market), self.rest.net_position(market), self._ticker(market),
            return_exceptions=True,
        )
        reason = ""
        actual: Decimal | None = None
        bound = Decimal(repr(p.max_position(market)))
        if isinstance(actual_r, BaseException):
            if not isinstance(actual_r, BitflyerError):
                log.error("%s: getting the exchange position failed: %r", market, actual_r)
            reason = f"exchange position unknown ({type(actual_r).__name__})"
        elif not isinstance(actual_r, Decimal) or not actual_r.is_finite() or abs(actual_r) >= bound:
            reason = f"exchange position not a bounded number ({actual_r!r})"  # unknown, never acted on
        else:
            actual = actual_r
        running = False
        if isinstance(state_r, BaseException):
            health = board = "UNKNOWN"
            reason = reason or f"board state unknown ({type(state_r).__name__})"
        else:
            health, board = str(state_r.get("health", "")), str(state_r.get("state", ""))
            running = board == "RUNNING" and health_rank(health) < STOP_HEALTH
            if not running:
                reason = reason or f"exchange {health} / {board}"
            if health_rank(health) >= STOP_HEALTH:
                if market not in self._health_stopped:
                    self._health_stopped.add(market)
                    self.alert("health_stop", f"{market}: exchange health {health} / {board}: no order goes through")
            elif market in self._health_stopped and running:
                self._health_stopped.discard(market)
                log.info("%s: the exchange trades again (%s / %s)", market, health, board)
        price = ticker_r if isinstance(ticker_r, float) else None
        if not isinstance(state_r, BaseException):
            self.leases.set_health(market, health, board)  # the bots' feed gets it too

        warm = time.monotonic() - self._started_m >= self.startup_grace and self.reports_since_start > 0
        # Quiet before AND during the requests: a fill reported meanwhile may or may not be in them.
        quiet = ms.last_change == change_before and t0 - ms.last_change >= self.quiet_seconds
        total = self.registry.total(market)
        base = self.base_of(market)
        expected = total + base
        claimants = self.registry.claimants_on(market)
        correction = None
        if not warm:
            reason = reason or f"waiting {self.startup_grace:.3g} s after start for every bot to report"
            drift.observe(expected, None, quiet=False)  # no observation: a restart never judges
        elif claimants:
            # Two senders claim one bot id: which position is real is unknown, so nothing is judged.
            held = f"bot id {claimants[0].bot} is claimed by two live senders"
            reason = f"{held}; {reason}" if reason else held
            drift.observe(expected, None, quiet=False)
        elif not running or actual is None:
            # Not trading (or unknown): no order; a closed market resets the streak.
            drift.observe(expected, actual if actual is not None and not running else None, quiet=False)
            if actual is not None and not running:
                drift.reset()
        else:
            if not quiet:
                reason = f"a bot's position changed within {self.quiet_seconds:.3g} s"
            correction = drift.observe(expected, actual, quiet=quiet)
            hold = self._settle_gate(market, actual - expected, drift, t0) if quiet else ""
            if hold:
                reason, correction = hold, None
            frozen = self.controls.frozen_why(market)
            if frozen is not None:
                held = "frozen: no correction until 'bfsx ctl unfreeze' or 'adopt'"
                reason, correction = (f"{held}; {reason}" if reason else held), None
            elif correction is not None:
                correction = self._reopen_gate(market, correction, actual, expected)
                if correction is None:
                    reason = "frozen: the correction would re-open a position"
        in_sync = actual is not None and abs(actual - expected) < drift.min_size
        if in_sync:
            self._orphans.pop(market, None)  # whatever evicted bots left is corrected (or healed)
            self.controls.in_sync(market)
        self.registry.record_check(market, health=health, board_state=board, price=price, exchange=actual,
                                   skip_reason=reason, started=t0, in_sync=in_sync, expected=expected)
        done = ""
        if correction is not None:
            done = await self._correct(market, correction.side, correction.size, expected, actual, total, base)
        return CheckResult(market, total, base, expected, actual, self.registry.profit(market), price, reason, done)

    # ------------------------------------------------------------------ controls (controls.py)
    def base_of(self, market: str) -> Decimal:
        """The base the check compares with: the bots' ``base_position`` plus what ``bfsx ctl
        adopt`` added."""
        ms = self.registry.markets.get(market)
        return (ms.base if ms is not None else ZERO) + self.controls.adjust_of(market)

    def _reopen_gate(self, market: str, correction: Correction, actual: Decimal,
                     expected: Decimal) -> Correction | None:
        """Reduce-only corrections: the correction as it may go out, or None (the market is then
        frozen, its bots paused, and an alert goes out).

        A correction may only bring the account's absolute exchange position down: a drift that
        lowers |exchange| is a trade no bot placed that took exposure away (a loss-cut, a hand
        flatten), and undoing it would re-open what someone closed. One that would cross zero is cut
        to the part that flattens. ``pos_server_correct_all`` (BFS-X's behaviour) and ``bfsx ctl
        flatten`` (the operator asked for the base) let every correction through."""
        if self.config.pos_server_correct_all or self.controls.to_base(market) or self.controls.reopen_allowed(market):
            return correction
        spec = get_product(market)
        min_size = spec.min_size if spec is not None else Decimal("0.001")
        orphan = sum(self._orphans.get(market, {}).values(), ZERO)
        if orphan != 0 and (correction.side == "SELL") == (orphan > 0):
            # The exchange holds what an evicted bot held: removing it is no re-opening.
            size = min(correction.size, abs(orphan))
            if size >= min_size:
                return correction if size == correction.size else Correction(correction.side, size, correction.diff)
        if actual != 0 and (correction.side == "SELL") == (actual > 0):  # toward zero
            if correction.size <= abs(actual):
                return correction
            # Crosses zero: only the part that flattens reduces; the rest would open the other side.
            if abs(actual) >= min_size:
                return Correction(correction.side, abs(actual), correction.diff)
        self.counters["reopen_refused"] += 1
        why = (f"{market}: exchange {actual} ≠ expected {expected}; the correction {correction.side} "
               f"{correction.size} would re-open a position a trade no bot placed took away (a loss-cut or a "
               f"hand flatten?): NOT sent; {market} frozen, its bots paused until 'bfsx ctl adopt' "
               f"(take {actual} as it is), 'flatten' or 'unfreeze' (correct it)")
        newly = self.controls.freeze(market, why)
        # Paused, not close-only: the bots still count positions the outside trade already closed,
        # so a bot "closing" its position would open the opposite one on the exchange.
        self.controls.pause(FROZEN, market)
        if newly:
            self.alert("freeze", why)
        return None

    def _consume_orphans(self, market: str, side: str, size: Decimal) -> None:
        """A correction of ``side`` ``size`` went out: what it removed of evicted bots' positions
        is no longer theirs to explain."""
        orphans = self._orphans.get(market)
        if orphans is None:
            return
        left = size
        for bot, pos in list(orphans.items()):
            if left <= 0:
                break
            if (side == "SELL") != (pos > 0):
                continue
            take = min(left, abs(pos))
            left -= take
            rest = pos - take if pos > 0 else pos + take
            if rest == 0:
                del orphans[bot]
            else:
                orphans[bot] = rest
        if not orphans:
            del self._orphans[market]

    def control_reply(self, q: p.ControlQuery) -> p.ControlReply:
        """The mode of ``q``'s bot (its market's controls)."""
        assert q.header is not None
        self.counters["control_queries"] += 1
        c = self.controls.bot_control(q.market)
        return p.ControlReply(re=q.header.seq, mode=c.mode, reasons=c.reasons[:p.MAX_REASONS],
                              generation=c.generation)

    async def ctl(self, cmd: p.CtlCommand) -> p.CtlReply:
        """One ``bfsx ctl`` command: applied, persisted, alerted; the reply says what it did."""
        assert cmd.header is not None
        market = cmd.market or None
        try:
            ok, text = await self._apply_ctl(cmd.command, market)
        except Exception as e:  # a command must never take the connection handler down
            log.exception("ctl %s failed", cmd.command)
            ok, text = False, f"{cmd.command} failed: {type(e).__name__}"
        if cmd.command != "status":
            self.counters["ctl_commands" if ok else "ctl_refused"] += 1
            where = market or "every market"
            if ok:
                self.alert("kill_switch", f"bfsx ctl {cmd.command} ({where}): {text}")
            else:
                log.warning("bfsx ctl %s (%s) refused: %s", cmd.command, where, text)
        return p.CtlReply(re=cmd.header.seq, ok=ok, text=text[:p.MAX_TEXT_LEN], controls=self.controls.to_dict())

    async def _apply_ctl(self, command: str, market: str | None) -> tuple[bool, str]:
        c = self.controls
        where = market or "every market"
        live = market is None or market in self.registry.markets
        note = "" if live else f" (no live bot reports {market} yet: applies when one does)"
        if command == "status":
            return True, c.summary() or "nothing held: every bot runs, corrections on"
        if command == "pause":
            c.pause(OPERATOR, market)
            return True, f"{where}: paused (no new orders){note}"
        if command == "close-only":
            c.hold(OPERATOR, market)
            return True, f"{where}: close-only{note}"
        if command == "resume":
            # Without a market: every scope (a pause of one market included), as the operator means it.
            scopes: list[str | None] = [market] if market is not None else \
                [None, *sorted((set(c.holds) | set(c.pauses)) - {ALL})]
            changed = [f(reason, sc) for sc in scopes
                       for f, reason in ((c.unpause, OPERATOR), (c.release, OPERATOR), (c.release, FLATTEN))]
            if DAILY_LOSS_HOLD in (c.held(market) if market is not None else c.holds.get(ALL, set())):
                # The margin watch's: an operator's resume lifts it for the rest of the JST day.
                changed.append(self.margin.resume_daily_loss())
            if market is not None:
                reasons = c.held(market) + [f"pause:{x}" for x in c.paused(market)]
                left = [f"{market}: {', '.join(reasons)}"] if reasons else []
            else:  # what other scopes (a market's own, the margin guard's) still hold
                left = [f"{sc}: {', '.join(sorted(c.holds.get(sc, set()) | {f'pause:{x}' for x in c.pauses.get(sc, set())}))}"
                        for sc in sorted(set(c.holds) | set(c.pauses))]
            text = f"{where}: resumed" if any(changed) else f"{where}: nothing of bfsx ctl was held"
            return True, text + (f"; still held: {'; '.join(left)}" if left else "") + note
        if command == "flatten":
            c.hold(FLATTEN, market)
            lifted = c.unfreeze(market)
            extra = f"; unfrozen: {', '.join(lifted)}" if lifted else ""
            return True, (f"{where}: every bot closes its position and stays close-only; the server brings the "
                          f"market to its base{extra}{note}")
        if command == "freeze":
            c.freeze(market, f"bfsx ctl freeze ({where})")
            return True, f"{where}: frozen (no correcting order){note}"
        if command == "unfreeze":
            lifted = c.unfreeze(market)
            if not lifted:
                if market is not None and c.frozen_why(market) is not None:
                    return False, f"{market} is frozen for every market: 'bfsx ctl unfreeze' without a market lifts it"
                return True, f"{where}: was not frozen"
            # The operator confirmed: the correction the freeze held back may re-open, once.
            markets = sorted({m for m in lifted if m != ALL} | (set(self.registry.markets) if ALL in lifted else set()))
            c.allow_reopen(markets)
            return True, (f"unfrozen: {', '.join(lifted)} (corrections on, also one that re-opens a position, until "
                          f"in sync; the freeze's pause lifted)")
        if command == "adopt":
            return await self._adopt(market)
        return False, f"unknown command {command!r}"

    async def _adopt(self, market: str | None) -> tuple[bool, str]:
        """The exchange position now becomes the expected one: base += exchange − (Σ bots + base)."""
        markets = [market] if market is not None else sorted(self.registry.markets)
        if not markets:
            return False, "no market to adopt: no live bot reports one (name the market)"
        done = []
        for m in markets:
            try:
                actual = await self.rest.net_position(m)
            except BitflyerError as e:
                return False, f"{m}: exchange position unknown ({type(e).__name__}): nothing adopted"
            bound = Decimal(repr(p.max_position(m)))
            if not isinstance(actual, Decimal) or not actual.is_finite() or abs(actual) >= bound:
                return False, f"{m}: exchange position not a bounded number: nothing adopted"
            ms = self.registry.markets.get(m)
            reported = ms.base if ms is not None else ZERO
            adjust = actual - self.registry.total(m) - reported
            self.controls.adopt(m, adjust)
            self.controls.unfreeze(m)
            d = self._drift.get(m)
            if d is not None:
                d.reset()
            done.append(f"{m} base {reported + adjust} (base_position {reported} {adjust:+})")
        return True, "adopted: " + "; ".join(done) + " (corrections on)"

    # ------------------------------------------------------------------ leases (lease_desk.py)
    def lease_grant(self, q: p.LeaseQuery, peer: Any) -> p.LeaseGrant:
        """A bot's new API lease, sized from every bot's readings and the server's own usage."""
        desk = self.leases
        desk.check_interval_s = self.check_interval_s()
        desk.checked_markets = len(self.registry.markets)
        desk.has_credentials = self.config.has_credentials
        budgets = {b.bot: b.budget for b in self.registry.bots.values() if b.budget is not None}
        return desk.grant(q, host_of(peer), budgets, self.own_budget)

    def _settle_gate(self, market: str, diff: Decimal | None, drift: DriftCheck, check_started_m: float) -> str:
        """Settle before correct: "" when a correction may go out, else why not (the streak then
        starts over, so only checks after every bot settled count toward a correction)."""
        # this check's expected position (nothing awaited since the check read it): a drift of the
        # same size after the bots' positions moved may be another lost fill (lease_desk.gate)
        expected = self.registry.total(market) + self.base_of(market)
        hold = self.leases.gate(market, diff, drift.min_size, check_started_m, expected=expected)
        if hold:
            drift.reset()
        return hold

    async def _health_feed_loop(self) -> None:
        """One health reading per leased market, handed to every bot with its lease (so bots do
        not each poll it). A market the check read recently is not polled again."""
        while True:
            await asyncio.sleep(HEALTH_FEED_INTERVAL_S / 2)
            now_m = time.monotonic()
            for market in self.leases.markets(now_m):
                last = self.leases.health.get(market)
                if last is not None and now_m - last[2] < HEALTH_FEED_INTERVAL_S:
                    continue
                try:
                    st = await self.rest.get_board_state(market)
                    self.leases.set_health(market, str(st.get("health", "")), str(st.get("state", "")))
                except BitflyerError as e:
                    self.leases.set_health(market, "UNKNOWN", "UNKNOWN")
                    log.debug("health feed: board state of %s unknown: %s", market, e)
                except Exception:  # never let the feed die: bots would fall back to polling
                    log.exception("health feed of %s failed", market)

    async def _ticker(self, market: str) -> float | None:
        """The last price, for the charts: asked at most every ``PRICE_EVERY`` s (public requests
        count against the IP's limit, shared with the bots on this host)."""
        now = time.monotonic()
        cached = self._prices.get(market)
        if cached is not None and now - cached[0] < max(PRICE_EVERY, self.check_interval_s()):
            return cached[1]
        ticker = await self.rest.get_ticker(market)
        ltp = ticker.get("ltp")
        price = float(ltp) if isinstance(ltp, int | float) else None
        self._prices[market] = (now, price)
        return price

    async def _correct(self, market: str, side: str, size: Decimal, expected: Decimal, actual: Decimal | None,
                       total: Decimal, base: Decimal) -> str:
        cap = self.order_cap()
        # The last gate before real money: whatever the config or a report said, only a finite
        # size within (0, cap] goes out.
        if cap is None or not size.is_finite() or not 0 < size <= cap:
            self.counters["corrections_refused"] += 1
            if self._first_time("cap", market, str(cap)):
                log.error("%s: correcting order %s %s NOT sent: adjust_max_size %r is not a finite positive size "
                          "or the order exceeds it (logged once)", market, side, size, self.config.adjust_max_size)
            self.alert("correction_failed", f"{market}: correcting order {side} {size} not sent: adjust_max_size "
                                            f"{self.config.adjust_max_size!r} is not a finite positive size or the "
                                            "order exceeds it")
            return f"{side} {size} refused (adjust_max_size)"
        log.warning("%s: exchange %s ≠ expected %s (Σ bots %s + base %s) for %d checks → MARKET %s %s",
                    market, actual, expected, total, base, self.config.pos_server_consecutive, side, size)
        try:
            acc = await self.rest.send_child_order(market, side, float(size))  # type: ignore[arg-type]
        except BitflyerError as e:
            self.counters["correction_errors"] += 1
            log.error("%s: correcting order %s %s failed: %s", market, side, size, e)
            if isinstance(e, ApiError) and e.status == SELF_TRADE.status:
                return self._self_trade(market, side, size, e)
            self.alert("correction_failed", f"{market}: correcting order {side} {size} failed: {type(e).__name__}: {e}")
            return f"{side} {size} failed"
        self.counters["corrections"] += 1
        self.registry.correction_sent(market)
        self._consume_orphans(market, side, size)
        if self.controls.step_aside_over(market):
            log.warning("%s: the correction went through: its bots may trade again", market)
        log.info("%s: correcting order %s %s accepted (%s)", market, side, size, acc)
        self.alert("correction", f"{market}: exchange {actual} ≠ expected {expected} (Σ bots {total} + base {base}) "
                                 f"for {self.config.pos_server_consecutive} checks: sent MARKET {side} {size}")
        return f"{side} {size}"

    def _self_trade(self, market: str, side: str, size: Decimal, e: BitflyerError) -> str:
        """The exchange refused a correction as a self trade: it would have matched this account's
        own resting orders, which only the bots place. Left alone, a market maker's quotes at the
        touch would block every correction for as long as it quotes, so the bots of ``market``
        step aside (paused, their orders cancelled: controls.py) and the next check corrects.
        Refused again once the bots had ``step_aside_wait_s`` to cancel, the order in the way is
        not theirs (placed by hand?): the bots trade again, and the alert says what to do."""
        now = time.monotonic()
        text = f"{market}: correcting order {side} {size} refused as a self trade ({e})"
        if self.controls.step_aside_useless(market):
            self.alert("correction_failed", f"{text}: a resting order of this account that no bot placed is in "
                                            "the way; cancel it (the bots' own orders were cancelled before)")
            return f"{side} {size} failed (self trade)"
        since = self.controls.aside_since(market)
        if since is not None and now - since >= self.step_aside_wait_s:
            self.controls.step_aside_failed(market)
            why = (f"{text} {now - since:.0f} s after the bots of {market} were asked to cancel their orders: a "
                   "resting order no bot placed (by hand?) is in the way; the bots trade again; cancel that order")
            log.error("%s", why)
            self.alert("correction_failed", why)
            return f"{side} {size} failed (self trade)"
        # Refused, so it never traded: the next check that sees the same drift sends it again, a
        # few seconds from now (time for the bots to cancel), not after a new streak of checks with
        # the bots paused all along.
        self._drift_for(market).refused()
        self._check_again_in(self.step_aside_recheck_s)
        if since is not None:
            return f"{side} {size} refused (self trade): waiting for the bots to cancel"
        self.controls.step_aside(market, now)
        self.counters["self_trade_steps"] += 1
        why = (f"{text}: it would trade with this account's own resting orders, so the bots of {market} pause "
               "and cancel their orders until the correction goes through")
        log.warning("%s", why)
        self.alert("self_trade", why)
        return f"{side} {size} refused (self trade): the bots step aside"

    # ------------------------------------------------------------------ history
    async def _restore(self) -> None:
        """The last saved base of every market (so an unchanged one is not saved again). Neither
        markets nor bots are restored: a market is checked again once a live bot reports it (the
        live ones do within the startup grace). Nobody vouches for a market no live bot reports, so
        the server never trades on one from its history alone."""
        try:
            bases = await self.history.bases()
        except Exception as e:  # a broken history file must not stop the guard
            log.warning("history: cannot read it: %s", e)
            return
        for market, base in bases.items():
            self._saved_bases[market] = dec(base)

    async def _record(self, results: list[CheckResult] | tuple[CheckResult, ...]) -> None:
        ts = time.time()
        m_rows = [
            (r.market, MarketSample(ts=ts, position=float(r.total), profit=r.profit, price=r.price,
                                    exchange_position=float(r.exchange - r.base) if r.exchange is not None else None),
             float(r.base), float(r.exchange - r.expected) if r.exchange is not None else None)
            for r in results
        ]
        b_rows = [self._bot_sample(b, ts) for b in self.registry.bots.values()]
        # Bases are saved here, once per check, whatever the report rate.
        bases = [(m, ms.base) for m, ms in self.registry.markets.items()
                 if ms.base_known and self._saved_bases.get(m) != ms.base]
        for m, base in bases:
            try:
                await self.history.save_base(m, float(base), ts)
                self._saved_bases[m] = base
            except Exception as e:
                log.warning("history: saving the base of %s failed: %s", m, e)
        if self.influx is not None:  # only queues: the writer's thread does the network
            self.influx.write_markets({m: [sample] for m, sample, _, _ in m_rows})
            self.influx.write_bots(b_rows)
        try:
            await self.history.record(m_rows, b_rows)
        except Exception as e:
            log.warning("history: write failed: %s", e)

    def _account_sample(self, sample: AccountSample) -> None:
        if self.influx is not None:  # only queues: the writer's thread does the network
            self.influx.write_account([sample])
        self._spawn(self._save_account(sample), "account-sample")

    async def _save_account(self, sample: AccountSample) -> None:
        try:
            await self.history.record_account(sample)
        except Exception as e:  # the history is for the charts: never worth stopping the watch
            if self._first_time("history", "account"):
                log.warning("history: saving the margin sample failed: %s (logged once)", e)

    def keep_rate_lines(self) -> list[tuple[str, float]]:
        """The keep-rate thresholds to draw on the account chart (the ones that are on)."""
        from bfsx.bitflyer.collateral import LOSS_CUT_RATIO

        c = self.config
        lines = [("warn", c.pos_server_keep_rate_warn), ("close-only", c.pos_server_keep_rate_close_only)]
        return [(n, v) for n, v in lines if v > 0] + [("loss-cut", LOSS_CUT_RATIO)]

    async def account_history(self, since: float) -> list[AccountSample]:
        """The margin samples from ``since`` on (for the charts; kept across restarts)."""
        return await self.history.account_samples(since)

    @staticmethod
    def _bot_sample(b: BotState, ts: float) -> BotSample:
        return BotSample(ts=ts, bot=b.bot, market=b.market, position=float(b.position), profit=b.profit,
                         api_remaining=b.api_remaining)

    # ------------------------------------------------------------------ reporting
    def _report_settings(self) -> Any:
        from bfsx.reporting.discord import ReportSettings

        c = self.config
        return ReportSettings(
            webhook_url=c.pos_server_discord_value(), interval_minutes=c.pos_server_discord_interval,
            period_hours=c.pos_server_graph_period, send_text=c.pos_server_discord_send_text,
            bitflyer_color=c.pos_server_bitflyer_color,
        )

    def _start_reporting(self) -> None:
        target = self.config.pos_server_discord_influxdb
        if target is not None:
            from bfsx.reporting.influx import InfluxWriter

            self.influx = InfluxWriter(target[0], int(target[1]))
            log.info("InfluxDB points to %s:%d", target[0], target[1])
        if self.config.pos_server_discord_value() or self.chart_dir is not None:
            from bfsx.reporting.discord import DiscordReporter

            self.reporter = DiscordReporter(self._report_settings(), self.market_history, self.bot_samples,
                                            account_history=self.account_history,
                                            account_thresholds=self.keep_rate_lines)
            self.reporter.start()
        if self.chart_dir is not None:
            self._spawn(self._chart_loop(), "charts")

    async def _stop_reporting(self) -> None:
        if self.chart_dir is not None and self.reporter is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.write_charts(), 30.0)
        if self.reporter is not None:
            await self.reporter.close()
        if self.influx is not None:
            await self.influx.aclose(5.0)

    async def market_history(self, since: float) -> dict[str, list[MarketSample]]:
        """Every market's samples from ``since`` on (for the charts)."""
        markets = set(await self.history.markets()) | set(self.registry.markets)
        out: dict[str, list[MarketSample]] = {}
        for m in sorted(markets):
            samples = await self.history.market_samples(m, since)
            if samples:
                out[m] = samples
        return out

    def bot_samples(self) -> list[BotSample]:
        """The latest sample of every live bot (for the per-bot text)."""
        ts = time.time()
        return [self._bot_sample(b, ts) for b in sorted(self.registry.bots.values(), key=lambda b: b.bot)]

    async def write_charts(self) -> list[Path]:
        """Render the charts (off the loop) and write them to ``chart_dir``; returns the files."""
        if self.chart_dir is None or self.reporter is None:
            return []
        files = await self.reporter.render_files()
        folder = self.chart_dir

        def _write() -> list[Path]:
            folder.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, data in files:
                path = folder / name
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)  # a reader never sees half a PNG
                paths.append(path)
            return paths

        paths = await asyncio.to_thread(_write)
        self.charts_written += len(paths)
        return paths

    async def _chart_loop(self) -> None:
        while True:
            interval = self.chart_interval or self.config.pos_server_discord_interval * 60.0
            await asyncio.sleep(max(interval, 0.5))
            try:
                await self.write_charts()
            except Exception:
                log.exception("writing the charts failed")

    # ------------------------------------------------------------------ config reload
    async def _config_changed(self, new: TradeConfig) -> None:
        old = self.config
        keys = changed_keys(old, new)
        live = [k for k in keys if k in LIVE_KEYS]
        restart = [k for k in keys if k not in LIVE_KEYS and k not in IGNORED_KEYS]
        self.config = new
        if {"pos_server_consecutive", "adjust_max_size"} & set(live):
            cap = self.order_cap() or ZERO
            if "adjust_max_size" in live:
                self._warn_if_no_cap()
            for d in self._drift.values():
                d.consecutive = new.pos_server_consecutive
                d.max_order = cap
        if "log_level" in live:
            from bfsx.logs import set_level

            set_level(new.log_level)
        if "pos_server_graph_period" in live:
            self.history.horizon = max(new.pos_server_graph_period * 3600, self.history.horizon)
        if self.alerts is not None:
            if new.pos_server_discord_value() != old.pos_server_discord_value():
                old_alerts, self.alerts = self.alerts, None
                self._spawn(old_alerts.close(), "alerts-retired")
                self._start_alerts()
            else:
                self.alerts.kinds = new.pos_server_alerts
                self.alerts.per_kind_interval_s = new.pos_server_alert_interval
        else:
            self._start_alerts()
        if self.reporter is not None:
            self.reporter.update(self._report_settings())
        elif new.pos_server_discord_value():
            from bfsx.reporting.discord import DiscordReporter

            self.reporter = DiscordReporter(self._report_settings(), self.market_history, self.bot_samples,
                                            account_history=self.account_history,
                                            account_thresholds=self.keep_rate_lines)
            self.reporter.start()
        if live:
            log.info("%s reloaded: %s applied", self.config_path, ", ".join(live))
        if restart:
            log.warning("%s: %s changed; needs a restart to apply (still using the old value)",
                        self.config_path, ", ".join(restart))
            # Keep the old values of what cannot change live, so status and bind stay truthful.
            self.config = new.model_copy(update={k: getattr(old, k) for k in restart})


def run_pos_server(config_path: str) -> int:
    """``bfsx pos-server [TRADE_YAML]`` / ``python3 pos_server.py [mytrade.yaml]``."""
    from bfsx.logs import setup_logging

    path = Path(config_path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found (usage: bfsx pos-server [TRADE_YAML])")
    config = load_trade_config(path)
    server_dir = _default_state_dir(config)
    # With the live table on a terminal, log lines go to the file only (they would tear the table).
    console = config.console_output
    setup_logging(server_dir, "pos_server", config.log_level, console=console and not os.isatty(1))
    server = PosServer(config, config_path=path)
    return aio.run(server.run())
