"""Position / PnL charts as PNG bytes, drawn to be read in a Discord preview on a phone.

Pure functions on plain samples. They use matplotlib's object API (``Figure`` + Agg canvas, never
pyplot), so they are safe to call from a thread: the position server runs them through
``loop.run_in_executor`` (see :func:`render_async`). Every style value is passed explicitly instead
of through ``rcParams`` because the rc dict is process-global and not thread-safe.

Times are drawn in JST. The x axis spans ``[now - period_hours, now]`` when the data covers the
period; a history much shorter than that (a server that just started, the demo) is zoomed to
its own span (at least :data:`MIN_SPAN` seconds) rather than squeezed against the right edge.
The last sample is carried forward to ``now`` (step plots) and the last sample before the window
is carried in from the left edge. Header texts are measured after layout and shrunk (or, as a last
resort, shortened with "…") so long market names and big numbers stay inside the image.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image

from bfsx.bitflyer.timestamps import JST
from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

__all__ = [
    "AccountSample",
    "BotSample",
    "MarketSample",
    "build_account_figure",
    "build_bot_figure",
    "build_market_figure",
    "build_pnl_bitflyer_figure",
    "format_jpy",
    "format_size",
    "render_account_chart",
    "render_async",
    "render_bot_chart",
    "render_market_chart",
    "render_pnl_bitflyer",
]

FloatArray = npt.NDArray[np.float64]

# 1200x800 px: 3:2 is what Discord previews at full width on a phone.
FIG_SIZE: Final = (12.0, 8.0)
DPI: Final = 100
# Above this many points a series is reduced to a per-pixel-column envelope before drawing.
MAX_POINTS: Final = 3000
_BUCKETS: Final = 1000
# A history shorter than ZOOM_BELOW of the period is drawn over its own span, never under MIN_SPAN
# seconds (one fresh sample still gets a readable axis).
MIN_SPAN: Final = 120.0
ZOOM_BELOW: Final = 0.8
# Header texts keep this far from the image edges (fraction of the width) and never shrink
# below MIN_FONT points.
EDGE: Final = 0.04
MIN_FONT: Final = 11.0
# Value ticks on 1, 2, 2.5 and 5 multiples (matplotlib's default also allows 1.5, 3, 4, 6, 8:
# -0.024 BTC or -4,500 JPY steps read badly at a glance).
NICE_STEPS: Final = (1.0, 2.0, 2.5, 5.0, 10.0)

# Light theme (market and bot charts).
INK = "#1f2430"
MUTED = "#6b7280"
GRID = "#e5e7eb"
POSITION = "#2563eb"
EXCHANGE = "#111827"
PRICE = "#f59e0b"
GAIN = "#16a34a"
LOSS = "#dc2626"

# bitFlyer mobile-app style (dark).
BF_BACKGROUND = "#151a26"
BF_GRID = "#2a3142"
BF_TEXT = "#e6e9ef"
BF_MUTED = "#8b93a7"
BF_GAIN = "#2ebd85"
BF_LOSS = "#f6465d"

TITLE_SIZE = 30
HEAD_SIZE = 20
LABEL_SIZE = 18
TICK_SIZE = 16
LEGEND_SIZE = 15
LINE_WIDTH = 3.0


# --------------------------------------------------------------------------- formatting


def format_jpy(value: float, *, signed: bool = True) -> str:
    """``+12,345 JPY`` / ``-987 JPY`` / ``0 JPY`` (rounded to the yen, never ``-0``)."""
    rounded = round(value)
    if rounded == 0:
        return "0 JPY"
    return f"{rounded:+,d} JPY" if signed else f"{rounded:,d} JPY"


def format_size(value: float, unit: str = "") -> str:
    """A signed size with up to 8 decimals and no trailing zeros: ``+0.12 BTC``, ``0 BTC``."""
    text = f"{value:+,.8f}".rstrip("0").rstrip(".")
    if text in ("+0", "-0"):
        text = "0"
    return f"{text} {unit}".rstrip()


def base_unit(market: str) -> str:
    """The traded currency of a product code: ``FX_BTC_JPY`` → ``BTC``; ``""`` when unknown."""
    parts = market.upper().split("_")
    if parts and parts[0] == "FX":
        parts = parts[1:]
    return parts[0] if len(parts) >= 2 else ""


def _jpy_tick(value: float, _pos: int | None = None) -> str:
    if abs(value) < 0.005:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _size_tick(value: float, _pos: int | None = None) -> str:
    text = f"{value:,.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("0", "-0") else text


def _span_text(start: float, end: float) -> str:
    # To the nearest minute: a zoomed window starts a few seconds before its first sample.
    a = datetime.fromtimestamp(round(start / 60) * 60, JST)
    b = datetime.fromtimestamp(round(end / 60) * 60, JST)
    right = b.strftime("%H:%M") if a.date() == b.date() else b.strftime("%m/%d %H:%M")
    return f"{a:%m/%d %H:%M} – {right} JST"


def _period_text(hours: float) -> str:
    minutes = hours * 60
    if minutes < 59.5:
        return f"last {max(1, round(minutes))} min"
    return f"last {round(hours, 1):g} h"


# --------------------------------------------------------------------------- time axis


def _to_num(ts: FloatArray | float) -> Any:
    """Unix seconds → matplotlib date numbers (days since the 1970 epoch, mpl's default)."""
    return np.asarray(ts, dtype=np.float64) / 86400.0


def _time_locator(period_hours: float) -> mdates.DateLocator:
    """Ticks on round JST clock times, about 4-8 per axis from 2 minutes up to several days."""
    seconds = period_hours * 3600
    if seconds < 3000:  # a zoomed short history: 30 s .. 10 min steps
        for step in (30, 60, 120, 300, 600):
            if seconds / step <= 8:
                break
        if step < 60:
            return mdates.SecondLocator(bysecond=range(0, 60, step), tz=JST)  # type: ignore[no-untyped-call]
        return mdates.MinuteLocator(byminute=range(0, 60, step // 60), tz=JST)  # type: ignore[no-untyped-call]
    if period_hours <= 1.5:
        return mdates.MinuteLocator(byminute=[0, 15, 30, 45], tz=JST)  # type: ignore[no-untyped-call]
    if period_hours <= 3.5:
        return mdates.MinuteLocator(byminute=[0, 30], tz=JST)  # type: ignore[no-untyped-call]
    for step, limit in ((1, 7.5), (2, 14.0), (3, 20.0), (4, 30.0), (6, 44.0), (8, 60.0), (12, 96.0)):
        if period_hours <= limit:
            return mdates.HourLocator(byhour=range(0, 24, step), tz=JST)  # type: ignore[no-untyped-call]
    return mdates.DayLocator(  # type: ignore[no-untyped-call]
        interval=max(1, round(period_hours / 24 / 6)), tz=JST
    )


def _time_tick(value: float, _pos: int | None = None) -> str:
    when = datetime.fromtimestamp(round(value * 86400.0), JST)
    if when.second:
        return when.strftime("%H:%M:%S")  # only on a zoomed axis of a few minutes
    # A new JST day shows the date instead of 00:00, so multi-day spans stay readable.
    return when.strftime("%m/%d") if (when.hour, when.minute) == (0, 0) else when.strftime("%H:%M")


def _setup_time_axis(ax: Axes, start: float, end: float, period_hours: float, color: str) -> None:
    ax.set_xlim(_to_num(start), _to_num(end))
    ax.xaxis.set_major_locator(_time_locator(period_hours))
    ax.xaxis.set_major_formatter(FuncFormatter(_time_tick))
    ax.set_xlabel("JST", fontsize=TICK_SIZE, color=color, loc="right", labelpad=2)


def _style_axes(ax: Axes, *, text: str, grid: str, face: str | None = None) -> None:
    if face is not None:
        ax.set_facecolor(face)
    ax.tick_params(labelsize=TICK_SIZE, colors=text, length=5, width=1.2)
    ax.grid(True, color=grid, linewidth=1.0)
    ax.set_axisbelow(True)
    for name, spine in ax.spines.items():
        spine.set_visible(name in ("bottom", "left"))
        spine.set_color(grid)
        spine.set_linewidth(1.2)


# --------------------------------------------------------------------------- series helpers


@dataclass(frozen=True, slots=True)
class _Window:
    """The drawn time span: ``hours`` is its length (the period, or less when zoomed)."""

    start: float
    end: float
    hours: float


def _window(
    period_hours: float, now: float | None, last_ts: float | None, first_ts: float | None = None
) -> _Window:
    """``[now - period, now]``, or the data's own span when ``first_ts`` is well inside the period.

    A sample at or before the period's start (carried in) means the data covers the whole period.
    """
    hours = period_hours if period_hours > 0 and math.isfinite(period_hours) else 6.0
    end = time.time() if now is None else now
    if last_ts is not None and last_ts > end:
        end = last_ts  # a sample from "the future" (clock skew) still shows
    start = end - hours * 3600.0
    if first_ts is not None and first_ts > start:
        # A little room left of the first sample, so it does not sit on the axis.
        span = max((end - first_ts) * 1.04, MIN_SPAN)
        if span < ZOOM_BELOW * hours * 3600.0:
            return _Window(end - span, end, span / 3600.0)
    return _Window(start, end, hours)


def _ts_range(stamps: Iterable[float]) -> tuple[float | None, float | None]:
    """(last, first) sample time, as :func:`_window` takes them; (None, None) when empty."""
    values = list(stamps)
    return (max(values), min(values)) if values else (None, None)


def _select(ts: FloatArray, start: float) -> npt.NDArray[np.intp]:
    """Indices of the samples in the window, plus the last one before it (carried in)."""
    first = int(np.searchsorted(ts, start, side="left"))
    return np.arange(max(0, first - 1), len(ts))


def _envelope(
    ts: FloatArray, columns: Sequence[FloatArray], start: float, end: float
) -> npt.NDArray[np.intp]:
    """Indices keeping, per time bucket, the first, last, min and max of every column.

    Drawing 20,000 points costs seconds and shows nothing more than a per-pixel envelope does.
    """
    width = max(end - start, 1e-9)
    bucket = np.clip(((ts - start) / width * _BUCKETS).astype(np.int64), -1, _BUCKETS)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    keep = [starts, ends]
    for col in columns:
        filled = np.where(np.isnan(col), np.nanmean(col) if np.any(~np.isnan(col)) else 0.0, col)
        order = np.lexsort((filled, bucket))
        b = bucket[order]
        s = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        e = np.r_[s[1:], len(b)] - 1
        keep += [order[s], order[e]]
    return np.unique(np.concatenate(keep))


def _series(
    ts: Sequence[float], columns: Sequence[Sequence[float | None]], win: _Window
) -> tuple[FloatArray, list[FloatArray]]:
    """Window, clip, downsample and extend to ``now``: arrays ready to draw (None → NaN)."""
    t = np.asarray(ts, dtype=np.float64)
    cols = [np.asarray([np.nan if v is None else v for v in c], dtype=np.float64) for c in columns]
    if len(t) > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t = t[order]
        cols = [c[order] for c in cols]
    idx = _select(t, win.start)
    t = t[idx]
    cols = [c[idx] for c in cols]
    if len(t) > MAX_POINTS:
        keep = _envelope(t, cols, win.start, win.end)
        t = t[keep]
        cols = [c[keep] for c in cols]
    if len(t):
        t = np.maximum(t, win.start)
        if t[-1] < win.end:
            t = np.r_[t, win.end]
            cols = [np.r_[c, c[-1]] for c in cols]
    return t, cols


def _split_at_zero(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Insert the zero crossings of a polyline so it can be coloured by sign without gaps."""
    if len(y) < 2:
        return x, y
    y0, y1 = y[:-1], y[1:]
    cross = np.flatnonzero((y0 * y1 < 0) & np.isfinite(y0) & np.isfinite(y1))
    if not len(cross):
        return x, y
    frac = y0[cross] / (y0[cross] - y1[cross])
    xc = x[cross] + frac * (x[cross + 1] - x[cross])
    return np.insert(x, cross + 1, xc), np.insert(y, cross + 1, 0.0)


def _step(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Explicit post-step vertices, so fills and sign splitting work on the real shape."""
    if len(x) < 2:
        return x, y
    xs = np.repeat(x, 2)[1:]
    ys = np.repeat(y, 2)[:-1]
    return xs, ys


def _plot_signed(
    ax: Axes,
    x: FloatArray,
    y: FloatArray,
    *,
    gain: str,
    loss: str,
    alpha: float,
    width: float = LINE_WIDTH,
    gradient: bool = False,
) -> None:
    """A line with its area to zero: ``gain`` colour above zero, ``loss`` below.

    With ``gradient`` the area fades from ``alpha`` at the extreme to transparent at zero, as in
    the bitFlyer app; otherwise it is a flat tint.
    """
    xs, ys = _split_at_zero(x, y)
    up = np.where(ys >= 0, ys, np.nan)
    down = np.where(ys <= 0, ys, np.nan)
    for color, mask in ((gain, ys >= 0), (loss, ys <= 0)):
        if gradient:
            _gradient_area(ax, xs, ys, mask, color, alpha)
        else:
            ax.fill_between(xs, 0, ys, where=mask, color=color, alpha=alpha, linewidth=0)
    ax.plot(xs, up, color=gain, linewidth=width, solid_capstyle="round", solid_joinstyle="round")
    ax.plot(xs, down, color=loss, linewidth=width, solid_capstyle="round", solid_joinstyle="round")
    _last_dot(ax, x, y, gain if y[-1] >= 0 else loss)


def _gradient_area(
    ax: Axes, xs: FloatArray, ys: FloatArray, mask: npt.NDArray[np.bool_], color: str, alpha: float
) -> None:
    """Fill between the line and zero with a vertical fade, clipped to the filled shape."""
    poly = ax.fill_between(xs, 0, ys, where=mask, color=color, alpha=0.0, linewidth=0)
    paths = poly.get_paths()
    sel = ys[mask & np.isfinite(ys)]
    if not paths or not len(sel):
        return
    extreme = float(sel.max()) if float(sel.max()) > 0 else float(sel.min())
    if extreme == 0:
        return
    rgba = np.zeros((256, 1, 4))
    rgba[..., :3] = to_rgb(color)
    # Row 0 is drawn at the top (origin="upper"): opaque at the extreme, clear at zero.
    fade = np.linspace(1.0, 0.0, 256) if extreme > 0 else np.linspace(0.0, 1.0, 256)
    rgba[:, 0, 3] = alpha * fade
    top, bottom = (extreme, 0.0) if extreme > 0 else (0.0, extreme)
    image = ax.imshow(
        rgba,
        aspect="auto",
        origin="upper",
        extent=(float(xs[0]), float(xs[-1]), bottom, top),
        interpolation="bilinear",
        zorder=poly.get_zorder(),
    )
    clip = PathPatch(
        Path.make_compound_path(*paths), transform=ax.transData, facecolor="none", edgecolor="none"
    )
    ax.add_patch(clip)
    image.set_clip_path(clip)


def _last_dot(ax: Axes, x: FloatArray, y: FloatArray, color: str, size: float = 11.0) -> None:
    """A dot on the latest value: the eye finds "now", and a lone sample is still visible."""
    ok = np.flatnonzero(np.isfinite(y))
    if len(ok):
        i = ok[-1]
        ax.plot(
            [x[i]],
            [y[i]],
            "o",
            color=color,
            markersize=size,
            markeredgecolor="white",
            markeredgewidth=2.0,
            clip_on=False,
            zorder=5,
        )


def _step_width(y: FloatArray) -> float:
    """Thick lines for a readable phone preview, thinner when hundreds of steps would merge."""
    changes = int(np.count_nonzero(np.diff(y[np.isfinite(y)]))) if len(y) > 1 else 0
    return LINE_WIDTH if changes < 150 else 1.6


def _pad_ylim(ax: Axes, values: Sequence[FloatArray], *, include_zero: bool) -> None:
    finite = [v[np.isfinite(v)] for v in values]
    data = np.concatenate(finite) if finite else np.empty(0)
    if not len(data):
        return
    lo, hi = float(data.min()), float(data.max())
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo
    if span <= 0:
        span = abs(hi) * (0.1 if include_zero else 0.002) or 1.0
    ax.set_ylim(lo - span * 0.08, hi + span * 0.12)


def _new_figure(face: str = "white") -> Figure:
    fig = Figure(figsize=FIG_SIZE, dpi=DPI, facecolor=face)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, *, palette: bool = True) -> bytes:
    """Encode the figure as PNG.

    ``palette`` quantizes to 256 colours: the flat-tinted charts lose nothing visible and shrink to
    a third, which matters on a phone's data plan. Gradients would band, so they keep full colour.
    """
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=DPI, facecolor=fig.get_facecolor())
    width, height = fig.canvas.get_width_height(physical=True)
    rgba = np.frombuffer(raw.getbuffer(), dtype=np.uint8).reshape(height, width, 4)
    image = Image.fromarray(rgba[..., :3])
    if palette:
        image = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=6)  # "optimize" costs 8x the time for ~10%
    return buf.getvalue()


def _renderer(fig: Figure) -> Any:
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # every figure here comes from _new_figure
    return canvas.get_renderer()  # type: ignore[no-untyped-call]


def _fit_row(
    fig: Figure,
    row: Sequence[Text],
    *,
    shorten: Text | None = None,
    left: float = EDGE,
    right: float = 1.0 - EDGE,
    gap: float = 0.03,
) -> None:
    """Make one header row fit side by side between ``left`` and ``right`` (fractions of the width).

    The texts shrink together (never under :data:`MIN_FONT`); past that, ``shorten`` loses
    characters from its end behind an ellipsis. Left- and right-aligned texts of the row then
    cannot overlap either, since their widths plus ``gap`` fit the room.
    """
    renderer = _renderer(fig)
    room = (right - left - gap * (len(row) - 1)) * fig.bbox.width

    def used() -> float:
        return sum(t.get_window_extent(renderer).width for t in row)

    for _ in range(6):  # widths are close to linear in the size: two passes are usually enough
        need = used()
        shrinkable = [t for t in row if float(t.get_fontsize()) > MIN_FONT]
        if need <= room or not shrinkable:
            break
        for t in shrinkable:
            t.set_fontsize(max(MIN_FONT, float(t.get_fontsize()) * room / need * 0.99))
    if shorten is None:
        return
    text = shorten.get_text()
    while used() > room and len(text) > 1:
        text = text[:-1].rstrip()
        shorten.set_text(f"{text}…")


def _wrap(fig: Figure, item: Text, words: Sequence[str], sep: str, room: float, max_lines: int = 4) -> None:
    """Break ``words`` (joined by ``sep``) into lines no wider than ``room`` pixels; shrink if needed."""
    renderer = _renderer(fig)

    def width(text: str) -> float:
        item.set_text(text)
        return float(item.get_window_extent(renderer).width)

    while True:
        lines = [words[0]] if words else [""]
        for word in words[1:]:
            joined = f"{lines[-1]}{sep}{word}"
            if width(joined) <= room:
                lines[-1] = joined
            else:
                lines[-1] += sep.rstrip()  # the line ends with "+": the list goes on below
                lines.append(word)
        fits = len(lines) <= max_lines and max(width(line) for line in lines) <= room
        if fits or float(item.get_fontsize()) <= MIN_FONT:
            item.set_text("\n".join(lines))
            return
        item.set_fontsize(max(MIN_FONT, float(item.get_fontsize()) * 0.9))


def _keep_inside(fig: Figure, margin: float = 0.012) -> None:
    """Narrow the axes so their tick labels and y labels stay inside the image.

    Long tick labels (a PnL of -200,000,000 JPY, a price axis on the right) would otherwise push
    the y label past the edge; the axes give up the room instead. Twinned axes follow their twin.
    """
    if not fig.axes:
        return
    renderer = _renderer(fig)
    width = fig.bbox.width
    boxes = [box for ax in fig.axes if (box := ax.get_tightbbox(renderer)) is not None]
    if not boxes:
        return
    grow_left = max(0.0, margin * width - min(b.x0 for b in boxes)) / width
    grow_right = max(0.0, max(b.x1 for b in boxes) - (1 - margin) * width) / width
    if not grow_left and not grow_right:
        return
    # Positions read first: moving an axes also moves its twin, which must not move twice.
    for ax, pos in [(ax, ax.get_position()) for ax in fig.axes]:
        ax.set_position((pos.x0 + grow_left, pos.y0, pos.width - grow_left - grow_right, pos.height))


def _no_data(fig: Figure, title: str, subtitle: str, *, text: str, muted: str) -> Figure:
    for y, line, size, color, weight in (
        (0.60, title, TITLE_SIZE, text, "bold"),
        (0.47, "no data yet", TITLE_SIZE + 6, muted, "normal"),
        (0.36, subtitle, HEAD_SIZE, muted, "normal"),
    ):
        item = fig.text(0.5, y, line, ha="center", va="center", fontsize=size, color=color, weight=weight)
        _fit_row(fig, [item], shorten=item)
    return fig


def _header(
    fig: Figure,
    title: str,
    value: str,
    value_color: str,
    sub: str,
    *,
    text: str,
    muted: str,
    span: str | None = None,
) -> None:
    """Row 1: ``title`` (left) and ``value`` (right), bold. Row 2: ``sub``, and ``span`` on the right."""
    left = fig.text(EDGE, 0.955, title, ha="left", va="top", fontsize=TITLE_SIZE, color=text, weight="bold")
    right = fig.text(
        1 - EDGE, 0.955, value, ha="right", va="top", fontsize=TITLE_SIZE, color=value_color, weight="bold"
    )
    _fit_row(fig, [left, right], shorten=left)  # a long name gives way, the PnL figure stays whole
    # One baseline for the two sizes of row 2.
    detail = fig.text(EDGE, 0.858, sub, ha="left", va="baseline", fontsize=HEAD_SIZE, color=muted)
    if span is None:
        _fit_row(fig, [detail], shorten=detail)
        return
    when = fig.text(1 - EDGE, 0.858, span, ha="right", va="baseline", fontsize=HEAD_SIZE - 2, color=muted)
    _fit_row(fig, [detail, when], shorten=when)


# --------------------------------------------------------------------------- market chart


def _finish_pnl_panel(fig: Figure, ax_pos: Axes, ax_pnl: Axes, x: Any, pnl: Any, win: _Window) -> None:
    """The lower PnL panel shared by the market and bot charts (green above zero, red below)."""
    _plot_signed(ax_pnl, x, pnl, gain=GAIN, loss=LOSS, alpha=0.18)
    ax_pnl.axhline(0, color=MUTED, linewidth=1.2)
    _pad_ylim(ax_pnl, [pnl], include_zero=True)
    ax_pnl.set_ylabel("PnL (JPY)", fontsize=LABEL_SIZE, color=INK)
    ax_pnl.yaxis.set_major_formatter(FuncFormatter(_jpy_tick))
    ax_pnl.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=NICE_STEPS))
    _style_axes(ax_pnl, text=INK, grid=GRID)
    _setup_time_axis(ax_pnl, win.start, win.end, win.hours, MUTED)
    fig.align_ylabels([ax_pos, ax_pnl])
    _keep_inside(fig)


