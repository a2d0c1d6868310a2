"""Chart properties (size, axes, labels, JST time axis, bitFlyer colours), not pixel equality."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from bfsx.reporting import charts
from bfsx.reporting.charts import (
    build_bot_figure,
    build_market_figure,
    build_pnl_bitflyer_figure,
    format_jpy,
    format_size,
    render_async,
    render_bot_chart,
    render_market_chart,
    render_pnl_bitflyer,
)
from bfsx.reporting.samples import BotSample, MarketSample

NOW = 1_710_396_000.0  # 2024-03-14 15:00 JST (06:00 UTC)


def walk(n: int, step: float = 30.0, seed: int = 1, end: float = NOW) -> list[MarketSample]:
    rnd = random.Random(seed)
    out, pos, pnl, price = [], 0.0, 0.0, 10_000_000.0
    for i in range(n):
        price += rnd.gauss(0, 3000)
        if rnd.random() < 0.2:
            pos = round(max(-0.1, min(0.1, pos + rnd.choice((-0.01, 0.01)))), 8)
        pnl += rnd.gauss(0, 100)
        out.append(MarketSample(end - (n - 1 - i) * step, pos, pnl, price, pos))
    return out


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts]


def pixels(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)  # type: ignore[attr-defined]


def pixel_at(fig: Figure, image: np.ndarray, ax_index: int, x: float, y: float) -> np.ndarray:
    """The RGB pixel under data point (x in unix seconds, y) of ``fig.axes[ax_index]``."""
    ax = fig.axes[ax_index]
    px, py = ax.transData.transform((x / 86400.0, y))
    return image[int(image.shape[0] - py + 0.5), int(px + 0.5)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_every_chart_is_a_phone_sized_png() -> None:
    samples = walk(720)
    bots = [BotSample(s.ts, "mm", "FX_BTC_JPY", s.position, s.profit, 400) for s in samples]
    for data in (
        render_market_chart("FX_BTC_JPY", samples, 6, NOW),
        render_pnl_bitflyer({"FX_BTC_JPY": samples, "BTC_JPY": walk(720, seed=2)}, 6, NOW),
        render_bot_chart("mm", bots, 6, NOW),
    ):
        assert png_size(data) == (1200, 800)
        assert 5_000 < len(data) < 150_000  # not blank, and light enough for a phone


def test_market_figure_axes_labels_and_header() -> None:
    samples = walk(720)
    last = samples[-1]
    samples[-1] = MarketSample(last.ts, 0.04, 1234.4, last.price, 0.05)  # exchange disagrees now
    fig = build_market_figure("FX_BTC_JPY", samples, 6, NOW)
    ax_pos, ax_pnl, ax_price = fig.axes
    assert ax_pos.get_ylabel() == "Position (BTC)"
    assert ax_pnl.get_ylabel() == "PnL (JPY)"
    legend = ax_pos.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["bots total", "exchange", "price (JPY)"]
    assert ax_price.get_lines()[0].get_color() == charts.PRICE
    header = texts(fig)
    assert "FX_BTC_JPY" in header
    assert "PnL +1,234 JPY" in header
    assert "position +0.04 BTC (exchange +0.05)" in header
    assert "last 6 h · 03/14 09:00 – 15:00 JST" in header
    pnl_text = next(t for t in fig.texts if t.get_text().startswith("PnL"))
    assert pnl_text.get_color() == charts.GAIN
    assert ax_pnl.get_xlim() == pytest.approx(((NOW - 6 * 3600) / 86400, NOW / 86400))


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (1, ["14:00", "14:15", "14:30", "14:45", "15:00"]),
        (6, ["09:00", "10:00", "11:00", "12:00", "13:00", "14:00", "15:00"]),
        (24, ["16:00", "20:00", "03/14", "04:00", "08:00", "12:00"]),
        (48, ["16:00", "03/13", "08:00", "16:00", "03/14", "08:00"]),
    ],
)
def test_time_axis_is_jst_with_readable_ticks(hours: float, expected: list[str]) -> None:
    fig = build_market_figure("FX_BTC_JPY", walk(200, step=hours * 3600 / 200), hours, NOW)
    fig.canvas.draw()
    ax_pnl = fig.axes[1]
    lo, hi = ax_pnl.get_xlim()
    labels = [
        t.get_text()
        for t, v in zip(ax_pnl.get_xticklabels(), ax_pnl.get_xticks(), strict=True)
        if lo <= v <= hi
    ]
    assert labels == expected
    assert ax_pnl.get_xlabel() == "JST"


def test_pnl_line_is_split_exactly_at_zero() -> None:
    samples = [
        MarketSample(NOW - 3600 + i * 600, 0.0, p, None, None) for i, p in enumerate([300, -300, 500, -100])
    ]
    fig = build_market_figure("FX_BTC_JPY", samples, 1, NOW)
    green, red = (
        line
        for line in fig.axes[1].get_lines()
        if line.get_linestyle() != "None" and line.get_color() in (charts.GAIN, charts.LOSS)
    )
    gy = np.asarray(green.get_ydata(), dtype=float)
    ry = np.asarray(red.get_ydata(), dtype=float)
    assert np.nanmin(gy) == 0.0 and np.nanmax(gy) == 500
    assert np.nanmax(ry) == 0.0 and np.nanmin(ry) == -300
    assert green.get_color() == charts.GAIN and red.get_color() == charts.LOSS
    crossing = np.asarray(green.get_xdata(), dtype=float)[gy == 0.0][0] * 86400
    assert crossing == pytest.approx(NOW - 3600 + 300)  # 300 → -300 over 600 s crosses halfway


def test_bitflyer_style_colours() -> None:
    # +1000 for the first half of the window, -1000 for the second half.
    fx = [
        MarketSample(NOW - 6 * 3600 + i * 60, 0.0, 1000.0 if i < 180 else -1000.0, None, None)
        for i in range(360)
    ]
    fig = build_pnl_bitflyer_figure({"FX_BTC_JPY": fx}, 6, NOW)
    image = pixels(fig)
    assert image[5, 5].max() < 60  # dark background
    ax = fig.axes[0]
    assert to_rgb(ax.get_facecolor()) == pytest.approx(to_rgb(charts.BF_BACKGROUND))

    quarter, three_quarters = NOW - 4.5 * 3600, NOW - 1.5 * 3600
    r, g, b = pixel_at(fig, image, 0, quarter, 800)  # inside the area above zero
    assert g > r + 20 and g > b, (r, g, b)
    r, g, b = pixel_at(fig, image, 0, three_quarters, -800)  # inside the area below zero
    assert r > g + 20 and r > b, (r, g, b)
    gain = np.array(to_rgb(charts.BF_GAIN)) * 255
    loss = np.array(to_rgb(charts.BF_LOSS)) * 255
    assert np.abs(pixel_at(fig, image, 0, quarter, 1000) - gain).max() < 25  # the line itself
    assert np.abs(pixel_at(fig, image, 0, three_quarters, -1000) - loss).max() < 25

    big = next(t for t in fig.texts if t.get_gid() == "pnl-figure")
    assert big.get_text() == "-1,000 JPY"
    assert big.get_color() == charts.BF_LOSS
    assert big.get_fontsize() >= 48


def test_bitflyer_sums_all_markets_over_time() -> None:
    fx = [MarketSample(NOW - 4000, 0.0, 1000.0), MarketSample(NOW - 1000, 0.0, 1500.0)]
    spot = [MarketSample(NOW - 2000, 0.0, -700.0), MarketSample(NOW - 500, 0.0, -500.0)]
    fig = build_pnl_bitflyer_figure({"FX_BTC_JPY": fx, "BTC_JPY": spot, "ETH_JPY": []}, 1, NOW)
    big = next(t for t in fig.texts if t.get_gid() == "pnl-figure")
    assert big.get_text() == "+1,000 JPY" and big.get_color() == charts.BF_GAIN
    assert "BTC_JPY + FX_BTC_JPY" in texts(fig)
    t, total = charts._summed_pnl({"FX_BTC_JPY": fx, "BTC_JPY": spot}, charts._window(1, NOW, None))
    assert (t - NOW).tolist() == [-3600, -2000, -1000, -500, 0]
    assert total.tolist() == [1000, 300, 800, 1000, 1000]  # window edge: FX carried in, spot not yet


def test_empty_one_sample_and_long_histories_render() -> None:
    for fig in (
        build_market_figure("FX_BTC_JPY", [], 6, NOW),
        build_pnl_bitflyer_figure({}, 6, NOW),
        build_bot_figure("mm", [], 6, NOW),
    ):
        assert "no data yet" in texts(fig) and not fig.axes
    assert png_size(render_market_chart("FX_BTC_JPY", [], 6, NOW)) == (1200, 800)

    one = [MarketSample(NOW - 5, 0.02, -50.0, 10_000_000.0, 0.02)]
    fig = build_market_figure("FX_BTC_JPY", one, 6, NOW)
    assert len(fig.axes) == 3 and "PnL -50 JPY" in texts(fig)
    assert png_size(render_market_chart("FX_BTC_JPY", one, 6, NOW)) == (1200, 800)
    assert png_size(render_pnl_bitflyer({"FX_BTC_JPY": one}, 6, NOW)) == (1200, 800)
    assert png_size(render_bot_chart("mm", [BotSample(NOW, "mm", "FX_BTC_JPY", 0.0, 0.0, None)], 6, NOW))

    long = walk(20_000, step=48 * 3600 / 20_000)
    fig = build_market_figure("FX_BTC_JPY", long, 48, NOW)
    drawn = max(len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines())  # type: ignore[arg-type]
    assert drawn < 4 * charts.MAX_POINTS  # downsampled to a per-pixel envelope
    pos_line = next(line for line in fig.axes[0].get_lines() if line.get_label() == "bots total")
    ys = np.asarray(pos_line.get_ydata(), dtype=float)
    assert ys.max() == max(s.position for s in long) and ys.min() == min(s.position for s in long)
    assert png_size(charts._png(fig)) == (1200, 800)
    assert png_size(render_pnl_bitflyer({"FX_BTC_JPY": long}, 48, NOW)) == (1200, 800)


def test_window_carries_in_old_state_and_tolerates_unsorted_input() -> None:
    old = MarketSample(NOW - 10 * 3600, -0.03, 200.0, 9_000_000.0, -0.03)
    recent = MarketSample(NOW - 600, 0.01, 300.0, 9_100_000.0, 0.01)
    fig = build_market_figure("FX_BTC_JPY", [recent, old], 1, NOW)
    pos_line = next(line for line in fig.axes[0].get_lines() if line.get_label() == "bots total")
    xs = np.asarray(pos_line.get_xdata(), dtype=float) * 86400
    ys = np.asarray(pos_line.get_ydata(), dtype=float)
    assert xs[0] == pytest.approx(NOW - 3600) and ys[0] == -0.03  # the old position, from the left edge
    assert xs[-1] == pytest.approx(NOW) and ys[-1] == 0.01  # the last one, carried to now
    fig = build_market_figure("FX_BTC_JPY", [old], 1, NOW)  # nothing new in the window: still drawn
    assert "position -0.03 BTC" in " ".join(texts(fig))


def test_bot_figure() -> None:
    samples = [
        BotSample(NOW - 3600 + i * 60, "scalping", "FX_BTC_JPY", 0.01 * (i % 3), -5.0 * i, 480 - i)
        for i in range(60)
    ]
    fig = build_bot_figure("scalping", samples, 1, NOW)
    assert [ax.get_ylabel() for ax in fig.axes] == ["Position (BTC)", "PnL (JPY)"]
    header = texts(fig)
    assert "scalping" in header and "PnL -295 JPY" in header
    assert "FX_BTC_JPY · position +0.02 BTC · API 421" in header


async def test_render_async_runs_off_the_loop() -> None:
    data = await render_async(render_market_chart, "FX_BTC_JPY", walk(50), 1, now=NOW)
    assert png_size(data) == (1200, 800)


def test_number_formats() -> None:
    assert format_jpy(12345.4) == "+12,345 JPY"
    assert format_jpy(-987.6) == "-988 JPY"
    assert format_jpy(-0.4) == "0 JPY"
    assert format_size(0.12, "BTC") == "+0.12 BTC"
    assert format_size(-0.00000001) == "-0.00000001"
    assert format_size(-0.0, "BTC") == "0 BTC"
    assert charts.base_unit("FX_BTC_JPY") == "BTC" and charts.base_unit("ETH_JPY") == "ETH"
    assert charts.base_unit("BTCJPY28MAR2025") == ""
    assert charts._jpy_tick(-1500.0) == "-1,500" and charts._size_tick(-0.04) == "-0.04"
    assert not math.isnan(float(charts._size_tick(0.0)))


# --------------------------------------------------------------------------- short histories, layout


def xlim_seconds(fig: Figure, ax_index: int) -> tuple[float, float]:
    lo, hi = fig.axes[ax_index].get_xlim()
    return lo * 86400, hi * 86400


def visible_tick_labels(fig: Figure, ax_index: int) -> list[str]:
    fig.canvas.draw()
    ax = fig.axes[ax_index]
    lo, hi = ax.get_xlim()
    return [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks(), strict=True) if lo <= v <= hi]


def test_short_history_is_zoomed_to_its_span() -> None:
    # 20 minutes of data in a 6 h period: the axis shows those 20 minutes, not a sliver at the right.
    short = walk(41, step=30.0)  # NOW - 20 min .. NOW
    bots = [BotSample(s.ts, "mm", "FX_BTC_JPY", s.position, s.profit, 400) for s in short]
    for fig, ax_index in (
        (build_market_figure("FX_BTC_JPY", short, 6, NOW), 1),
        (build_pnl_bitflyer_figure({"FX_BTC_JPY": short, "BTC_JPY": short[20:]}, 6, NOW), 0),
        (build_bot_figure("mm", bots, 6, NOW), 1),
    ):
        lo, hi = xlim_seconds(fig, ax_index)
        assert hi == pytest.approx(NOW)
        first = NOW - 1200
        assert first - 0.06 * 1200 <= lo < first  # a little room left of the first sample
        assert "last 21 min" in " ".join(texts(fig))
    fig = build_market_figure("FX_BTC_JPY", short, 6, NOW)
    assert visible_tick_labels(fig, 1) == ["14:40", "14:45", "14:50", "14:55", "15:00"]

    # A few seconds of data: never less than MIN_SPAN, with ticks that show the seconds.
    fig = build_market_figure("FX_BTC_JPY", walk(5, step=2.0), 6, NOW)
    lo, hi = xlim_seconds(fig, 1)
    assert hi - lo == pytest.approx(charts.MIN_SPAN)
    assert visible_tick_labels(fig, 1) == ["14:58", "14:58:30", "14:59", "14:59:30", "15:00"]

    # Data that covers most of the period, or a sample carried in from before it: the full period.
    for samples in (walk(600, step=30.0), [MarketSample(NOW - 7 * 3600, 0.01, 5.0), *walk(10, step=30.0)]):
        lo, hi = xlim_seconds(build_market_figure("FX_BTC_JPY", samples, 6, NOW), 1)
        assert (lo, hi) == pytest.approx((NOW - 6 * 3600, NOW))


def inside(fig: Figure) -> None:
    """Every header text and every axes (ticks and labels included) lies within the image,
    and no two header texts overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts]
    boxes += [(f"axes {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    for name, box in boxes:
        assert box is not None
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (name, box)
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1, (name, box)
    header = [b for name, b in boxes if not name.startswith("axes ")]
    for i, a in enumerate(header):
        for b in header[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def test_titles_fit_with_long_names_and_big_numbers() -> None:
    huge = [
        MarketSample(s.ts, s.position * 1234.5678901, s.profit * 987_654.3, s.price, s.position * 1234.5678)
        for s in walk(240)
    ]
    long_market = "BTCJPY28MAR2025_WEEKLY_FUTURES"
    markets = ["BCH_BTC", "BTC_JPY", "ETH_BTC", "ETH_JPY", "FX_BTC_JPY", "XRP_JPY"]
    bot = "market_making_bot_with_a_very_long_descriptive_name"
    bots = [BotSample(s.ts, bot, long_market, s.position, s.profit, 400) for s in huge]
    figures = [
        build_market_figure(long_market, huge, 6, NOW),
        build_market_figure("FX_BTC_JPY", walk(30, step=2.0), 1, NOW),  # the demo's overflowing line
        build_pnl_bitflyer_figure({m: huge for m in markets}, 6, NOW),
        build_bot_figure(bot, bots, 6, NOW),
        build_market_figure(long_market * 3, [], 48, NOW),
    ]
    for fig in figures:
        inside(fig)
    # The PnL figure is never cut; the long name gives way first.
    header = texts(figures[0])
    assert any(t.startswith("PnL -") and t.endswith(" JPY") and "…" not in t for t in header)
    # The market list wraps beside the big figure instead of running into it.
    names = next(t for t in figures[2].texts if "BCH_BTC" in t.get_text())
    assert names.get_text().count("\n") >= 1 and "XRP_JPY" in names.get_text()
