"""The backtest's report: what it measures while the replay runs, and how it is shown.

Owns :class:`Collector` (the bot's orders as the desk answered them, its fills with maker / taker
and the mid ``adverse_s`` seconds later, a sample of position and PnL every ``sample_interval_s``),
:func:`build_report` (the numbers, a plain dict: ``report.json``), :func:`render_text` (the
terminal summary) and :func:`write_charts` (PNG files in the style of the position server's,
``reporting.charts``). Every number comes from the virtual clock and the seeded / recorded inputs:
the same inputs give the same ``report.json``, byte for byte.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bfsx import clock
from bfsx.account.orders import Fill, Order, OrderState
from bfsx.bitflyer.timestamps import JST

if TYPE_CHECKING:
    from bfsx.bot.runtime import BotRuntime

REPORT_FORMAT = "bfsx-backtest-report"
REPORT_VERSION = 1
MAX_CHART_POINTS = 2000
MAX_SAMPLES = 100_000  # chart samples kept (then halved): a month at 1 s is 2.6 M
MAX_FILL_ROWS = 200_000  # fills.csv rows kept
FILLED_ORDERS_WINDOW = 100_000  # recent filled orders remembered, for the fill rate
_NUMBER = re.compile(r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?")


@dataclass(slots=True)
class FillRecord:
    """One of the bot's fills as the report needs it."""

    t: float  # when the bot learnt of it (virtual clock)
    exec_t: float  # the exchange's execution time (the event's date)
    side: str
    price: float
    size: float
    commission_jpy: float
    maker: bool | None
    acceptance_id: str
    mid_later: float | None = None


@dataclass(slots=True)
class Sample:
    t: float
    position: float
    realized: float
    unrealized: float
    mid: float | None


@dataclass
class Collector:
    """Watches one runtime during a backtest (read-only: it never changes what the bot does).

    Bounded whatever the length of the run: the figures are kept as running sums (per JST hour at
    most), the fill rows for ``fills.csv`` up to :data:`MAX_FILL_ROWS` (then counted as left out),
    the samples for the charts up to :data:`MAX_SAMPLES` (then every other one is dropped and the
    interval doubles), the orders already filled in a window of :data:`FILLED_ORDERS_WINDOW` ids.
    """

    adverse_s: float
    sample_interval_s: float
    mid: Callable[[], float | None]
    maker_of: Callable[[int], bool | None]
    fills: list[FillRecord] = field(default_factory=list)
    fill_rows_left_out: int = 0
    samples: list[Sample] = field(default_factory=list)
    orders_asked: int = 0
    orders_accepted: int = 0
    orders_refused: int = 0
    orders_failed: int = 0
    orders_filled: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    fill_count: int = 0
    fill_volume: float = 0.0
    maker: int = 0
    taker: int = 0
    adverse_sum_jpy: float = 0.0
    adverse_count: int = 0
    per_hour: dict[str, list[float]] = field(default_factory=dict)  # hour -> [fills, volume, fees, equity at end]
    peak_equity: float = -math.inf
    max_drawdown: float = 0.0
    max_long: float = 0.0
    max_short: float = 0.0
    on_sample: Callable[[float], None] | None = None
    end_mono_s: float = math.inf  # no sample at or after the market's end (shutdown is not trading)
    _hour_n: int | None = field(default=None, init=False, repr=False)  # the hour of _hour_label (epoch hours)
    _hour_label: str = field(default="", init=False, repr=False)
    _filled: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def attach(self, rt: BotRuntime, loop: asyncio.AbstractEventLoop) -> None:
        """Count every order result the desk gives the strategy, every fill, and sample."""
        self._rt = rt
        send = rt.desk.send_order

        async def counted(*args: Any, **kwargs: Any) -> Order:
            order = await send(*args, **kwargs)
            self._count(order)
            return order

        rt.desk.send_order = counted  # type: ignore[method-assign]  # the same desk, counted
        rt.add_listener("fill", self._on_fill)
        self._loop = loop
        self._t0 = loop.time()
        self._interval_s = self.sample_interval_s
        loop.call_at(self._t0, self._sample, 0)

    def _count(self, order: Order) -> None:
        self.orders_asked += 1
        if order.state == OrderState.REFUSED:
            self.orders_refused += 1
            key = _NUMBER.sub("N", order.reason)
            self.refusals[key] = self.refusals.get(key, 0) + 1
        elif order.state == OrderState.FAILED:
            self.orders_failed += 1
        else:
            self.orders_accepted += 1

    def _hour(self, t: float) -> list[float]:
        hour = math.floor(t / 3600)  # JST is a whole number of hours from UTC: the same boundaries
        if hour != self._hour_n:  # a reading every sample: the label is formatted once an hour
            self._hour_n, self._hour_label = hour, datetime.fromtimestamp(t, JST).strftime("%Y-%m-%d %H:00")
        h = self._hour_label
        row = self.per_hour.get(h)
        if row is None:
            prev = next(reversed(self.per_hour.values()))[3] if self.per_hour else 0.0
            row = self.per_hour[h] = [0, 0.0, 0.0, prev]
        return row

    def _on_fill(self, fill: Fill) -> None:
        spot = bool(fill.product) and not fill.product.startswith("FX_")
        commission_jpy = fill.commission * fill.price if spot else fill.commission
        maker = self.maker_of(fill.exec_id)
        now = clock.time()
        rec = FillRecord(now, fill.time, fill.side, fill.price, fill.size, commission_jpy, maker, fill.acceptance_id)
        if len(self.fills) < MAX_FILL_ROWS:
            self.fills.append(rec)
        else:
            self.fill_rows_left_out += 1
        self.fill_count += 1
        self.fill_volume += fill.size
        if maker:
            self.maker += 1
        elif maker is False:
            self.taker += 1
        row = self._hour(now)
        row[0] += 1
        row[1] += fill.size
        row[2] += commission_jpy
        filled = self._filled
        if fill.acceptance_id not in filled:
            self.orders_filled += 1
            filled[fill.acceptance_id] = None
            if len(filled) > FILLED_ORDERS_WINDOW:
                filled.popitem(last=False)
        self._loop.call_later(self.adverse_s, self._mid_later, rec)

    def _mid_later(self, rec: FillRecord) -> None:
        mid = rec.mid_later = self.mid()
        if mid is not None:
            self.adverse_sum_jpy += (rec.price - mid) * (1 if rec.side == "BUY" else -1)
            self.adverse_count += 1

    def observe_equity(self, equity: float, position: float, t: float) -> None:
        """One reading of total PnL and position: drawdown, extremes, the hour's closing equity."""
        self.peak_equity = max(self.peak_equity, equity)
        self.max_drawdown = max(self.max_drawdown, self.peak_equity - equity)
        self.max_long = max(self.max_long, position)
        self.max_short = min(self.max_short, position)
        self._hour(t)[3] = equity

    def _sample(self, k: int) -> None:
        if self._loop.time() >= self.end_mono_s:
            return
        rt = self._rt
        mid = self.mid()
        pos = rt.position
        now = clock.time()
        sample = Sample(now, pos.size, pos.realized_pnl, pos.unrealized(mid) if mid else 0.0, mid)
        self.observe_equity(sample.realized + sample.unrealized, sample.position, now)
        samples = self.samples
        if k % round(self._interval_s / self.sample_interval_s) == 0:
            samples.append(sample)
            if len(samples) >= MAX_SAMPLES:  # halve the chart's resolution, keep its span
                del samples[1::2]
                self._interval_s *= 2
        if self.on_sample is not None:
            self.on_sample(self._loop.time() - self._t0)
        self._loop.call_at(self._t0 + (k + 1) * self.sample_interval_s, self._sample, k + 1)