def build_market_figure(
    market: str, samples: Sequence[MarketSample], period_hours: float, now: float | None = None
) -> Figure:
    """The per-market figure: total position (step area) with the price, and total PnL below.

    Axes: ``fig.axes[0]`` position, ``fig.axes[1]`` PnL, ``fig.axes[2]`` price (twin of the first).
    """
    win = _window(period_hours, now, *_ts_range(s.ts for s in samples))
    unit = base_unit(market)
    t, (pos, pnl, price, exch) = _series(
        [s.ts for s in samples],
        [
            [s.position for s in samples],
            [s.profit for s in samples],
            [s.price for s in samples],
            [s.exchange_position for s in samples],
        ],
        win,
    )
    fig = _new_figure()
    span = f"{_period_text(win.hours)} · {_span_text(win.start, win.end)}"
    if not len(t):
        return _no_data(fig, market, span, text=INK, muted=MUTED)

    last_pos, last_pnl, last_exch = float(pos[-1]), float(pnl[-1]), float(exch[-1])
    position = f"position {format_size(last_pos, unit)}"
    if math.isfinite(last_exch) and abs(last_exch - last_pos) > 1e-9:
        position += f" (exchange {format_size(last_exch)})"
    _header(
        fig,
        market,
        f"PnL {format_jpy(last_pnl)}",
        GAIN if last_pnl >= 0 else LOSS,
        position,
        text=INK,
        muted=MUTED,
        span=span,
    )
    grid = fig.add_gridspec(
        2, 1, height_ratios=(3, 2), hspace=0.08, left=0.1, right=0.87, top=0.78, bottom=0.09
    )
    ax_pos = fig.add_subplot(grid[0])
    ax_pnl = fig.add_subplot(grid[1], sharex=ax_pos)
    x = _to_num(t)

    xs, ys = _step(x, pos)
    ax_pos.fill_between(xs, 0, ys, color=POSITION, alpha=0.18, linewidth=0)
    if np.any(np.isfinite(exch)):
        # Drawn under the bots' line: it only shows where the exchange disagrees (a drift).
        ex, ey = _step(x, exch)
        ax_pos.plot(
            ex,
            ey,
            color=EXCHANGE,
            linewidth=min(2.0, _step_width(exch)),
            linestyle=(0, (3, 2)),
            label="exchange",
            zorder=2.1,
        )
    ax_pos.plot(xs, ys, color=POSITION, linewidth=_step_width(pos), label="bots total", zorder=2.2)
    _last_dot(ax_pos, x, pos, POSITION)
    ax_pos.axhline(0, color=MUTED, linewidth=1.2)
    _pad_ylim(ax_pos, [pos, exch], include_zero=True)
    ax_pos.set_ylabel(f"Position{f' ({unit})' if unit else ''}", fontsize=LABEL_SIZE, color=INK)
    ax_pos.yaxis.set_major_formatter(FuncFormatter(_size_tick))
    ax_pos.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=NICE_STEPS, min_n_ticks=4))
    _style_axes(ax_pos, text=INK, grid=GRID)
    ax_pos.tick_params(labelbottom=False)

    handles, labels = ax_pos.get_legend_handles_labels()
    handles.reverse()  # "bots total" first: it is drawn last so it stays on top
    labels.reverse()
    ax_price = ax_pos.twinx()
    if np.any(np.isfinite(price)):
        # Price moves continuously: a plain line between the checks, no step.
        ok = np.isfinite(price)
        (line,) = ax_price.plot(x[ok], price[ok], color=PRICE, linewidth=2.2)
        _last_dot(ax_price, x, price, PRICE, size=8.0)
        handles.append(line)
        labels.append("price (JPY)")
        _pad_ylim(ax_price, [price], include_zero=False)
    ax_price.yaxis.set_major_formatter(FuncFormatter(_jpy_tick))
    ax_price.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=NICE_STEPS))
    ax_price.tick_params(labelsize=TICK_SIZE, colors=PRICE, length=5, width=1.2)
    for name, spine in ax_price.spines.items():
        spine.set_visible(name == "right")
        spine.set_color(GRID)
    # The price line sits behind the position so the thing we own stays on top.
    ax_price.set_zorder(ax_pos.get_zorder() - 1)
    ax_pos.patch.set_visible(False)
    # Above the plot, not on it: the newest data (right) and old data (left) both stay visible.
    ax_pos.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        fontsize=LEGEND_SIZE,
        frameon=False,
        ncols=len(handles),
        borderaxespad=0.2,
        handlelength=1.8,
    )

    _finish_pnl_panel(fig, ax_pos, ax_pnl, x, pnl, win)
    return fig


