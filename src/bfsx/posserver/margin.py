"""The account's margin, watched by the position server: keep rate, today's PnL, loss-cut.

:class:`MarginWatch` owns the account-wide margin view. Every ``pos_server_margin_interval`` it
reads ``getcollateral`` and the new rows of ``getcollateralhistory`` once for the account (the
server's own credentials and its own API budget, which the leases keep a reserve for; never per
bot), and keeps:

- collateral, open PnL, required collateral and the keep rate (``None`` while the account holds
  no CFD position: the rate is undefined then, not 0);
- the account's PnL today (JST day) = Σ today's collateral changes that are not deposits or
  withdrawals (realised PnL, fees, funding, SFD; :func:`~bfsx.bitflyer.collateral.is_transfer`)
  + the open PnL now. That is the bots' own definition (realised today + unrealised of the whole
  position), so Σ bots' PnL on CFD markets (their reports) and the account's differ only by what
  no bot counts: fees and funding they do not see, trades no bot placed, a bot not reporting.

It acts on its readings, never on a missing one (invariant 3):

- keep rate below ``pos_server_keep_rate_warn`` → one ``keep_rate_warn`` alert (again only after
  it was back ``KEEP_RATE_HYSTERESIS`` above);
- below ``pos_server_keep_rate_close_only`` → the ``keep_rate`` hold (every bot close-only), an
  alert; released at ``close_only + KEEP_RATE_HYSTERESIS``, or when flat with collateral enough
  for the position held at the hold at that rate;
- today's loss above ``pos_server_max_daily_loss`` → the ``daily_loss`` hold until the next JST
  day or :meth:`MarginWatch.resume_daily_loss` (an operator);
- a loss-cut (the keep rate below bitFlyer's ``LOSS_CUT_RATIO`` with a position, or the position
  gone with equity below that ratio of the position held at the last reading) → a ``loss_cut``
  alert, and the ``keep_rate`` hold when close-only is on.

Readers: the console and status; every reading goes to :attr:`MarginWatch.on_sample` (the server
writes InfluxDB and the history the charts read).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bfsx.account.position import jst_day
from bfsx.bitflyer.collateral import LOSS_CUT_RATIO, is_transfer
from bfsx.bitflyer.errors import BitflyerError
from bfsx.bitflyer.messages import Collateral, CollateralChange
from bfsx.bitflyer.timestamps import parse_epoch
from bfsx.posserver.controls import ALL, Controls
from bfsx.reporting.samples import AccountSample

log = logging.getLogger("bfsx.posserver.margin")

#: The hold and alert re-arm only this far (in keep rate: 0.1 = 10 points) above a threshold, so
#: a rate hovering at it does not switch the bots every poll.
KEEP_RATE_HYSTERESIS = 0.1
KEEP_RATE_HOLD = "keep_rate"
DAILY_LOSS_HOLD = "daily_loss"
#: getcollateralhistory rows per request, and requests per poll at most (a day of fills at start).
HISTORY_PAGE = 500
MAX_HISTORY_PAGES = 20
#: Failed polls in a row before a ``margin_unknown`` alert.
UNKNOWN_AFTER = 3


class MarginSettings(Protocol):
    """The trade.yaml keys the watch reads (a ``TradeConfig``), read anew at every poll (live)."""

    pos_server_margin_interval: float
    pos_server_keep_rate_warn: float
    pos_server_keep_rate_close_only: float
    pos_server_max_daily_loss: float


class CollateralSource(Protocol):
    """What the watch asks the exchange (a ``RestClient``)."""

    async def get_collateral(self) -> Collateral: ...

    async def get_collateral_history(self, *, count: int = 100, before: int | None = None,
                                     after: int | None = None) -> list[CollateralChange]: ...


def _finite(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class MarginReading:
    """One ``getcollateral`` answer, checked: JPY amounts, the keep rate as a ratio."""

    at: float  # unix
    collateral: float
    open_pnl: float
    require_collateral: float
    margin_call_amount: float

    @property
    def equity(self) -> float:
        return self.collateral + self.open_pnl

    @property
    def keep_rate(self) -> float | None:
        """``equity / required``, None without a position (bitFlyer then shows 0)."""
        return self.equity / self.require_collateral if self.require_collateral > 0 else None


def reading_of(data: object, at: float) -> MarginReading | None:
    """A reading from a ``getcollateral`` body, or None when a figure is missing or not finite."""
    if not isinstance(data, dict):
        return None
    c, p, r = (_finite(data.get(k)) for k in ("collateral", "open_position_pnl", "require_collateral"))
    if c is None or p is None or r is None or r < 0:
        return None
    return MarginReading(at, c, p, r, _finite(data.get("margin_call_amount")) or 0.0)


class MarginWatch:
    """The account's margin (see the module docstring). ``await poll()`` once, or ``run()``."""

    def __init__(
        self,
        rest: CollateralSource,
        settings: Callable[[], MarginSettings],
        controls: Controls,
        alert: Callable[[str, str], None],
        bots_pnl: Callable[[], float],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.settings = settings
        self.controls = controls
        self.alert = alert
        self.bots_pnl = bots_pnl  # Σ bots' PnL today on CFD markets, from their reports
        self.clock = clock
        self.latest: MarginReading | None = None
        self.polls = 0
        self.failures = 0  # in a row
        self.last_error = ""
        self.on_sample: Callable[[AccountSample], None] | None = None  # the server: InfluxDB, history
        # Today's collateral history, summed (never kept row by row: a busy day has many fills).
        self.day: int | None = None
        self.realized_today = 0.0
        self.transfers_today = 0.0
        self.history_complete = False  # the day's rows were all read (none before the first poll lost)
        self._last_id: int | None = None
        self._partial = False  # the first poll's history hit MAX_HISTORY_PAGES before today's start
        # Episodes (an alert once per crossing) and holds.
        self._warned = False
        self._loss_cut_seen = False
        self._held_require = 0.0  # required collateral when the keep_rate hold was set
        self._daily_hit_day: int | None = None
        self._daily_resumed_day: int | None = None
        self._unknown_alerted = False

    # ------------------------------------------------------------------ figures
    @property
    def pnl_today(self) -> float | None:
        """The account's PnL today (JPY): realised today + open PnL; None until both are known."""
        if self.latest is None or not self.history_complete:
            return None
        return self.realized_today + self.latest.open_pnl

    @property
    def keep_rate(self) -> float | None:
        return self.latest.keep_rate if self.latest is not None else None

    def status(self) -> dict[str, Any]:
        """Plain JSON values for the status query and the console."""
        r = self.latest
        bots = self.bots_pnl()
        pnl = self.pnl_today
        return {
            "known": r is not None, "at": r.at if r else None,
            "collateral": r.collateral if r else None, "open_pnl": r.open_pnl if r else None,
            "require_collateral": r.require_collateral if r else None, "keep_rate": self.keep_rate,
            "margin_call_amount": r.margin_call_amount if r else None,
            "pnl_today": pnl, "realized_today": self.realized_today, "transfers_today": self.transfers_today,
            "bots_pnl": bots, "pnl_gap": pnl - bots if pnl is not None else None,
            "failures": self.failures, "error": self.last_error, "holds": sorted({r for rs in self.controls.holds.values() for r in rs}),
        }

    # ------------------------------------------------------------------ the loop
    def interval_s(self) -> float:
        v = _finite(self.settings().pos_server_margin_interval)
        return min(max(v, 0.05), 86_400.0) if v is not None else 30.0

    async def run(self) -> None:
        """Poll forever; a failing round is logged and never ends the loop."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("margin poll failed (the next one runs as usual)")
            await asyncio.sleep(self.interval_s())

    async def poll(self) -> MarginReading | None:
        """One round: read, act on the thresholds; None (and nothing decided) when unknown."""
        now = self.clock()
        try:
            data = await self.rest.get_collateral()
            rows = await self._new_history(now)
        except BitflyerError as e:
            self._unknown(f"{type(e).__name__}: {e}")
            return None
        reading = reading_of(data, now)
        if reading is None:
            self._unknown(f"getcollateral without finite figures: {str(data)[:120]}")
            return None
        self._count_rows(rows, now)
        previous, self.latest = self.latest, reading
        self.polls += 1
        if self.failures >= UNKNOWN_AFTER or self._unknown_alerted:
            log.info("the collateral is known again")
        self.failures, self.last_error, self._unknown_alerted = 0, "", False
        self._judge(previous, reading)
        self._record(reading)
        return reading

    def _unknown(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        if self.failures == 1:
            log.warning("collateral unknown (%s): no margin decision until it is read again", why)
        if self.failures >= UNKNOWN_AFTER and not self._unknown_alerted:
            self._unknown_alerted = True
            self.alert("margin_unknown", f"collateral unreadable for {self.failures} polls ({why}); "
                                         "margin thresholds are not checked meanwhile")

    # ------------------------------------------------------------------ history
    async def _new_history(self, now: float) -> list[CollateralChange]:
        """The rows since the last poll (at the first one: back to today's JST start), newest first."""
        rows: list[CollateralChange] = []
        before: int | None = None
        start_day = jst_day(now)
        for _ in range(MAX_HISTORY_PAGES):
            page = await self.rest.get_collateral_history(count=HISTORY_PAGE, before=before, after=self._last_id)
            page = [r for r in page if isinstance(r, dict) and isinstance(r.get("id"), int)]
            rows.extend(page)
            if len(page) < HISTORY_PAGE:
                break
            before = min(r["id"] for r in page)
            if self._last_id is None and jst_day(parse_epoch(page[-1].get("date"))) < start_day:
                break  # the first poll reached yesterday: today is complete
        else:
            if self._last_id is None:
                log.warning("collateral history: more than %d rows today; today's PnL counts the newest only",
                            HISTORY_PAGE * MAX_HISTORY_PAGES)
                self._partial = True
        return rows

    def _count_rows(self, rows: list[CollateralChange], now: float) -> None:
        today = jst_day(now)
        if self.day != today:
            if self.day is not None:
                log.info("a new JST day: today's account PnL starts from 0")
            self.day, self.realized_today, self.transfers_today = today, 0.0, 0.0
            # Running since before midnight, every row of the new day is seen; at the first poll
            # only when the history reached back to the day's start.
            self.history_complete = self._last_id is not None or not self._partial
            self._partial = False
            if self._daily_hit_day is not None and self._daily_hit_day != today:
                self._daily_hit_day = None
                if self.controls.release(DAILY_LOSS_HOLD):
                    self.alert("daily_loss", "a new JST day: the daily loss hold is released")
        for r in rows:
            rid = r["id"]
            if self._last_id is not None and rid <= self._last_id:
                continue
            change = _finite(r.get("change"))
            if change is None or jst_day(parse_epoch(r.get("date"))) != today:
                continue
            if is_transfer(str(r.get("reason_code", ""))):
                self.transfers_today += change
            else:
                self.realized_today += change
        if rows:
            self._last_id = max(r["id"] for r in rows)
        elif self._last_id is None:
            self._last_id = 0  # no row at all yet: every later one is new

    # ------------------------------------------------------------------ decisions
    def _judge(self, previous: MarginReading | None, r: MarginReading) -> None:
        s = self.settings()
        warn, close = _finite(s.pos_server_keep_rate_warn) or 0.0, _finite(s.pos_server_keep_rate_close_only) or 0.0
        k = r.keep_rate
        self._loss_cut(previous, r, hold=close > 0)
        if warn > 0:
            if k is not None and k < warn and not self._warned:
                self._warned = True
                self.alert("keep_rate_warn", f"keep rate {k:.1%} is below {warn:.0%} (collateral "
                                             f"{r.collateral:,.0f} JPY, open PnL {r.open_pnl:+,.0f} JPY, "
                                             f"required {r.require_collateral:,.0f} JPY)")
            elif self._warned and (k is None or k >= warn + KEEP_RATE_HYSTERESIS):
                self._warned = False
        if close > 0 and k is not None and k < close:
            self._hold_keep_rate(r, f"keep rate {k:.1%} is below {close:.0%}")
        elif self._held():
            if close <= 0:
                self._release_keep_rate("pos_server_keep_rate_close_only is off")
            elif k is not None and k >= close + KEEP_RATE_HYSTERESIS:
                self._release_keep_rate(f"keep rate {k:.1%} is back above {close + KEEP_RATE_HYSTERESIS:.0%}")
            elif k is None and r.equity >= self._held_require * (close + KEEP_RATE_HYSTERESIS):
                self._release_keep_rate(f"flat, and the collateral {r.collateral:,.0f} JPY covers the position "
                                        "held at the hold")
        self._daily_loss(s)

    def _held(self) -> bool:
        return KEEP_RATE_HOLD in self.controls.holds.get(ALL, set())

    def _hold_keep_rate(self, r: MarginReading, why: str, *, require: float | None = None) -> None:
        self._held_require = max(self._held_require, require if require is not None else r.require_collateral)
        if self.controls.hold(KEEP_RATE_HOLD):
            self.alert("keep_rate_close_only", f"{why}: every bot goes close-only")

    def _release_keep_rate(self, why: str) -> None:
        self._held_require = 0.0
        if self.controls.release(KEEP_RATE_HOLD):
            self.alert("keep_rate_close_only", f"{why}: the close-only hold is released")

    def _loss_cut(self, previous: MarginReading | None, r: MarginReading, *, hold: bool) -> None:
        """Alert a loss-cut once per episode; ``hold``: also the keep_rate hold (close-only is on)."""
        k = r.keep_rate
        if k is not None and k < LOSS_CUT_RATIO:
            if not self._loss_cut_seen:
                self._loss_cut_seen = True
                self.alert("loss_cut", f"keep rate {k:.1%} is below the loss-cut ratio {LOSS_CUT_RATIO:.0%}: "
                                       "the exchange closes every CFD position")
                if hold:
                    self._hold_keep_rate(r, "loss-cut")
            return
        gone = previous is not None and previous.require_collateral > 0 and \
            r.require_collateral < previous.require_collateral
        if gone and previous is not None and r.equity < LOSS_CUT_RATIO * previous.require_collateral:
            if not self._loss_cut_seen:
                self._loss_cut_seen = True
                self.alert("loss_cut", f"the account's positions were closed with equity {r.equity:,.0f} JPY, "
                                       f"below {LOSS_CUT_RATIO:.0%} of the {previous.require_collateral:,.0f} JPY "
                                       "they required: a loss-cut")
                if hold:
                    self._hold_keep_rate(r, "loss-cut", require=previous.require_collateral)
            return
        if k is not None and k >= LOSS_CUT_RATIO + KEEP_RATE_HYSTERESIS:
            self._loss_cut_seen = False

    def _daily_loss(self, s: MarginSettings) -> None:
        limit = _finite(s.pos_server_max_daily_loss) or 0.0
        pnl = self.pnl_today
        if limit <= 0 or pnl is None or self.day is None:
            return
        if self._daily_hit_day == self.day and DAILY_LOSS_HOLD not in self.controls.holds.get(ALL, set()):
            # Released by someone else (an operator's resume): not held again today.
            self._daily_resumed_day, self._daily_hit_day = self.day, None
            log.info("the daily loss hold was released by an operator: not held again today")
        if -pnl > limit and self._daily_hit_day != self.day and self._daily_resumed_day != self.day:
            self._daily_hit_day = self.day
            if self.controls.hold(DAILY_LOSS_HOLD):
                self.alert("daily_loss", f"today's account PnL {pnl:+,.0f} JPY is a loss above {limit:,.0f} JPY: "
                                         "every bot close-only until the next JST day (or an operator resume)")

    def resume_daily_loss(self) -> bool:
        """An operator's resume: release the daily loss hold for the rest of this JST day."""
        self._daily_resumed_day = self.day
        self._daily_hit_day = None
        return self.controls.release(DAILY_LOSS_HOLD)

    def _record(self, r: MarginReading) -> None:
        sample = AccountSample(
            ts=r.at, collateral=r.collateral, open_pnl=r.open_pnl, require_collateral=r.require_collateral,
            keep_rate=r.keep_rate, pnl_today=self.pnl_today, bots_pnl=self.bots_pnl())
        if self.on_sample is not None:
            self.on_sample(sample)
