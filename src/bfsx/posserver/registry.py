"""The position server's state: the bots (their latest absolute report) and the totals per market.

Only the server's event loop touches it; every method is synchronous and O(bots of one market) at
most, so a report is applied the moment its datagram is decoded.

``base_position`` is reported per bot and applied once per market (docs/protocol.md §5): the
position the exchange should show is ``Σ bots' positions + base``, where ``base`` is the one the
market's latest report stated.

What it accepts is bounded and unambiguous (docs/protocol.md §5): only exact known product codes
and finite positions within :func:`~bfsx.posserver.protocol.max_position` (so at most one market
per product); at most ``max_markets_per_bot`` markets per bot id at once; one live sender per bot
id (another boot with the same id is refused until the first goes silent or says it stops). A
market retires when no live bot has reported it for the eviction time and nothing is left to
correct on it (or a bounded grace has passed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from bfsx.bitflyer.budget import BudgetSnapshot
from bfsx.posserver.protocol import MAX_PROFIT, Report, is_known_market, max_position

log = logging.getLogger("bfsx.posserver")

ZERO = Decimal(0)
#: ``full``: too many bots; ``refused``: an unknown market or a number out of bounds (a report built
#: in code: the decoder refuses those off the wire); ``duplicate``: another live sender holds the
#: bot id; ``market_cap``: the bot already reports ``max_markets_per_bot`` other markets.
Applied = Literal["new", "changed", "same", "full", "refused", "duplicate", "market_cap"]
#: A bot reports one product; two cover a restart with another one within the eviction time.
MAX_MARKETS_PER_BOT = 2
BASE_WARN_EVERY = 60.0  # seconds between two "bots disagree on base_position" warnings per market


def dec(x: float) -> Decimal:
    """Exact decimal of a wire float (its shortest repr), as account math does everywhere."""
    return Decimal(repr(float(x)))


@dataclass(slots=True)
class BotState:
    """The latest accepted report of one bot, plus when it came."""

    bot: str
    market: str
    position: Decimal
    base_position: Decimal
    profit: float
    realized: float
    pid: int
    budget: BudgetSnapshot | None
    boot: int
    seq: int
    addr: str
    first_seen: float  # monotonic
    last_seen: float  # monotonic
    last_change: float  # monotonic: when its position last changed (or first seen)
    reports: int = 1
    final: bool = False  # its latest report was its run's last (the bot is stopping)
    #: Markets this bot id reported, with when (monotonic) it last did: its market cap counts these.
    markets: dict[str, float] = field(default_factory=dict)

    @property
    def api_remaining(self) -> int | None:
        return self.budget.private_remaining if self.budget is not None else None


@dataclass(slots=True)
class MarketState:
    """What the server knows about one market; the check fills ``exchange``..``skip_reason``."""

    market: str
    base: Decimal = ZERO
    base_known: bool = False
    last_change: float = 0.0  # monotonic: any bot's position on this market changed, joined, left
    exchange: Decimal | None = None
    diff: Decimal | None = None
    consecutive: int = 0
    last_check: float = 0.0  # unix seconds
    skip_reason: str = ""
    price: float | None = None
    corrections: int = 0
    health: str = ""
    board_state: str = ""
    last_report: float = 0.0  # monotonic: a live bot's report for this market was last applied
    orphaned_at: float | None = None  # monotonic: since when no bot is on it (None: it has bots)
    in_sync_at: float | None = None  # monotonic start of the latest check that found nothing to correct
    _base_warned: float = field(default=0.0, repr=False)


@dataclass(slots=True)
class Claimant:
    """A second live sender claiming a bot id another boot holds: refused, shown, counted."""

    bot: str
    boot: int
    market: str
    pid: int
    addr: str
    first_seen: float  # monotonic
    last_seen: float  # monotonic
    refused: int = 1


def _valid(report: Report) -> bool:
    """The decoder's bounds, again, for reports built in code (a NaN compares false to everything)."""
    if not is_known_market(report.market):
        return False
    bound = max_position(report.market)
    return (abs(report.position) < bound and abs(report.base_position) < bound
            and abs(report.profit) < MAX_PROFIT and abs(report.realized) < MAX_PROFIT)


def _host(addr: str) -> str:
    return addr.rpartition(":")[0] if ":" in addr else addr


def _restarted(holder: BotState, report: Report, addr: str, silent_s: float, restart_after: float) -> bool:
    """A new boot of ``holder``'s id from the same host, with the holder silent long enough to be gone.

    Same host only: a second machine with the same id is a configuration error, not a restart, and
    stays refused. A live twin on the same host keeps heartbeating, so it is never silent this long.
    """
    host = _host(addr)
    if not host or host != _host(holder.addr) or silent_s < restart_after / 3:
        return False
    if silent_s >= restart_after:
        return True
    # On the server's host the holder's pid can be asked: gone (and not reused by the new boot) is proof.
    if (host.startswith("127.") or host == "::1") and holder.pid > 0 and holder.pid != report.pid:
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive under another user, or not ours to ask
            return False
    return False