def render_market_chart(
    market: str, samples: Sequence[MarketSample], period_hours: float, now: float | None = None
) -> bytes:
    """PNG (1200×800) of one market's total position, price and total PnL over ``period_hours``."""
    return _png(build_market_figure(market, samples, period_hours, now))


# --------------------------------------------------------------------------- bitFlyer-style total PnL


def _summed_pnl(
    samples_by_market: Mapping[str, Sequence[MarketSample]], win: _Window
) -> tuple[FloatArray, FloatArray]:
    """Total PnL of all markets on the union of their sample times (each carried forward)."""
    per_market: list[tuple[FloatArray, FloatArray]] = []
    for samples in samples_by_market.values():
        if not samples:
            continue
        t, (p,) = _series([s.ts for s in samples], [[s.profit for s in samples]], win)
        per_market.append((t, p))
    if not per_market:
        return np.empty(0), np.empty(0)
    grid = np.unique(np.concatenate([t for t, _ in per_market]))
    total = np.zeros_like(grid)
    for t, p in per_market:
        at = np.searchsorted(t, grid, side="right") - 1
        # A market contributes nothing before its first sample in view.
        total += np.where(at >= 0, p[np.clip(at, 0, None)], 0.0)
    if len(grid) > MAX_POINTS:
        keep = _envelope(grid, [total], win.start, win.end)
        grid, total = grid[keep], total[keep]
    return grid, total


