"""The position server's console: a live rich table on a terminal, plain log lines otherwise.

Bots (market, position, profit, API budget, seconds since their last report) and markets (total
position, exchange position, diff, consecutive count, total profit), plus the counters: bad
packets by reason, reports, corrections, evictions, and the bot ids claimed by two live senders;
the account's margin (keep rate, collateral, open PnL, PnL today against Σ bots') and the
close-only holds.

Every cell is a :class:`rich.text.Text`: ids, markets and reasons come from the network and are
shown literally, never read as console markup (``evil[/b]`` would otherwise break the render).
A render that fails anyway is logged once and never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Console as RichConsole
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from bfsx.posserver.server import CheckResult, PosServer

log = logging.getLogger("bfsx.posserver.console")


def _size(x: Decimal | float | None) -> str:
    if x is None:
        return "?"
    return f"{float(x):+.8f}".rstrip("0").rstrip(".") if x else "0"


def _jpy(x: float) -> str:
    return f"{x:+,.0f}"


class Console:
    """Shows the server's state; ``live`` defaults to "stdout is a terminal"."""

    def __init__(self, server: PosServer, *, live: bool | None = None, refresh: float = 1.0) -> None:
        self.server = server
        self.live = sys.stdout.isatty() if live is None else live
        self.refresh = refresh
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        if not self.live:
            return
        self._live = Live(self.render(), console=RichConsole(), auto_refresh=False, transient=False)
        self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._refresh(), name="posserver-console")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._live is not None:
            self._update()
            try:
                self._live.stop()
            except Exception:  # the server's shutdown (history, sockets) comes after this
                log.exception("closing the live table failed")
            self._live = None

    def note(self, text: str) -> None:
        """One line above the live table (or on stdout when there is none), shown literally."""
        if self._live is not None:
            self._live.console.print(Text(text))
        else:
            print(text, flush=True)

    def _update(self) -> None:
        """Redraw the live table; a failure is logged once (until a redraw works again)."""
        if self._live is None:
            return
        try:
            self._live.update(self.render(), refresh=True)
        except Exception:
            if not self._failing:
                self._failing = True
                log.exception("the live table cannot be drawn (logged once; the server goes on)")
        else:
            self._failing = False

    async def _refresh(self) -> None:
        while self._live is not None:
            self._update()
            await asyncio.sleep(self.refresh)

    def margin_line(self) -> Text:
        """The account's margin in one line (red while a hold is on or the keep rate is below warn)."""
        s = self.server
        m = s.margin.status()
        holds = s.controls.summary()
        if not m["known"]:
            text = f"margin: unknown ({m['error'] or 'not read yet'})"
        else:
            k = m["keep_rate"]
            rate = "- (flat)" if k is None else f"{k:.1%}"
            pnl = m["pnl_today"]
            today = "?" if pnl is None else _jpy(pnl)
            gap = "" if m["pnl_gap"] is None else f" (gap {_jpy(m['pnl_gap'])}: fees, funding, foreign trades)"
            text = (f"margin: keep rate {rate} | collateral {m['collateral']:,.0f} | open PnL {_jpy(m['open_pnl'])} | "
                    f"required {m['require_collateral']:,.0f} | PnL today {today} vs Σ bots {_jpy(m['bots_pnl'])}{gap}")
        if holds:
            text += f" | HOLDS: {holds}"
        warn = s.config.pos_server_keep_rate_warn
        low = m["keep_rate"] is not None and warn and m["keep_rate"] < warn
        return Text(text, style="bold red" if holds or low else "")

    def on_check(self, results: Sequence[CheckResult]) -> None:
        """After every check: plain lines when there is no live table."""
        if self.live:
            return
        if self.server.margin.polls or self.server.controls.scopes():  # holds, pauses, freezes (bfsx ctl)
            log.info("%s", self.margin_line().plain)
        for r in results:
            diff = r.exchange - r.expected if r.exchange is not None else None
            d = self.server._drift.get(r.market)
            mode = self.server.controls.bot_control(r.market).mode  # what bfsx ctl, a freeze or a margin guard hold
            log.info(
                "%s: Σ bots %s (%d) + base %s = %s | exchange %s | diff %s | streak %d | profit %s%s%s%s",
                r.market, _size(r.total), len(self.server.registry.bots_of(r.market)), _size(r.base),
                _size(r.expected), _size(r.exchange), _size(diff), d.streak if d else 0, _jpy(r.profit),
                f" | bots {mode}" if mode != "run" else "",
                f" | skip: {r.skip_reason}" if r.skip_reason else "",
                f" | CORRECTION {r.correction}" if r.correction else "",
            )

    def render(self) -> Group:
        s = self.server
        now_m = time.monotonic()
        bots = Table(title="bots", expand=True, title_justify="left")
        for col, just in (("bot", "left"), ("market", "left"), ("position", "right"), ("profit", "right"),
                          ("API budget", "right"), ("since report", "right")):
            bots.add_column(col, justify=just)  # type: ignore[arg-type]
        evict = s.config.pos_server_evict_after
        for b in sorted(s.registry.bots.values(), key=lambda b: (b.market, b.bot)):
            age = now_m - b.last_seen
            style = "red" if age > evict / 2 else ("yellow" if age > 3 * s.config.pos_server_report_interval else "")
            bots.add_row(
                Text(b.bot), Text(b.market), Text(_size(b.position)),
                Text(_jpy(b.profit), style="green" if b.profit >= 0 else "red"),
                Text("-" if b.api_remaining is None else f"{b.api_remaining} ({b.budget.advice if b.budget else ''})"),
                Text(f"{age:.1f} s", style=style),
            )
        markets = Table(title="markets", expand=True, title_justify="left")
        for col in ("market", "total", "base", "exchange", "diff", "consecutive", "profit", "bots", "status"):
            markets.add_column(col, justify="left" if col in ("market", "bots", "status") else "right")
        for m, ms in sorted(s.registry.markets.items()):
            d = s._drift.get(m)
            streak = d.streak if d is not None else 0
            diff = ms.diff
            control = s.controls.bot_control(m)
            frozen = s.controls.frozen_why(m) is not None
            mode = ("FROZEN, " if frozen else "") + control.mode
            markets.add_row(
                Text(m), Text(_size(s.registry.total(m))), Text(_size(s.base_of(m))), Text(_size(ms.exchange)),
                Text(_size(diff), style="red" if diff else ""),
                Text(f"{streak}/{s.config.pos_server_consecutive}"),
                Text(_jpy(s.registry.profit(m)), style="green" if s.registry.profit(m) >= 0 else "red"),
                Text(mode, style="bold red" if frozen else ("yellow" if control.mode != "run" else "")),
                Text(ms.skip_reason or ("ok" if ms.last_check else "waiting for the first check")),
            )
        budget, n = s.account_budget()
        bad = ", ".join(f"{k} {v}" for k, v in s.bad.items() if v) or "none"
        c = s.counters
        footer = Text(
            f"account API: {budget.private_remaining} private left, advice {budget.advice} ({n} bots) | "
            f"reports {c['reports']} | corrections {c['corrections']} | evictions {c['evictions']} | "
            f"duplicates refused {c['duplicates']} | bad packets: {bad} | {s.host}:{s.port}"
        )
        parts: list[Table | Text] = [bots, markets, self.margin_line(), footer]
        for cl in s.registry.claimants.values():
            line = Text("DUPLICATE bot id ", style="bold red")
            line.append(cl.bot)  # appended as plain text: never markup
            line.append(f": a second live sender (boot {cl.boot}, pid {cl.pid}, {cl.addr}) is refused "
                        f"({cl.refused} reports, last {now_m - cl.last_seen:.1f} s ago)")
            parts.append(line)
        return Group(*parts)