class Registry:
    """Bots by id and markets by code. Bounded: at most ``max_bots`` bots and claimants at once,
    one market per known product (unknown codes are refused)."""

    def __init__(self, max_bots: int = 1000, *, max_markets_per_bot: int = MAX_MARKETS_PER_BOT) -> None:
        self.max_bots = max_bots
        self.max_markets_per_bot = max_markets_per_bot
        self.bots: dict[str, BotState] = {}
        self.markets: dict[str, MarketState] = {}
        #: Refused second senders by (bot id, boot), oldest first.
        self.claimants: OrderedDict[tuple[str, int], Claimant] = OrderedDict()

    # ------------------------------------------------------------------ reports
    def apply(self, report: Report, addr: str = "", now: float | None = None,
              silent_after: float = math.inf, restart_after: float = math.inf) -> Applied:
        """Take a verified report as the bot's new state (see :data:`Applied` for the refusals).

        ``silent_after``: a holder of the bot id silent this long (the eviction time) is gone, so
        a report from another boot is a restart; sooner, it is a second live sender and refused
        (unless the holder's last report said it was stopping). ``restart_after`` (a few missed
        heartbeats) shortens that for a new boot from the holder's own host: a bot killed and
        restarted at once (kill -9, OOM, a crash) is taken back within seconds instead of holding
        its market unjudged for the eviction time. On the server's own host a holder whose pid is
        gone is a restart after one missed heartbeat's worth of ``restart_after``'s silence."""
        t = time.monotonic() if now is None else now
        if not _valid(report):
            return "refused"
        h = report.header
        boot, seq = (h.boot, h.seq) if h is not None else (0, 0)
        pos, base = dec(report.position), dec(report.base_position)
        bot = self.bots.get(report.bot)
        if bot is None:
            if len(self.bots) >= self.max_bots:
                return "full"
            bot = BotState(
                bot=report.bot, market=report.market, position=pos, base_position=base, profit=report.profit,
                realized=report.realized, pid=report.pid, budget=report.budget, boot=boot, seq=seq, addr=addr,
                first_seen=t, last_seen=t, last_change=t, final=report.final, markets={report.market: t},
            )
            self.bots[report.bot] = bot
            self._drop_claimant(report.bot, boot)
            ms = self._market(report.market)
            self._set_base(ms, base, report.bot, t)
            ms.last_change = ms.last_report = t
            ms.orphaned_at = None
            log.info("bot %s joined %s with position %s (pid %d, %s)", report.bot, report.market, pos, report.pid, addr)
            return "new"
        if bot.boot != boot and bot.boot and boot:
            if not bot.final and t - bot.last_seen < silent_after and not _restarted(bot, report, addr, t - bot.last_seen,
                                                                                     restart_after):
                self._claim(report, boot, addr, t)
                return "duplicate"
            log.info("bot %s restarted (pid %d → %d)", report.bot, bot.pid, report.pid)
            self._drop_claimant(report.bot, boot)
        if len(bot.markets) > 1 or report.market not in bot.markets:  # the usual report changes nothing here
            bot.markets = {m: seen for m, seen in bot.markets.items() if t - seen < silent_after}
        if report.market not in bot.markets and len(bot.markets) >= self.max_markets_per_bot:
            return "market_cap"
        bot.markets[report.market] = t
        changed = pos != bot.position or report.market != bot.market
        if report.market != bot.market:
            # Same id, another market (a restart with another product): both totals change.
            old = self._market(bot.market)
            old.last_change = t
            bot.market = report.market
            if not self.bots_of(old.market):
                old.orphaned_at = t
        bot.position, bot.profit, bot.realized, bot.pid = pos, report.profit, report.realized, report.pid
        bot.budget, bot.boot, bot.seq, bot.addr = report.budget, boot, seq, addr
        bot.base_position = base
        bot.last_seen = t
        bot.final = report.final
        bot.reports += 1
        ms = self._market(report.market)
        ms.last_report = t
        ms.orphaned_at = None
        if self._set_base(ms, base, report.bot, t):
            changed = True
        if changed:
            bot.last_change = t
            ms.last_change = t
            return "changed"
        return "same"

    def _market(self, market: str) -> MarketState:
        # Only reached with a known product code (``_valid``): at most one market per product.
        ms = self.markets.get(market)
        if ms is None:
            ms = self.markets[market] = MarketState(market)
        return ms

    def _claim(self, report: Report, boot: int, addr: str, now: float) -> None:
        key = (report.bot, boot)
        c = self.claimants.get(key)
        if c is None:
            c = self.claimants[key] = Claimant(report.bot, boot, report.market, report.pid, addr, now, now, 0)
            if len(self.claimants) > self.max_bots:
                self.claimants.popitem(last=False)
        c.refused += 1
        c.last_seen, c.market, c.addr = now, report.market, addr

    def _drop_claimant(self, bot: str, boot: int) -> None:
        self.claimants.pop((bot, boot), None)

    def claimants_on(self, market: str) -> list[Claimant]:
        """Refused second senders whose bot id holds, or who claim, a position on ``market``."""
        out = []
        for c in self.claimants.values():
            holder = self.bots.get(c.bot)
            if c.market == market or (holder is not None and holder.market == market):
                out.append(c)
        return out

    def clear(self) -> None:
        """Forget every bot, market and claimant (benches and tools)."""
        self.bots.clear()
        self.markets.clear()
        self.claimants.clear()

    def _set_base(self, ms: MarketState, base: Decimal, bot: str, now: float) -> bool:
        if ms.base_known and ms.base == base:
            return False
        if ms.base_known:
            others = [b.bot for b in self.bots.values() if b.market == ms.market and b.bot != bot
                      and b.base_position != base]
            if others and now - ms._base_warned >= BASE_WARN_EVERY:
                ms._base_warned = now
                log.warning("%s: bots disagree on base_position (%s says %s, %s says %s); using the latest",
                            ms.market, bot, base, others[0], ms.base)
            elif not others:
                log.info("%s: base_position %s → %s", ms.market, ms.base, base)
        ms.base, ms.base_known = base, True
        return True

    # ------------------------------------------------------------------ eviction, retirement
    def evict_silent(self, evict_after: float, now: float | None = None) -> list[BotState]:
        """Remove bots (and refused claimants) silent for ``evict_after`` seconds; their market's
        total changes."""
        t = time.monotonic() if now is None else now
        for key in [k for k, c in self.claimants.items() if t - c.last_seen >= evict_after]:
            del self.claimants[key]
        gone = [b for b in self.bots.values() if t - b.last_seen >= evict_after]
        for b in gone:
            del self.bots[b.bot]
            ms = self._market(b.market)
            ms.last_change = t
            if not self.bots_of(b.market):
                ms.orphaned_at = t
        return gone

    def retire_markets(self, silent_after: float, grace: float, now: float | None = None) -> list[MarketState]:
        """Remove markets no live bot reports any more: none of its bots left, no report for
        ``silent_after`` seconds, and either a check since then found nothing to correct or
        ``grace`` more seconds have passed (the time an evicted bot's position has to be corrected;
        after it the server stops trading on a market nobody vouches for)."""
        t = time.monotonic() if now is None else now
        gone = []
        for m, ms in list(self.markets.items()):
            if self.bots_of(m):
                ms.orphaned_at = None
                continue
            if ms.orphaned_at is None:
                ms.orphaned_at = t
            if t - ms.last_report < silent_after:
                continue
            settled = ms.in_sync_at is not None and ms.in_sync_at >= ms.orphaned_at
            if settled or t - ms.orphaned_at >= grace:
                del self.markets[m]
                gone.append(ms)
        return gone

    # ------------------------------------------------------------------ checks
    def record_check(self, market: str, *, health: str, board_state: str, price: float | None,
                     exchange: Decimal | None, skip_reason: str, started: float, in_sync: bool,
                     checked_at: float | None = None, expected: Decimal | None = None) -> None:
        """One check of ``market``: what the exchange showed. ``started``: monotonic start of the
        check; ``in_sync``: the exchange was known and within the minimum size of the expected.
        ``expected``: what the check compared with (default :meth:`expected`; the server's differs
        by an adopted base)."""
        ms = self.markets.get(market)
        if ms is None:
            return
        ms.health, ms.board_state, ms.price, ms.exchange = health, board_state, price, exchange
        want = self.expected(market) if expected is None else expected
        ms.diff = exchange - want if exchange is not None else None
        ms.skip_reason = skip_reason
        ms.last_check = time.time() if checked_at is None else checked_at
        ms.in_sync_at = started if in_sync else None

    def correction_sent(self, market: str, now: float | None = None) -> None:
        """The server's correcting order on ``market`` was accepted: the fill takes a moment to
        show on the exchange, so judging holds as after any position change."""
        ms = self.markets.get(market)
        if ms is None:
            return
        ms.corrections += 1
        ms.last_change = time.monotonic() if now is None else now

    # ------------------------------------------------------------------ totals
    def bots_of(self, market: str) -> list[BotState]:
        return [b for b in self.bots.values() if b.market == market]

    def total(self, market: str) -> Decimal:
        """Σ of the bots' own positions on ``market`` (without the base)."""
        return sum((b.position for b in self.bots.values() if b.market == market), ZERO)

    def expected(self, market: str) -> Decimal:
        """What the exchange should show: Σ bots' positions + the market's base_position."""
        ms = self.markets.get(market)
        return self.total(market) + (ms.base if ms is not None else ZERO)

    def profit(self, market: str) -> float:
        return sum(b.profit for b in self.bots.values() if b.market == market)

    def budget_snapshots(self) -> list[BudgetSnapshot]:
        return [b.budget for b in self.bots.values() if b.budget is not None]
