"""A recording of a live run replays into a backtest whose fills match the live ones.

The strategy trades live on the in-process simulator while ``bfsx record``'s recorder records the
public feed; then ``bfsx backtest`` (a real process) replays that recording with the same file.

The strategy sends one 0.01 BTC market order at every whole second of its clock (BUY on even
seconds, SELL on odd ones), so a live order and a backtest order of the same second meet the same
market: the live one the simulator's book a few ms after the second, the backtest one the
recorded book at the same instant. Tolerance, per second traded in both: the same side and size,
and an average fill price within 150 JPY. Why 150: the recorded book reaches the backtest through
board diffs sent every 0.1 s (``diff_interval``), so it may lag the live book by one diff; in that
time one flow step may move the synthetic ladder by a level (50 JPY spacing) and the test
market's takers (10 per second, 0.05 BTC mean) may take the top level; a 0.01 market order then
fills one to three levels away from where it filled live. A wrong queue, a wrong side of the
book, a missing latency or a clock that is not the recording's would be off by the spread (200+
JPY) or by a whole second's move, and the counts would differ. (On an idle machine every
second matches to the yen, partial fills included; the tolerance is for a loaded one.)
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

from bfsx.account.orders import Fill
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.runtime import BotRuntime
from bfsx.config import TradeConfig, load_strategy_config
from bfsx.record import DayFiles, Recorder, Store
from bfsx.sim.hooks import eventually
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
PRICE_TOLERANCE_JPY = 150.0
LIVE_SECONDS = 8.0

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


async def test_a_live_run_recorded_replays_with_the_same_fills(sim: SimServer, tmp_path: Path) -> None:
    py, yaml_path = tmp_path / "taker.py", tmp_path / "taker.yaml"
    py.write_text(STRATEGY)
    yaml_path.write_text(STRATEGY_YAML)
    recorder = Recorder(sim.ws_url, [FX], Store(DayFiles(tmp_path / "rec"), flush_s=0.1), backoff_s=(0.05, 0.2))
    await recorder.start()
    await eventually(lambda: recorder.frames > 20, what="the recorder receives the feed")

    trade = TradeConfig.model_validate(dict(
        apikey="demo-key-1", secret="demo-secret-1", endpoint=sim.url, ws_endpoint=sim.ws_url,
        log_folder=str(tmp_path / "live"), console_output=False, health_interval=0.2, bot_name="live",
    ))
    rt = BotRuntime(trade, load_strategy_config(yaml_path), load_strategy_class(py)())
    live: list[tuple[float, str, float, float]] = []
    rt.add_listener("fill", lambda f: live.append((f.time, f.side, f.price, f.size)) if isinstance(f, Fill) else None)
    task = asyncio.create_task(rt.run())
    await asyncio.sleep(LIVE_SECONDS)
    rt.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    await asyncio.sleep(0.3)
    await recorder.stop()

    out = tmp_path / "out"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bfsx.cli", "backtest", str(py), str(yaml_path), "--data", str(tmp_path / "rec" / FX),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["market"] == "replay" and report["model"]["queue"] == "risk_averse"
    assert "recorded feed latency" in report["model"]["latency"]
    with (out / "fills.csv").open() as fh:
        replayed = [(float(r["exec_time"]), r["side"], float(r["price"]), float(r["size"])) for r in csv.DictReader(fh)]

    live_s, replay_s = _by_second(live), _by_second(replayed)
    common = sorted(set(live_s) & set(replay_s))
    assert len(live_s) >= LIVE_SECONDS - 3, live_s  # the live bot traded nearly every second
    # the backtest starts with the recording (before the live bot did) and ends with it: it trades
    # every second the live bot did, bar the first and last, where start-up and stop differ
    assert len(common) >= len(live_s) - 2, (sorted(live_s), sorted(replay_s))
    for sec in common:
        (l_side, l_size, l_px), (r_side, r_size, r_px) = live_s[sec], replay_s[sec]
        assert (l_side, l_size) == (r_side, r_size), sec
        assert abs(l_px - r_px) <= PRICE_TOLERANCE_JPY, (sec, l_side, l_px, r_px)
    assert report["fills"]["taker"] == report["fills"]["count"] == len(replayed)