def _r(x: float, nd: int = 2) -> float:
    """Rounded for the report (and -0.0 folded to 0.0, so identical runs print identical bytes)."""
    v = round(x, nd)
    return 0.0 if v == 0 else v


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, JST).isoformat(timespec="seconds")


def build_report(col: Collector, rt: BotRuntime, *, meta: dict[str, Any], model: dict[str, Any],
                 start_s: float, end_s: float) -> dict[str, Any]:
    """The report as a plain dict (``report.json``)."""
    pos = rt.position
    mid = col.mid()
    realized = pos.realized_pnl
    unrealized = pos.unrealized(mid) if mid else 0.0
    col.observe_equity(realized + unrealized, pos.size, end_s - 1e-6)  # the end, in the last hour
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        **meta,
        "model": model,
        "period": {"start": _iso(start_s), "end": _iso(end_s), "seconds": _r(end_s - start_s, 3)},
        "pnl": {
            "total": _r(realized + unrealized), "realized": _r(realized), "unrealized": _r(unrealized),
            "fees": _r(pos.commission), "max_drawdown": _r(col.max_drawdown),
        },
        "position": {"final": _r(pos.size, 8), "max_long": _r(col.max_long, 8), "max_short": _r(col.max_short, 8)},
        "orders": {
            "asked": col.orders_asked, "accepted": col.orders_accepted, "refused": col.orders_refused,
            "failed": col.orders_failed, "refusals": dict(sorted(col.refusals.items())),
            "filled": col.orders_filled,
            "fill_rate": _r(col.orders_filled / col.orders_accepted, 4) if col.orders_accepted else 0.0,
        },
        "fills": {
            "count": col.fill_count, "volume": _r(col.fill_volume, 8), "maker": col.maker, "taker": col.taker,
            "adverse_after_s": col.adverse_s,
            "adverse_move_mean_jpy": _r(col.adverse_sum_jpy / col.adverse_count) if col.adverse_count else 0.0,
            "csv_rows_left_out": col.fill_rows_left_out,
        },
        "per_hour": _per_hour(col),
    }


