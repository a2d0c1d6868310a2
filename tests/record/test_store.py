"""The day files without a network: retention, a new part per session (and the restart gap the
chained reader shows), a crash losing at most the unflushed tail, and the JST day arithmetic."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import orjson

from bfsx.record import DayFiles, Store, read_recording, read_recordings, recording_files
from bfsx.record.format import (
    JST,
    NS_PER_S,
    Frame,
    Marker,
    day_bounds_ns,
    file_name,
    jst_day,
    parse_file_name,
)
from record.helpers import FX, frames, gaps, marks


def _t(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=JST).timestamp()) * NS_PER_S


def _line(t_ns: int, i: int) -> bytes:
    return orjson.dumps({"t": t_ns, "ch": f"lightning_executions_{FX}", "msg": [{"id": i}]}) + b"\n"


def test_jst_days_and_names() -> None:
    assert jst_day(_t(2026, 12, 1, 23, 59, 59)) == dt.date(2026, 12, 1)
    assert jst_day(_t(2026, 12, 2)) == dt.date(2026, 12, 2)
    start, end = day_bounds_ns(dt.date(2026, 12, 2))
    assert start == _t(2026, 12, 2) and end == _t(2026, 12, 3) and jst_day(end - 1) == dt.date(2026, 12, 2)
    assert jst_day(_t(2026, 12, 2)) == dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC).date() + dt.timedelta(days=1)
    assert file_name(dt.date(2026, 12, 1)) == "2026-12-01.jsonl.zst"
    assert parse_file_name("2026-12-01.3.jsonl.zst") == (dt.date(2026, 12, 1), 3)
    assert parse_file_name("2026-13-01.jsonl.zst") is None and parse_file_name("notes.txt") is None


def test_retention_deletes_only_old_recordings(tmp_path: Path) -> None:
    folder = tmp_path / FX
    folder.mkdir()
    for name in ("2026-11-20.jsonl.zst", "2026-11-29.1.jsonl.zst", "2026-11-30.jsonl.zst", "notes.txt"):
        (folder / name).write_bytes(b"")
    files = DayFiles(tmp_path, retention_days=2)
    files.write(FX, _t(2026, 12, 1, 12), _line(_t(2026, 12, 1, 12), 1))
    assert sorted(p.name for p in folder.iterdir()) == ["2026-11-30.jsonl.zst", "2026-12-01.jsonl.zst", "notes.txt"]
    files.write(FX, _t(2026, 12, 3, 1), _line(_t(2026, 12, 3, 1), 2))  # a day without data in between
    files.close(_t(2026, 12, 3, 2))
    assert sorted(p.name for p in folder.iterdir()) == ["2026-12-03.jsonl.zst", "notes.txt"]
    assert files.files_deleted == 4


def test_a_new_session_never_appends_and_the_chain_shows_the_restart(tmp_path: Path) -> None:
    t0 = _t(2026, 12, 1, 10)
    for session in range(2):
        files = DayFiles(tmp_path)
        for i in range(3):
            t = t0 + (session * 60 + i) * NS_PER_S
            files.write(FX, t, _line(t, session * 10 + i))
        files.close(t0 + (session * 60 + 5) * NS_PER_S)
    paths = recording_files(tmp_path / FX)
    assert [p.name for p in paths] == ["2026-12-01.jsonl.zst", "2026-12-01.1.jsonl.zst"]
    recs = list(read_recordings(tmp_path / FX))
    (gap,) = gaps(recs)
    assert gap.reason == "restart" and gap.from_ns == t0 + 5 * NS_PER_S and gap.to_ns == t0 + 60 * NS_PER_S
    assert [f.message[0]["id"] for f in frames(recs)] == [0, 1, 2, 10, 11, 12]


def test_a_crash_loses_at_most_the_unflushed_tail(tmp_path: Path) -> None:
    files = DayFiles(tmp_path)
    t0 = _t(2026, 12, 1, 10)
    for i in range(100):
        files.write(FX, t0 + i, _line(t0 + i, i))
    files.flush()
    for i in range(100, 110):
        files.write(FX, t0 + i, _line(t0 + i, i))  # buffered, never flushed: lost in a crash
    (path,) = files.paths().values()
    crashed = tmp_path / "crashed.jsonl.zst"
    shutil.copy(path, crashed)  # the file as the OS has it at the moment of the crash

    recs = list(read_recording(crashed))
    assert [f.message[0]["id"] for f in frames(recs)] == list(range(100))
    assert isinstance(recs[-1], Marker) and recs[-1].kind == "truncated" and recs[-1].recv_ns == t0 + 99
    # a crash in the middle of writing a block: the block is lost, what came before is not
    cut = tmp_path / "cut.jsonl.zst"
    data = crashed.read_bytes()
    files.write(FX, t0 + 200, _line(t0 + 200, 200))
    files.flush()
    grown = path.read_bytes()
    cut.write_bytes(grown[: len(data) + (len(grown) - len(data)) // 2])
    assert [f.message[0]["id"] for f in frames(list(read_recording(cut)))] == list(range(100))
    files.close(t0 + 300)
    whole = list(read_recording(path))
    assert len(frames(whole)) == 111 and marks(whole, "close")[0] is whole[-1]


async def test_the_store_hands_lines_to_its_thread_in_order(tmp_path: Path) -> None:
    store = Store(DayFiles(tmp_path), flush_s=0.05)
    store.start()
    t0 = _t(2026, 12, 1, 10)
    for i in range(1000):
        assert store.put(FX, t0 + i, _line(t0 + i, i))
    await store.aclose(t0 + 2000)
    recs = list(read_recording(recording_files(tmp_path / FX)[0]))
    assert [f.message[0]["id"] for f in recs if isinstance(f, Frame)] == list(range(1000))
    assert store.written == 1000 and store.dropped == 0 and store.queue_bytes == 0 and store.write_errors == 0
