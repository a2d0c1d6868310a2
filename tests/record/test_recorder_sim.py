"""The recorder on the in-process simulator: what it writes matches what the exchange sent (in
order, receive times strictly increasing across products), it
survives a 1012 maintenance close (and any other close) with a gap marker, a slow disk drops frames
(counted and marked) without stalling the read loop, and days rotate at JST midnight."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import aiohttp
import pytest

from bfsx.bitflyer import channels
from bfsx.record import DayFiles, Store, read_recording
from bfsx.record.format import JST, NS_PER_S, Frame, jst_day
from bfsx.sim.hooks import eventually
from bfsx.sim.server import SimServer
from record.helpers import FX, MakeRecorder, SlowSink, drops, frames, gaps, marks, records

BTC = "BTC_JPY"


def _execution_ids(recs: list[Frame]) -> list[int]:
    return [row["id"] for f in recs for row in f.message]


async def test_records_the_public_channels_in_order_and_the_executions_match_the_exchange(
    sim: SimServer, make_recorder: MakeRecorder, tmp_path: Path
) -> None:
    rec = make_recorder(products=[FX, BTC])
    await rec.start()
    snapshot = channels.board_snapshot(FX)
    await eventually(lambda: rec.frames_by_product[FX] > 40 and rec.store.written > 40, what="40 frames written")
    async with aiohttp.ClientSession() as s, s.get(
        f"{sim.url}/v1/getexecutions", params={"product_code": FX, "count": "1000"}
    ) as r:
        exchange = {row["id"]: row for row in await r.json()}
    await rec.stop()

    recs = records(tmp_path / "rec" / FX)
    assert marks(recs, "open")[0] is recs[0] and marks(recs, "close")[-1] is recs[-1]
    assert recs[0].data["product"] == FX and recs[0].data["reason"] == "start"  # type: ignore[union-attr]
    got = frames(recs)
    assert len(got) == rec.frames_by_product[FX] and not gaps(recs) and not drops(recs)
    times = [f.recv_ns for f in got]
    assert times == sorted(set(times))  # strictly increasing
    assert recs[0].recv_ns < times[0]  # the file opened at the start, not at the first frame
    # ... across products too: merging the files by time restores the order of the one socket
    other = [f.recv_ns for f in frames(records(tmp_path / "rec" / BTC))]
    assert other and len(other) == rec.frames_by_product[BTC] and not set(other) & set(times)
    kinds = {f.channel for f in got}
    assert {snapshot, channels.board(FX), channels.executions(FX)} <= kinds
    # every execution the exchange printed while we listened is there, once, with the same fields
    ids = _execution_ids(frames(recs, channels.EXECUTIONS))
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    listened = [i for i in exchange if ids[0] <= i <= ids[-1]]
    assert sorted(listened) == ids
    for f in frames(recs, channels.EXECUTIONS):
        for row in f.message:
            assert {k: row[k] for k in ("id", "side", "price", "size")} == {
                k: exchange[row["id"]][k] for k in ("id", "side", "price", "size")
            }
    # the snapshot is a whole book: the backtest can start from it
    first_snapshot = next(f for f in got if f.channel == snapshot)
    assert first_snapshot.message["bids"] and first_snapshot.message["asks"] and "mid_price" in first_snapshot.message


@pytest.mark.parametrize(("faults", "code", "reason"), [
    ({"maintenance": True}, 1012, "maintenance"),
    ({"close_websockets": 1011}, 1011, "disconnect"),
])
async def test_a_close_is_marked_as_a_gap_and_recording_goes_on(
    sim: SimServer, make_recorder: MakeRecorder, tmp_path: Path, faults: dict[str, object], code: int, reason: str
) -> None:
    rec = make_recorder()
    await rec.start()
    await eventually(lambda: rec.frames_by_product[FX] > 10, what="frames before the close")
    await sim.set_faults(**faults)
    await eventually(lambda: rec.disconnects == 1 and rec.gaps == 1, what="the disconnect and the gap")
    await sim.set_faults(maintenance=False)
    after = rec.frames
    await eventually(lambda: rec.frames > after + 20 and rec.connected, what="frames after the reconnect")
    await rec.stop()

    recs = records(tmp_path / "rec" / FX)
    (gap,) = gaps(recs)
    (disconnect,) = marks(recs, "disconnect")
    assert disconnect.data["code"] == code
    assert gap.code == code and gap.reason == reason and 0 <= gap.from_ns <= gap.to_ns
    i_disc, i_gap = recs.index(disconnect), recs.index(gap)
    assert i_disc < i_gap
    before, between, later = recs[:i_disc], recs[i_disc + 1:i_gap], recs[i_gap + 1:]
    assert not frames(between)  # nothing is recorded while disconnected
    assert max(f.recv_ns for f in frames(before)) == gap.from_ns  # the hole starts after the last frame
    assert all(f.recv_ns >= gap.to_ns for f in frames(later))
    assert len(frames(later, channels.EXECUTIONS)) > 0  # the market is recorded again
    assert marks(recs, "close")[-1] is recs[-1]


async def test_a_slow_disk_drops_counted_frames_and_never_stalls_the_reader(
    make_recorder: MakeRecorder, tmp_path: Path
) -> None:
    sink = SlowSink(DayFiles(tmp_path / "rec"), delay_s=0.2)  # 5 lines/s; the market sends ~25 frames/s
    store = Store(sink, max_queue_lines=20, max_queue_bytes=256 * 1024, flush_s=0.1)
    rec = make_recorder(store)
    await rec.start()
    await eventually(lambda: store.written > 5, what="first lines written")
    sink.slow.set()
    writes, received = sink.writes, rec.frames
    # the read loop goes on taking frames at the market's pace while the writer crawls
    await eventually(lambda: store.dropped > 30, what="frames dropped")
    assert rec.frames - received > 2 * (sink.writes - writes)
    assert store.queue_lines <= 20 + 2 and store.max_queue_bytes_seen <= 256 * 1024 + 1024
    sink.slow.clear()
    await eventually(lambda: store.drop_markers >= 1 and store.queue_lines == 0, what="the drop marker written")
    await rec.stop()

    recs = records(tmp_path / "rec" / FX)
    marked = drops(recs)
    assert marked and sum(d.frames for d in marked) == store.dropped
    assert all(d.from_ns <= d.to_ns <= d.recv_ns for d in marked)
    assert len(frames(recs)) == rec.frames - store.dropped
    times = [r.recv_ns for r in recs if isinstance(r, Frame)]
    assert times == sorted(times)


async def test_days_rotate_at_jst_midnight_on_the_recorders_clock(make_recorder: MakeRecorder, tmp_path: Path) -> None:
    midnight = dt.datetime(2026, 12, 2, tzinfo=JST)
    start = int(midnight.timestamp()) * NS_PER_S - NS_PER_S // 2  # half a second before midnight
    real0 = time.time_ns()

    def clock() -> int:
        return start + (time.time_ns() - real0)

    rec = make_recorder(clock_ns=clock)
    await rec.start()
    after = int(midnight.timestamp()) * NS_PER_S + NS_PER_S // 2
    await eventually(lambda: clock() > after and rec.frames_by_product[FX] > 20, what="frames on both sides of midnight")
    await rec.stop()

    folder = tmp_path / "rec" / FX
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["2026-12-01.jsonl.zst", "2026-12-02.jsonl.zst"]
    old, new = (list(read_recording(folder / n)) for n in names)
    assert marks(old, "close")[0].data["reason"] == "rotate" and marks(old, "close")[0] is old[-1]
    assert marks(new, "open")[0].data["reason"] == "rotate" and marks(new, "open")[0] is new[0]
    assert frames(old) and frames(new)
    assert {jst_day(f.recv_ns) for f in frames(old)} == {dt.date(2026, 12, 1)}
    assert {jst_day(f.recv_ns) for f in frames(new)} == {dt.date(2026, 12, 2)}
    assert not gaps(records(folder))  # a rotation is not a gap
