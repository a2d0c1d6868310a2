"""The replay's queue models on a hand-made recording (the format of docs/recording.md).

The book: bids at 9,999,000 (1.0 BTC), asks at 10,001,000, twice (the replay starts with the first
snapshot, the bot a moment later). On the second one the strategy joins the bid with 0.01. Then, a second apart: the level grows to 1.5 (0.5 queues behind the bot's order), shrinks
back to 1.0 without a print (a cancel of 0.5), and a seller prints 0.7 at the bid.

* ``risk_averse``: the cancel came from behind; 1.0 is still ahead; the 0.7 print does not reach
  the order: no fill.
* ``probabilistic``: the cancel is split by the squares of the sizes ahead (1.0) and behind
  (0.5): 0.5 × 1 / 1.25 = 0.4 from ahead, 0.6 left ahead; the 0.7 print fills the 0.01.
* A later print at a lower price (9,998,000) trades through the bid: the order fills in both.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import zstandard

from bfsx.backtest.runner import BacktestSettings, run_backtest
from bfsx.bitflyer import channels
from bfsx.record import format as fmt

FX = "FX_BTC_JPY"
T0_NS = 1_796_000_000 * fmt.NS_PER_S
BID, ASK = 9_999_000.0, 10_001_000.0

JOIN = '''
import bfsx


class MyStrategy(bfsx.Strategy):
    def initialize(self) -> None:
        self.sent = False
        self.on_board(self.join)

    async def join(self, board) -> None:
        if not self.sent and self.best_bid:
            self.sent = True
            await self.buy(0.01, self.best_bid)
'''


def _exec_date(t_ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _recording(folder: Path, *, through: bool) -> Path:
    """The frames above, one second apart, as ``bfsx record`` writes them."""
    t = T0_NS
    lines = [fmt.marker_line(t, fmt.MARK_OPEN, format=fmt.FORMAT, version=fmt.VERSION, product=FX, reason="start")]

    def frame(dt_s: float, channel: str, msg: object) -> None:
        nonlocal t
        t += int(dt_s * fmt.NS_PER_S)
        lines.append(orjson.dumps({"t": t, "ch": channel, "msg": msg}) + b"\n")

    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}], "asks": [{"price": ASK, "size": 1.0}]}
    frame(0.1, channels.board_snapshot(FX), snapshot)  # the replay (and the bot) starts here
    frame(1.0, channels.board_snapshot(FX), snapshot)  # the strategy, started by now, joins the bid
    frame(1.0, channels.board(FX), {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.5}], "asks": []})
    frame(1.0, channels.board(FX), {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}], "asks": []})
    frame(1.0, channels.executions(FX), [{"id": 1, "side": "SELL", "price": BID, "size": 0.7,
                                          "exec_date": _exec_date(t + fmt.NS_PER_S),
                                          "buy_child_order_acceptance_id": "x", "sell_child_order_acceptance_id": "y"}])
    if through:
        frame(1.0, channels.executions(FX), [{"id": 2, "side": "SELL", "price": BID - 1000, "size": 0.5,
                                              "exec_date": _exec_date(t + fmt.NS_PER_S),
                                              "buy_child_order_acceptance_id": "x",
                                              "sell_child_order_acceptance_id": "y"}])
    frame(5.0, channels.board(FX), {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []})
    lines.append(fmt.marker_line(t, fmt.MARK_CLOSE))
    folder.mkdir(parents=True)
    path = folder / fmt.file_name(fmt.jst_day(T0_NS))
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    return path


@pytest.mark.parametrize(("queue", "through", "filled"), [
    ("risk_averse", False, 0.0),
    ("probabilistic", False, 0.01),
    ("risk_averse", True, 0.01),
    ("probabilistic", True, 0.01),
])
def test_queue_models_decide_whether_a_print_reaches_the_order(
    tmp_path: Path, queue: str, through: bool, filled: float
) -> None:
    py, yaml = tmp_path / "join.py", tmp_path / "join.yaml"
    py.write_text(JOIN)
    yaml.write_text("subscribe: {ticker: false}\n")
    data = _recording(tmp_path / "rec", through=through)
    report = run_backtest(BacktestSettings(strategy_py=py, strategy_yaml=yaml, data=[data], latency_ms=1.0,
                                           queue=queue)).report  # type: ignore[arg-type]
    assert report["model"]["queue"] == queue and report["model"]["prints"] == (2 if through else 1)
    assert report["orders"]["accepted"] == 1
    assert report["fills"]["volume"] == filled
    if filled:
        assert report["fills"]["maker"] == 1 and report["position"]["final"] == 0.01


def test_a_gap_in_the_recording_is_a_reconnect_and_the_queue_ahead_is_unknown(tmp_path: Path) -> None:
    """A gap (the recorder's socket closed, 1012) reconnects the bot (the runtime resyncs) and
    empties the mirror; the next snapshot's size at the bot's price goes ahead of its order (what
    queued meanwhile is unknown: risk-averse), so a 0.7 print against 1.0 does not fill it."""
    t = T0_NS
    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}], "asks": [{"price": ASK, "size": 1.0}]}
    lines = [fmt.marker_line(t, fmt.MARK_OPEN, format=fmt.FORMAT, version=fmt.VERSION, product=FX, reason="start")]
    for dt_s, rec in [
        (0.1, {"ch": channels.board_snapshot(FX), "msg": snapshot}),
        (1.0, {"ch": channels.board_snapshot(FX), "msg": snapshot}),  # the strategy joins the bid here
        (1.0, {"mark": fmt.MARK_DISCONNECT, "code": 1012}),
        (3.0, {"mark": fmt.MARK_GAP, "from_ns": t + int(2.1 * fmt.NS_PER_S), "to_ns": t + int(5.1 * fmt.NS_PER_S),
               "code": 1012, "reason": "closed"}),
        (0.5, {"ch": channels.board_snapshot(FX), "msg": snapshot}),
        (1.0, {"ch": channels.executions(FX), "msg": [{"id": 1, "side": "SELL", "price": BID, "size": 0.7,
                                                       "exec_date": _exec_date(t + int(6.6 * fmt.NS_PER_S)),
                                                       "buy_child_order_acceptance_id": "x",
                                                       "sell_child_order_acceptance_id": "y"}]}),
        (5.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []}}),
    ]:
        t += int(dt_s * fmt.NS_PER_S)
        lines.append(orjson.dumps({"t": t, **rec}) + b"\n")
    lines.append(fmt.marker_line(t, fmt.MARK_CLOSE))
    (tmp_path / "rec").mkdir()
    data = tmp_path / "rec" / fmt.file_name(fmt.jst_day(T0_NS))
    data.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    py, yaml = tmp_path / "join.py", tmp_path / "join.yaml"
    py.write_text(JOIN)
    yaml.write_text("subscribe: {ticker: false}\n")
    report = run_backtest(BacktestSettings(strategy_py=py, strategy_yaml=yaml, data=[data], latency_ms=1.0)).report
    assert report["model"]["gaps"] == 1 and report["reconnects"] == 1
    assert report["orders"]["accepted"] == 1  # the order rested through the gap (nothing cancelled it)
    assert report["fills"]["count"] == 0


TAKE_TWICE = '''
import bfsx


class MyStrategy(bfsx.Strategy):
    """A 0.5 market buy on each of the first two board updates after it started."""

    def initialize(self) -> None:
        self.sent = 0
        self.on_board(self.take)

    async def take(self, board) -> None:
        if self.sent < 2 and self.best_ask:
            self.sent += 1
            await self.buy(0.5)
'''


def test_liquidity_the_bot_took_stays_taken_until_its_level_goes(tmp_path: Path) -> None:
    """The recorded ask of 0.6 at 10,001,000 is re-stated by a later diff (someone else's activity):
    the recorded market never saw the bot's first 0.5 go, so the second 0.5 finds only 0.1 there and
    takes 0.4 from the next level, as the real book would have made it."""
    t = T0_NS
    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}],
                "asks": [{"price": ASK, "size": 0.6}, {"price": ASK + 1000, "size": 1.0}]}
    restated = {"mid_price": (BID + ASK) / 2, "bids": [], "asks": [{"price": ASK, "size": 0.6}]}
    lines = [fmt.marker_line(t, fmt.MARK_OPEN, format=fmt.FORMAT, version=fmt.VERSION, product=FX, reason="start")]
    for dt_s, ch, msg in [
        (0.1, channels.board_snapshot(FX), snapshot),
        (1.0, channels.board_snapshot(FX), snapshot),  # the first buy
        (1.0, channels.board(FX), restated),  # the second buy
        (5.0, channels.board(FX), {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []}),
    ]:
        t += int(dt_s * fmt.NS_PER_S)
        lines.append(orjson.dumps({"t": t, "ch": ch, "msg": msg}) + b"\n")
    lines.append(fmt.marker_line(t, fmt.MARK_CLOSE))
    (tmp_path / "rec").mkdir()
    data = tmp_path / "rec" / fmt.file_name(fmt.jst_day(T0_NS))
    data.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    py, yaml = tmp_path / "take.py", tmp_path / "take.yaml"
    py.write_text(TAKE_TWICE)
    yaml.write_text("subscribe: {ticker: false}\nmax_order_size: 1\nmax_position: 2\n")
    result = run_backtest(BacktestSettings(strategy_py=py, strategy_yaml=yaml, data=[data], latency_ms=1.0))
    fills = [(f.price, f.size) for f in result.collector.fills]
    assert fills == [(ASK, 0.5), (ASK, 0.1), (ASK + 1000, 0.4)]
    assert result.report["fills"]["taker"] == 3 and result.report["position"]["final"] == 1.0


def test_a_recording_of_another_product_or_without_frames_is_one_line(tmp_path: Path) -> None:
    from bfsx.errors import UserError

    py, yaml = tmp_path / "join.py", tmp_path / "join.yaml"
    py.write_text(JOIN)
    yaml.write_text("subscribe: {ticker: false}\n")
    data = _recording(tmp_path / "rec", through=False)
    with pytest.raises(UserError, match=r"frames of lightning_board_snapshot_FX_BTC_JPY, not of BTC_JPY"):
        run_backtest(BacktestSettings(strategy_py=py, strategy_yaml=yaml, data=[data], product="BTC_JPY"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no frames in"):
        run_backtest(BacktestSettings(strategy_py=py, strategy_yaml=yaml, data=[tmp_path / "empty"]))