def build_pnl_bitflyer_figure(
    samples_by_market: Mapping[str, Sequence[MarketSample]], period_hours: float, now: float | None = None
) -> Figure:
    """Total PnL of every market summed, in the bitFlyer mobile-app look.

    Dark background, the line and its area green above zero and red below (split exactly at the
    zero crossings), and the current total as a large signed figure in the same colour.
    ``fig.axes[0]`` is the PnL axes; ``fig.texts`` holds the big figure (``gid="pnl-figure"``).
    """
    win = _window(period_hours, now, *_ts_range(s.ts for ss in samples_by_market.values() for s in ss))
    t, pnl = _summed_pnl(samples_by_market, win)
    fig = _new_figure(BF_BACKGROUND)
    markets = " + ".join(sorted(m for m, ss in samples_by_market.items() if ss)) or "all markets"
    span = f"{_period_text(win.hours)} · {_span_text(win.start, win.end)}"
    if not len(t):
        return _no_data(fig, "Total PnL", span, text=BF_TEXT, muted=BF_MUTED)

    last = float(pnl[-1])
    color = BF_GAIN if last >= 0 else BF_LOSS
    label = fig.text(0.05, 0.95, "Total PnL", ha="left", va="top", fontsize=HEAD_SIZE + 2, color=BF_MUTED)
    when = fig.text(0.95, 0.95, span, ha="right", va="top", fontsize=HEAD_SIZE - 2, color=BF_MUTED)
    _fit_row(fig, [label, when], left=0.05, right=0.95, shorten=when)
    big = fig.text(
        0.05, 0.895, format_jpy(last), ha="left", va="top", fontsize=54, color=color, weight="bold"
    )
    big.set_gid("pnl-figure")
    _fit_row(fig, [big], left=0.05, right=0.80)  # leaves a column on the right for the market list
    # The market list takes the room right of the big figure, wrapped onto a few lines if long.
    names = fig.text(0.95, 0.895, markets, ha="right", va="top", fontsize=HEAD_SIZE - 2, color=BF_MUTED)
    room = 0.95 * fig.bbox.width - big.get_window_extent(_renderer(fig)).x1 - 0.03 * fig.bbox.width
    _wrap(fig, names, markets.split(" + "), " + ", room)

    ax = fig.add_axes((0.05, 0.09, 0.80, 0.63))
    x = _to_num(t)
    _plot_signed(ax, x, pnl, gain=BF_GAIN, loss=BF_LOSS, alpha=0.45, width=LINE_WIDTH + 0.5, gradient=True)
    ax.axhline(0, color=BF_MUTED, linewidth=1.2, linestyle=(0, (2, 3)))
    _pad_ylim(ax, [pnl], include_zero=True)
    ax.yaxis.tick_right()
    ax.yaxis.set_major_formatter(FuncFormatter(_jpy_tick))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=NICE_STEPS))
    _style_axes(ax, text=BF_MUTED, grid=BF_GRID, face=BF_BACKGROUND)
    ax.tick_params(axis="y", length=0, pad=10)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, axis="y", color=BF_GRID, linewidth=1.0)
    ax.grid(False, axis="x")
    _setup_time_axis(ax, win.start, win.end, win.hours, BF_MUTED)
    _keep_inside(fig)
    return fig