def _per_hour(col: Collector) -> list[dict[str, Any]]:
    rows, prev = [], 0.0
    for h, (fills, volume, fees, equity) in col.per_hour.items():  # in time order
        rows.append({"hour": h, "fills": int(fills), "volume": _r(volume, 8), "fees": _r(fees), "pnl": _r(equity - prev)})
        prev = equity
    return rows


def report_bytes(report: dict[str, Any]) -> bytes:
    """``report.json``: sorted keys, indented, newline-terminated (byte-identical for equal reports)."""
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def fills_csv(col: Collector) -> bytes:
    """``fills.csv``: one line per fill (exchange time, side, price, size, fee in JPY, maker)."""
    lines = ["exec_time,side,price,size,fee_jpy,maker,acceptance_id"]
    for f in col.fills:
        maker = "" if f.maker is None else ("maker" if f.maker else "taker")
        lines.append(f"{f.exec_t:.6f},{f.side},{f.price:g},{f.size:.8g},{f.commission_jpy:.4f},{maker},{f.acceptance_id}")
    return ("\n".join(lines) + "\n").encode()


def render_text(report: dict[str, Any]) -> str:
    """The terminal summary."""
    p, o, f, m = report["pnl"], report["orders"], report["fills"], report["model"]
    lines = [
        f"backtest {report['strategy']} on {report['product']}  {report['period']['start']} .. "
        f"{report['period']['end']} ({report['period']['seconds'] / 3600:.2f} h)",
        f"  PnL {p['total']:+,.0f} JPY (realized {p['realized']:+,.0f}, unrealized {p['unrealized']:+,.0f}), "
        f"fees {p['fees']:,.0f}, max drawdown {p['max_drawdown']:,.0f}",
        f"  orders {o['asked']} asked, {o['accepted']} accepted, {o['refused']} refused, {o['failed']} failed; "
        f"fill rate {o['fill_rate']:.1%}",
        f"  fills {f['count']} ({f['maker']} maker / {f['taker']} taker), volume {f['volume']:g}, "
        f"adverse move after {f['adverse_after_s']:g} s {f['adverse_move_mean_jpy']:+,.1f} JPY",
        f"  position final {report['position']['final']:+g}, max long {report['position']['max_long']:+g}, "
        f"max short {report['position']['max_short']:+g}",
    ]
    for reason, n in o["refusals"].items():
        lines.append(f"  refused {n}x: {reason}")
    lines.append(f"  model: {m['market']} market, queue {m['queue']}, {m['latency']}, fees {m['fees']}")
    if report["per_hour"]:
        lines.append("  hour (JST)          fills     volume          PnL")
        for row in report["per_hour"]:
            lines.append(f"  {row['hour']}  {row['fills']:>6} {row['volume']:>10.4f} {row['pnl']:>+12,.0f}")
    return "\n".join(lines)


def write_charts(col: Collector, report: dict[str, Any], out: Path) -> list[str]:
    """``pnl.png`` (position and PnL, the bot chart of ``reporting.charts``) and ``per_hour.png``."""
    from bfsx.reporting.charts import render_bot_chart
    from bfsx.reporting.samples import BotSample

    step = max(1, len(col.samples) // MAX_CHART_POINTS)
    samples = [
        BotSample(ts=s.t, bot=f"backtest {report['strategy']}", market=report["product"], position=s.position,
                  profit=s.realized + s.unrealized)
        for s in col.samples[::step]
    ]
    names = []
    if samples:
        hours = max((samples[-1].ts - samples[0].ts) / 3600, 1 / 60)
        (out / "pnl.png").write_bytes(render_bot_chart(samples[0].bot, samples, hours, now=samples[-1].ts))
        names.append("pnl.png")
    if report["per_hour"]:
        (out / "per_hour.png").write_bytes(_per_hour_png(report))
        names.append("per_hour.png")
    return names


def _per_hour_png(report: dict[str, Any]) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bfsx.reporting.charts import GAIN, GRID, INK, LOSS, MUTED

    rows = report["per_hour"]
    fig = Figure(figsize=(12, 8), dpi=100)
    FigureCanvasAgg(fig)
    ax_pnl, ax_fills = fig.subplots(2, 1, sharex=True)
    x = list(range(len(rows)))
    pnl = [r["pnl"] for r in rows]
    ax_pnl.bar(x, pnl, color=[GAIN if v >= 0 else LOSS for v in pnl])
    ax_pnl.axhline(0, color=MUTED, linewidth=1.2)
    ax_pnl.set_ylabel("PnL (JPY)", color=INK, fontsize=16)
    ax_pnl.set_title(f"backtest {report['strategy']} · {report['product']} · per hour (JST)", color=INK, fontsize=20)
    ax_fills.bar(x, [r["fills"] for r in rows], color=MUTED)
    ax_fills.set_ylabel("fills", color=INK, fontsize=16)
    ax_fills.set_xticks(x, [r["hour"][11:13] for r in rows])
    for ax in (ax_pnl, ax_fills):
        ax.grid(True, color=GRID)
        ax.set_axisbelow(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
