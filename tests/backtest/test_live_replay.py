"""A recording of a live run replays into a backtest whose fills match the live ones.

Two strategies trade live on the in-process simulator (two accounts) while ``bfsx record``'s
recorder records the public feed; then ``bfsx backtest`` (real processes) replays that recording
with each strategy file unchanged.

Taker: the test strategy sends one 0.01 BTC market order at every whole second of its clock (BUY on even
seconds, SELL on odd ones), so a live order and a backtest order of the same second meet the same
market: the live one the simulator's book a few ms after the second, the backtest one the
recorded book at the same instant. Tolerance, per second traded in both: the same side and size,
and an average fill price within 150 JPY (one second of them may be off by up to 600 JPY: a
loaded machine can hold a live order back by a few hundred ms). Why 150: the recorded book reaches the backtest through
board diffs sent every 0.1 s (``diff_interval``), so it may lag the live book by one diff; in that
time one flow step may move the synthetic ladder by a level (50 JPY spacing) and the test
market's takers (10 per second, 0.05 BTC mean) may take the top level; a 0.01 market order then
fills one to three levels away from where it filled live. A wrong queue, a wrong side of the
book, a missing latency or a clock that is not the recording's would be off by the spread (200+
JPY) or by a whole second's move, and the counts would differ. (On an idle machine every
second matches to the yen, partial fills included; the tolerance is for a loaded one.)

Maker: the test maker cancels and quotes 0.01 one yen inside each touch at every whole second
(+0.5 s), so its live and replayed quotes rest at the same prices over the same instants. The
replayed quote queues behind the live one (the recording's level sizes include it), so a print of
just the live quote's size does not reach it; but the taker that made that print usually went on
to the next price, and a print beyond the quote's price trades through it. So the replay fills
about as much as live: over the seconds both ran, observed equal to the 0.0001 BTC in most runs.
Tolerance: 0.5-1.5x the live volume, for a few seconds holding only a handful of fills (one more
or less is 10-20 %). A queue model that never fills, or fills quotes no print reached, fails it.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from bfsx.account.orders import Fill
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.runtime import BotRuntime
from bfsx.config import TradeConfig, load_strategy_config
from bfsx.record import DayFiles, Recorder, Store
from bfsx.sim.hooks import eventually
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
PRICE_TOLERANCE_JPY = 150.0
MAKER_VOLUME_RANGE = (0.5, 1.5)
LIVE_SECONDS = 6.0

STRATEGY = '''
import bfsx


class MyStrategy(bfsx.Strategy):
    """One market order per whole second of the clock: BUY on even seconds, SELL on odd ones."""

    def initialize(self) -> None:
        self.every(1.0, self.tick, basetime=0.0)

    async def tick(self) -> None:
        if not self.best_bid or not self.best_ask:
            return
        if round(self.time()) % 2 == 0:
            await self.buy(0.01)
        else:
            await self.sell(0.01)
'''

MAKER = '''
import bfsx


class MyStrategy(bfsx.Strategy):
    """At every whole second of the clock: cancel, then quote 0.01 one yen inside each touch."""

    def initialize(self) -> None:
        self.every(1.0, self.tick, basetime=0.5)

    async def tick(self) -> None:
        await self.cancel_all()
        bid, ask = self.best_bid, self.best_ask
        if not bid or not ask or ask - bid < 3:
            return
        if self.position < 0.03:
            await self.buy(0.01, bid + 1)
        if self.position > -0.03:
            await self.sell(0.01, ask - 1)
'''

STRATEGY_YAML = """
subscribe: {executions: true, board: true, ticker: false}
max_order_size: 0.05
max_position: 1
"""


def _by_second(rows: list[tuple[float, str, float, float]]) -> dict[int, tuple[str, float, float]]:
    """Fills grouped by the whole second of their execution: (side, size, average price)."""
    out: dict[int, list[tuple[str, float, float]]] = {}
    for t, side, price, size in rows:
        out.setdefault(math.floor(t), []).append((side, price, size))
    result = {}
    for sec, fills in out.items():
        size = sum(f[2] for f in fills)
        result[sec] = (fills[0][0], round(size, 8), sum(f[1] * f[2] for f in fills) / size)
    return result


def _backtest(py: Path, yaml_path: Path, data: Path, out: Path) -> tuple[dict[str, Any], list[tuple[float, str, float, float]]]:
    """``bfsx backtest`` in its own process; its report and fills."""
    proc = subprocess.run(
        [sys.executable, "-m", "bfsx.cli", "backtest", str(py), str(yaml_path), "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    with (out / "fills.csv").open() as fh:
        fills = [(float(r["exec_time"]), r["side"], float(r["price"]), float(r["size"])) for r in csv.DictReader(fh)]
    return report, fills


def _live_bot(sim: SimServer, tmp_path: Path, n: int, py: Path, yaml_path: Path,
              fills: list[tuple[float, str, float, float]]) -> BotRuntime:
    trade = TradeConfig.model_validate(dict(
        apikey=f"demo-key-{n}", secret=f"demo-secret-{n}", endpoint=sim.url, ws_endpoint=sim.ws_url,
        log_folder=str(tmp_path / f"live{n}"), console_output=False, health_interval=0.2, bot_name=f"live{n}",
    ))
    rt = BotRuntime(trade, load_strategy_config(yaml_path), load_strategy_class(py)())
    rt.add_listener("fill", lambda f: fills.append((f.time, f.side, f.price, f.size)) if isinstance(f, Fill) else None)
    return rt


async def test_a_live_run_recorded_replays_with_the_same_fills(sim: SimServer, tmp_path: Path) -> None:
    taker_py, taker_yaml = tmp_path / "taker.py", tmp_path / "taker.yaml"
    taker_py.write_text(STRATEGY)
    taker_yaml.write_text(STRATEGY_YAML)
    mm_py, mm_yaml = tmp_path / "maker.py", tmp_path / "maker.yaml"
    mm_py.write_text(MAKER)
    mm_yaml.write_text(STRATEGY_YAML)
    recorder = Recorder(sim.ws_url, [FX], Store(DayFiles(tmp_path / "rec"), flush_s=0.1), backoff_s=(0.05, 0.2))
    await recorder.start()
    await eventually(lambda: recorder.frames > 20, what="the recorder receives the feed")

    live: list[tuple[float, str, float, float]] = []
    live_mm: list[tuple[float, str, float, float]] = []
    bots = [_live_bot(sim, tmp_path, 1, taker_py, taker_yaml, live), _live_bot(sim, tmp_path, 2, mm_py, mm_yaml, live_mm)]
    tasks = [asyncio.create_task(rt.run()) for rt in bots]
    await asyncio.sleep(LIVE_SECONDS)
    for rt in bots:
        rt.request_stop()
    assert [await asyncio.wait_for(t, 30) for t in tasks] == [0, 0]
    await asyncio.sleep(0.3)
    await recorder.stop()

    data = tmp_path / "rec" / FX
    (report, replayed), (mm_report, mm_replayed) = await asyncio.gather(
        asyncio.to_thread(_backtest, taker_py, taker_yaml, data, tmp_path / "out"),
        asyncio.to_thread(_backtest, mm_py, mm_yaml, data, tmp_path / "out-mm"),
    )
    assert report["model"]["market"] == "replay" and report["model"]["queue"] == "risk_averse"
    assert "recorded feed latency" in report["model"]["latency"]

    # the taker: second by second
    live_s, replay_s = _by_second(live), _by_second(replayed)
    common = sorted(set(live_s) & set(replay_s))
    assert len(live_s) >= LIVE_SECONDS - 3, live_s  # the live bot traded nearly every second
    # the backtest starts with the recording (before the live bot did) and ends with it: it trades
    # every second the live bot did, bar the first and last, where start-up and stop differ
    assert len(common) >= len(live_s) - 2, (sorted(live_s), sorted(replay_s))
    off = []
    for sec in common:
        (l_side, l_size, l_px), (r_side, r_size, r_px) = live_s[sec], replay_s[sec]
        assert (l_side, l_size) == (r_side, r_size), sec
        if abs(l_px - r_px) > PRICE_TOLERANCE_JPY:
            off.append((sec, l_side, l_px, r_px))
    # A loaded machine can hold the live bot's order back by a few hundred ms: one second may then
    # meet a market that moved further (seen once in a CI-like run: 250 JPY). A wrong model is off
    # in every second, not in one.
    assert len(off) <= 1 and len(common) >= 3, (off, len(common))
    assert all(abs(lp - rp) <= 4 * PRICE_TOLERANCE_JPY for _, _, lp, rp in off), off
    assert report["fills"]["taker"] == report["fills"]["count"] == len(replayed)

    # the maker: resting quotes filled by the recorded prints, about as often as live, over the
    # seconds both traded (the replay starts before the live bots did and ends after they stopped)
    first, last = common[0], common[-1] + 1

    def volume(fills: list[tuple[float, str, float, float]]) -> float:
        return sum(f[3] for f in fills if first <= f[0] < last)

    live_volume, replay_volume = volume(live_mm), volume(mm_replayed)
    assert live_volume >= 0.03, live_mm  # a busy market fills quotes inside the spread every few seconds
    # Its quotes rest and are filled by prints; one may cross instead: the engine sees the market a
    # feed latency before the bot, and a quote one yen inside a touch that moved meanwhile takes
    # (seen once in a fresh-clone run: 10 maker fills and 1 taker), as it would live.
    fills = mm_report["fills"]
    assert fills["count"] >= 1 and fills["maker"] + fills["taker"] == fills["count"], fills
    assert fills["maker"] >= 1 and fills["taker"] <= 1 + fills["count"] // 5, fills
    assert MAKER_VOLUME_RANGE[0] * live_volume <= replay_volume <= MAKER_VOLUME_RANGE[1] * live_volume, (
        live_volume, replay_volume)
