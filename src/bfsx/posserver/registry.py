"""The position server's state: the bots (their latest absolute report) and the totals per market.

Only the server's event loop touches it; every method is synchronous and O(bots of one market) at
most, so a report is applied the moment its datagram is decoded.

``base_position`` is reported per bot and applied once per market (docs/protocol.md §5): the
position the exchange should show is ``Σ bots' positions + base``, where ``base`` is the one the
market's latest report stated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from bfsx.bitflyer.budget import BudgetSnapshot
from bfsx.posserver.protocol import Report

log = logging.getLogger("bfsx.posserver")

ZERO = Decimal(0)
Applied = Literal["new", "changed", "same", "full"]
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
    _base_warned: float = field(default=0.0, repr=False)


class Registry:
    """Bots by id and markets by code. Bounded: at most ``max_bots`` bots at once."""

    def __init__(self, max_bots: int = 1000) -> None:
        self.max_bots = max_bots
        self.bots: dict[str, BotState] = {}
        self.markets: dict[str, MarketState] = {}

    # ------------------------------------------------------------------ reports
    def apply(self, report: Report, addr: str = "", now: float | None = None) -> Applied:
        """Take a verified report as the bot's new state. ``full`` = refused, too many bots."""
        t = time.monotonic() if now is None else now
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
                first_seen=t, last_seen=t, last_change=t,
            )
            self.bots[report.bot] = bot
            self._set_base(self._market(report.market), base, report.bot, t)
            self._market(report.market).last_change = t
            log.info("bot %s joined %s with position %s (pid %d, %s)", report.bot, report.market, pos, report.pid, addr)
            return "new"
        if bot.boot != boot and bot.boot:
            log.info("bot %s restarted (pid %d → %d)", report.bot, bot.pid, report.pid)
        changed = pos != bot.position or report.market != bot.market
        if report.market != bot.market:
            # Same id, another market (a restart with another product): both totals change.
            self._market(bot.market).last_change = t
            bot.market = report.market
        bot.position, bot.profit, bot.realized, bot.pid = pos, report.profit, report.realized, report.pid
        bot.budget, bot.boot, bot.seq, bot.addr = report.budget, boot, seq, addr
        bot.base_position = base
        bot.last_seen = t
        bot.reports += 1
        ms = self._market(report.market)
        if self._set_base(ms, base, report.bot, t):
            changed = True
        if changed:
            bot.last_change = t
            ms.last_change = t
            return "changed"
        return "same"

    def _market(self, market: str) -> MarketState:
        ms = self.markets.get(market)
        if ms is None:
            ms = self.markets[market] = MarketState(market)
        return ms

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

    def restore_market(self, market: str, base: Decimal) -> None:
        """A market known from history (before a restart): its base, no bots yet."""
        ms = self._market(market)
        if not ms.base_known:
            ms.base, ms.base_known = base, True

    # ------------------------------------------------------------------ eviction
    def evict_silent(self, evict_after: float, now: float | None = None) -> list[BotState]:
        """Remove bots silent for ``evict_after`` seconds; their market's total changes."""
        t = time.monotonic() if now is None else now
        gone = [b for b in self.bots.values() if t - b.last_seen >= evict_after]
        for b in gone:
            del self.bots[b.bot]
            self._market(b.market).last_change = t
        return gone

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