def render_pnl_bitflyer(
    samples_by_market: Mapping[str, Sequence[MarketSample]], period_hours: float, now: float | None = None
) -> bytes:
    """PNG (1200×800) of the summed PnL of all markets in the bitFlyer mobile-app style."""
    return _png(build_pnl_bitflyer_figure(samples_by_market, period_hours, now), palette=False)


# --------------------------------------------------------------------------- per-bot chart


def build_bot_figure(
    bot: str, samples: Sequence[BotSample], period_hours: float, now: float | None = None
) -> Figure:
    """One bot's position (step area) and PnL. ``fig.axes[0]`` position, ``fig.axes[1]`` PnL."""
    win = _window(period_hours, now, *_ts_range(s.ts for s in samples))
    market = samples[-1].market if samples else ""
    unit = base_unit(market)
    t, (pos, pnl) = _series(
        [s.ts for s in samples], [[s.position for s in samples], [s.profit for s in samples]], win
    )
    fig = _new_figure()
    span = f"{_period_text(win.hours)} · {_span_text(win.start, win.end)}"
    if not len(t):
        return _no_data(fig, bot, span, text=INK, muted=MUTED)

    last_pos, last_pnl = float(pos[-1]), float(pnl[-1])
    api = samples[-1].api_remaining
    sub = f"{market} · position {format_size(last_pos, unit)}"
    if api is not None:
        sub += f" · API {api}"
    _header(
        fig, bot, f"PnL {format_jpy(last_pnl)}", GAIN if last_pnl >= 0 else LOSS, sub, text=INK, muted=MUTED
    )
    when = fig.text(EDGE, 0.835, span, ha="left", va="top", fontsize=HEAD_SIZE - 2, color=MUTED)
    _fit_row(fig, [when], shorten=when)
    grid = fig.add_gridspec(
        2, 1, height_ratios=(1, 1), hspace=0.08, left=0.1, right=0.96, top=0.77, bottom=0.09
    )
    ax_pos = fig.add_subplot(grid[0])
    ax_pnl = fig.add_subplot(grid[1], sharex=ax_pos)
    x = _to_num(t)

    xs, ys = _step(x, pos)
    ax_pos.fill_between(xs, 0, ys, color=POSITION, alpha=0.18, linewidth=0)
    ax_pos.plot(xs, ys, color=POSITION, linewidth=_step_width(pos))
    _last_dot(ax_pos, x, pos, POSITION)
    ax_pos.axhline(0, color=MUTED, linewidth=1.2)
    _pad_ylim(ax_pos, [pos], include_zero=True)
    ax_pos.set_ylabel(f"Position{f' ({unit})' if unit else ''}", fontsize=LABEL_SIZE, color=INK)
    ax_pos.yaxis.set_major_formatter(FuncFormatter(_size_tick))
    ax_pos.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=NICE_STEPS, min_n_ticks=4))
    _style_axes(ax_pos, text=INK, grid=GRID)
    ax_pos.tick_params(labelbottom=False)

    _finish_pnl_panel(fig, ax_pos, ax_pnl, x, pnl, win)
    return fig


