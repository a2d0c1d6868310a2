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


def _write(folder: Path, records: list[tuple[float, dict[str, object]]]) -> Path:
    """A day file as ``bfsx record`` writes it: its open marker, each record ``dt_s`` after the one
    before (``{"ch": ..., "msg": ...}`` frames or markers), its close marker; zstd-compressed."""
    t = T0_NS
    lines = [fmt.marker_line(t, fmt.MARK_OPEN, format=fmt.FORMAT, version=fmt.VERSION, product=FX, reason="start")]
    for dt_s, rec in records:
        t += int(dt_s * fmt.NS_PER_S)
        lines.append(orjson.dumps({"t": t, **rec}) + b"\n")
    lines.append(fmt.marker_line(t, fmt.MARK_CLOSE))
    folder.mkdir(parents=True)
    path = folder / fmt.file_name(fmt.jst_day(T0_NS))
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    return path


def _print(t_ns: int, id_: int, price: float, size: float) -> dict[str, object]:
    return {"id": id_, "side": "SELL", "price": price, "size": size, "exec_date": _exec_date(t_ns),
            "buy_child_order_acceptance_id": "x", "sell_child_order_acceptance_id": "y"}


def _recording(folder: Path, *, through: bool) -> Path:
    """The frames above, one second apart, as ``bfsx record`` writes them."""
    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}], "asks": [{"price": ASK, "size": 1.0}]}
    s = fmt.NS_PER_S
    records: list[tuple[float, dict[str, object]]] = [
        (0.1, {"ch": channels.board_snapshot(FX), "msg": snapshot}),  # the replay (and the bot) starts here
        (1.0, {"ch": channels.board_snapshot(FX), "msg": snapshot}),  # the strategy, started by now, joins the bid
        (1.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.5}],
                                                 "asks": []}}),
        (1.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}],
                                                 "asks": []}}),
        # each print dated the instant it is received (no feed latency)
        (1.0, {"ch": channels.executions(FX), "msg": [_print(T0_NS + int(0.1 * s) + 4 * s, 1, BID, 0.7)]}),
    ]
    if through:
        records.append((1.0, {"ch": channels.executions(FX),
                              "msg": [_print(T0_NS + int(0.1 * s) + 5 * s, 2, BID - 1000, 0.5)]}))
    records.append((5.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []}}))
    return _write(folder, records)


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
    t, s = T0_NS, fmt.NS_PER_S
    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}], "asks": [{"price": ASK, "size": 1.0}]}
    data = _write(tmp_path / "rec", [
        (0.1, {"ch": channels.board_snapshot(FX), "msg": snapshot}),
        (1.0, {"ch": channels.board_snapshot(FX), "msg": snapshot}),  # the strategy joins the bid here
        (1.0, {"mark": fmt.MARK_DISCONNECT, "code": 1012}),
        (3.0, {"mark": fmt.MARK_GAP, "from_ns": t + int(2.1 * s), "to_ns": t + int(5.1 * s),
               "code": 1012, "reason": "closed"}),
        (0.5, {"ch": channels.board_snapshot(FX), "msg": snapshot}),
        (1.0, {"ch": channels.executions(FX), "msg": [_print(t + int(6.6 * s), 1, BID, 0.7)]}),
        (5.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []}}),
    ])
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
    snapshot = {"mid_price": (BID + ASK) / 2, "bids": [{"price": BID, "size": 1.0}],
                "asks": [{"price": ASK, "size": 0.6}, {"price": ASK + 1000, "size": 1.0}]}
    restated = {"mid_price": (BID + ASK) / 2, "bids": [], "asks": [{"price": ASK, "size": 0.6}]}
    data = _write(tmp_path / "rec", [
        (0.1, {"ch": channels.board_snapshot(FX), "msg": snapshot}),
        (1.0, {"ch": channels.board_snapshot(FX), "msg": snapshot}),  # the first buy
        (1.0, {"ch": channels.board(FX), "msg": restated}),  # the second buy
        (5.0, {"ch": channels.board(FX), "msg": {"mid_price": (BID + ASK) / 2, "bids": [], "asks": []}}),
    ])
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