def render_bot_chart(
    bot: str, samples: Sequence[BotSample], period_hours: float, now: float | None = None
) -> bytes:
    """PNG (1200×800) of one bot's position and PnL over ``period_hours``."""
    return _png(build_bot_figure(bot, samples, period_hours, now))


# --------------------------------------------------------------------------- account chart

KEEP_RATE = "#7c3aed"
BOTS_PNL = "#2563eb"


def build_account_figure(
    samples: Sequence[AccountSample], period_hours: float, now: float | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
) -> Figure:
    """The account's margin: keep rate (%) with the thresholds as dashed lines, and below the
    account's PnL today (from the collateral) against Σ the bots' PnL (from their fills).
    ``fig.axes[0]`` keep rate, ``fig.axes[1]`` PnL."""
    win = _window(period_hours, now, *_ts_range(s.ts for s in samples))
    t, (keep, pnl, bots) = _series(
        [s.ts for s in samples],
        [[None if s.keep_rate is None else s.keep_rate * 100 for s in samples],
         [s.pnl_today for s in samples], [s.bots_pnl for s in samples]],
        win,
    )
    fig = _new_figure()
    span = f"{_period_text(win.hours)} · {_span_text(win.start, win.end)}"
    if not len(t):
        return _no_data(fig, "account", span, text=INK, muted=MUTED)
    last = samples[-1]
    head = "flat (no keep rate)" if last.keep_rate is None else f"keep rate {last.keep_rate:.0%}"
    low = last.keep_rate is not None and any(last.keep_rate < v for _, v in thresholds)
    sub = f"collateral {format_jpy(last.collateral, signed=False)} · open PnL {format_jpy(last.open_pnl)}"
    _header(fig, "account", head, LOSS if low else GAIN, sub, text=INK, muted=MUTED)
    when = fig.text(EDGE, 0.835, span, ha="left", va="top", fontsize=HEAD_SIZE - 2, color=MUTED)
    _fit_row(fig, [when], shorten=when)
    grid = fig.add_gridspec(2, 1, height_ratios=(1, 1), hspace=0.08, left=0.1, right=0.96, top=0.77, bottom=0.09)
    ax_k = fig.add_subplot(grid[0])
    ax_p = fig.add_subplot(grid[1], sharex=ax_k)
    x = _to_num(t)
    ax_k.plot(x, keep, color=KEEP_RATE, linewidth=LINE_WIDTH, label="keep rate")
    for name, value in thresholds:
        ax_k.axhline(value * 100, color=LOSS, linewidth=1.2, linestyle="--", label=f"{name} {value:.0%}")
    _pad_ylim(ax_k, [keep, np.asarray([v * 100 for _, v in thresholds], dtype=np.float64)], include_zero=True)
    ax_k.set_ylabel("Keep rate (%)", fontsize=LABEL_SIZE, color=INK)
    ax_k.legend(loc="upper left", fontsize=LEGEND_SIZE, frameon=False)
    _style_axes(ax_k, text=INK, grid=GRID)
    ax_k.tick_params(labelbottom=False)
    ax_p.plot(x, bots, color=BOTS_PNL, linewidth=LINE_WIDTH - 1, label="Σ bots (their fills)")
    ax_p.plot([], [], color=INK, linewidth=LINE_WIDTH, label="account today (collateral)")  # legend entry only
    _finish_pnl_panel(fig, ax_k, ax_p, x, pnl, win)
    _pad_ylim(ax_p, [pnl, bots], include_zero=True)
    ax_p.legend(loc="upper left", fontsize=LEGEND_SIZE, frameon=False)
    return fig


def render_account_chart(
    samples: Sequence[AccountSample], period_hours: float, now: float | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
) -> bytes:
    """PNG (1200×800) of the account's keep rate and PnL today over ``period_hours``."""
    return _png(build_account_figure(samples, period_hours, now, thresholds))


# --------------------------------------------------------------------------- off-loop helper


async def render_async(
    render: Callable[..., bytes], /, *args: Any, executor: Executor | None = None, **kwargs: Any
) -> bytes:
    """Run one of the ``render_*`` functions in ``executor`` (default: the loop's) and await the PNG."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(render, *args, **kwargs))
