"""Journal: real SQLite files (WAL), dedupe across restarts, restore, compaction, and kill -9."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, Order, OrderState, OrderTracker
from bfsx.account.position import SNAPSHOT_KEY, Position
from bfsx.bitflyer.timestamps import JST

P = "FX_BTC_JPY"
NOON = datetime(2026, 9, 23, 12, 0, tzinfo=JST).timestamp()
DAY = 86400.0


def mkfill(exec_id: int, side: str = "BUY", size: float = 0.01, price: float = 100.0, *, t: float = NOON,
           acc: str = "JRF20260923-030000-000001", commission: float = 0.0, sfd: float = 0.0) -> Fill:
    return Fill(exec_id=exec_id, acceptance_id=acc, side=side, price=price, size=size,  # type: ignore[arg-type]
                commission=commission, sfd=sfd, time=t, product=P, child_order_id="JFX20260923-030000-000001F")


def mkorder(acc: str, state: OrderState = OrderState.ACTIVE, *, updated: float = NOON) -> Order:
    return Order(product=P, side="BUY", size=0.03, price=100.0, acceptance_id=acc, state=state,
                 child_order_id="JFX" + acc[3:] + "F", created=updated, updated=updated)


def test_wal_mode_and_synchronous(tmp_path: Path) -> None:
    for sync, level in (("NORMAL", 1), ("FULL", 2)):
        path = tmp_path / f"{sync}.db"
        with Journal(path, synchronous=sync) as j:  # type: ignore[arg-type]
            assert j._db.execute("PRAGMA synchronous").fetchone()[0] == level
            j.record_fill(mkfill(1))
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
        other.close()


def test_record_fill_dedupes_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal(path)
    assert j.record_fill(mkfill(10)) is True
    assert j.record_fill(mkfill(10)) is False
    j.close()
    j.close()  # idempotent
    j = Journal(path)
    assert j.record_fill(mkfill(10)) is False
    assert j.record_fill(mkfill(11)) is True
    assert j.fill_count() == 2
    j.close()


def test_load_returns_fills_in_arrival_order_open_orders_and_cursor(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        for eid in (30, 10, 20):  # a resync can journal an older exec id after a newer one
            j.record_fill(mkfill(eid))
        j.record_order(mkorder("JRF20260923-030000-000001"))
        j.record_order(mkorder("JRF20260923-030000-000002", OrderState.PENDING))
        done = mkorder("JRF20260923-030000-000003")
        j.record_order(done)
        done.state = OrderState.CANCELLED
        j.record_order(done)  # upsert: the latest state wins
        j.record_order(Order.new(P, "BUY", 0.01))  # no acceptance id: not journaled
        j.set("note", "hello")
        fills, orders, kv = j.load()
    assert [f.exec_id for f in fills] == [30, 10, 20]
    assert fills[0] == mkfill(30)
    assert {o.acceptance_id for o in orders} == {"JRF20260923-030000-000001", "JRF20260923-030000-000002"}
    assert all(isinstance(o.state, OrderState) and o.is_open for o in orders)
    assert kv["last_exec_id"] == "30" and kv["note"] == "hello"


def test_restart_restores_position_orders_and_todays_pnl_exactly(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "j.db"
    live, tracker = Position(), OrderTracker(P)
    j = Journal(path)
    for n in range(5):
        o = mkorder(f"JRF20260923-030000-00000{n}")
        tracker.accepted(o)
        j.record_order(o)
    for eid in range(1, 400):
        f = mkfill(eid, rng.choice(("BUY", "SELL")), rng.randint(1, 50) / 1000, float(rng.randint(90, 110)),
                   t=NOON - DAY + eid * 300, commission=rng.choice((0.0, 0.5)), sfd=rng.choice((0.0, -0.1)),
                   acc=f"JRF20260923-030000-00000{eid % 5}")
        assert j.record_fill(f)
        live.apply_fill(f)
    j.close()
    j = Journal(path)
    fills, orders, kv = j.load()
    restored, tracker2 = Position(), OrderTracker(P)
    restored.rebuild(fills, kv)
    tracker2.restore(orders, fills, kv)
    assert restored.snapshot() == live.snapshot()
    assert restored.lots == live.lots and restored.realized_today(NOON + 1000) == live.realized_today(NOON + 1000)
    assert len(tracker2.open_orders) == 5 and tracker2.last_exec_id == 399
    today = j.fills_since(NOON - 12 * 3600)
    assert today and all(f.time >= NOON - 12 * 3600 for f in today)
    assert [f.exec_id for f in today] == [f.exec_id for f in fills if f.time >= NOON - 12 * 3600]
    j.close()


def test_compact_folds_old_fills_into_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    live = Position()
    with Journal(path) as j:
        eid = 0
        for day in range(5, -1, -1):  # five old days and today
            for k in range(10):
                eid += 1
                f = mkfill(eid, "BUY" if k % 3 else "SELL", 0.01 * (k + 1), 100.0 + k + day, t=NOON - day * DAY + k)
                j.record_fill(f)
                live.apply_fill(f)
        old_order = mkorder("JRF20260918-030000-000001", OrderState.CANCELLED, updated=NOON - 5 * DAY)
        j.record_order(old_order)
        j.record_order(mkorder("JRF20260923-030000-000009", OrderState.ACTIVE, updated=NOON - 5 * DAY))
        folded = j.compact(keep_days=2, now=NOON)
        assert folded == 40 and j.fill_count() == 20
        assert j.record_fill(mkfill(3)) is False  # compacted exec ids stay deduped
        assert j.get_order(old_order.acceptance_id or "") is None  # finished and old: dropped
        assert j.compact(keep_days=2, now=NOON) == 0  # idempotent
    with Journal(path) as j:
        fills, orders, kv = j.load()
        assert SNAPSHOT_KEY in kv and kv["last_exec_id"] == "60"
        assert [o.acceptance_id for o in orders] == ["JRF20260923-030000-000009"]
        assert j.record_fill(mkfill(5)) is False
        rebuilt = Position()
        rebuilt.rebuild(fills, kv)
        assert rebuilt.snapshot() == live.snapshot()
        # A second compaction folds onto the first snapshot.
        assert j.compact(keep_days=1, now=NOON) == 10
        fills, _, kv = j.load()
        again = Position()
        again.rebuild(fills, kv)
        assert again.snapshot() == live.snapshot()
        with pytest.raises(ValueError, match="keep_days"):
            j.compact(0)


def test_compact_never_folds_past_a_fill_of_an_open_order(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        j.record_fill(mkfill(1, t=NOON - 9 * DAY, acc="JRF20260914-030000-000001"))
        j.record_fill(mkfill(2, t=NOON - 8 * DAY, acc="JRF20260915-030000-000001"))  # its order is still open
        j.record_fill(mkfill(3, t=NOON - 7 * DAY, acc="JRF20260914-030000-000001"))
        j.record_order(mkorder("JRF20260915-030000-000001", OrderState.PARTIALLY_FILLED, updated=NOON - 8 * DAY))
        assert j.compact(keep_days=1, now=NOON) == 1
        fills, orders, _ = j.load()
        assert [f.exec_id for f in fills] == [2, 3]
        # The open order's filled size is recomputed from its journaled fills.
        t = OrderTracker(P)
        t.restore(orders, fills)
        assert t.open_orders[0].filled_size == 0.01


_WRITER = textwrap.dedent(
    """
    import sys
    from bfsx.account.journal import Journal
    from bfsx.account.orders import Fill

    journal = Journal(sys.argv[1])
    n = 0
    while True:
        n += 1
        fill = Fill(exec_id=n, acceptance_id="JRF20260923-030000-000001", side="BUY" if n % 2 else "SELL",
                    price=100.0 + n % 7, size=0.01, time=1790000000.0 + n, product="FX_BTC_JPY")
        assert journal.record_fill(fill)
        sys.stdout.write(f"{n}\\n")  # only after the commit returned
        sys.stdout.flush()
    """
)


def test_fills_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    reported = 0
    deadline = time.monotonic() + 60
    try:
        while reported < 500 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()  # lines written before the kill landed
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    for line in rest.split():
        reported = max(reported, int(line))
    assert reported >= 500, "the writer did not get going"
    with Journal(path) as j:
        fills, _, kv = j.load()
    ids = [f.exec_id for f in fills]
    assert ids[:reported] == list(range(1, reported + 1))  # every reported fill, in order
    assert len(ids) in (reported, reported + 1)  # at most one committed but not yet reported
    assert int(kv["last_exec_id"]) == len(ids)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_wal_is_checkpointed_off_the_loop_and_folded_on_close(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.db"
    j = Journal(path, checkpoint_every=50)
    assert j._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # never inside a commit
    for eid in range(1, 501):
        j.record_fill(mkfill(eid))
    deadline = time.monotonic() + 30
    while j.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert j.checkpoints > 0
    # Writes go on while the checkpointer runs; nothing may be lost.
    for eid in range(501, 1001):
        j.record_fill(mkfill(eid))
    j.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    with Journal(path) as again:
        assert [f.exec_id for f in again.load()[0]] == list(range(1, 1001))


def test_record_batch_is_one_transaction(tmp_path: Path) -> None:
    """A frame's fills and order rows land together or not at all; only new fills come back."""
    from bfsx.account.orders import IntentState, OrderIntent

    path = tmp_path / "j.db"
    with Journal(path) as j:
        assert j.record_fill(mkfill(1))
        first = mkorder("JRF20260923-030000-000001", OrderState.PARTIALLY_FILLED)
        new = j.record_batch([mkfill(1), mkfill(2), mkfill(3)], [first, Order.new(P, "BUY", 0.01)])
        assert [f.exec_id for f in new] == [2, 3]  # exec 1 was counted before; the unsent order is skipped
        assert j.fill_count() == 3 and j.get_order(first.acceptance_id) == first

        def rows_then_crash() -> Iterator[Order]:
            yield mkorder("JRF20260923-030000-000002")
            raise OSError("disk full")

        with pytest.raises(OSError):
            j.record_batch([mkfill(4)], rows_then_crash())
        assert j.fill_count() == 3 and j.get_order("JRF20260923-030000-000002") is None  # rolled back
        assert j.record_batch([mkfill(4)], []) == [mkfill(4)]  # and nothing left half-written

        intent = OrderIntent.new(P, "BUY", 0.03, 100.0)
        j.record_intent(intent)
        j.record_batch([mkfill(5, acc="JRF20260923-030000-000003")], [mkorder("JRF20260923-030000-000003")],
                       intent.intent_id)
        assert j.intent_outcome(intent.intent_id) == (IntentState.PLACED, "JRF20260923-030000-000003")
    with Journal(path) as j:  # durable across a reopen
        fills, orders, _ = j.load()
        assert [f.exec_id for f in fills] == [1, 2, 3, 4, 5] and len(orders) == 2


def test_deferred_order_rows_share_a_later_commit(tmp_path: Path) -> None:
    """ORDER / CANCEL rows without a fill wait for a flush (or the next batch) and are written with
    the order's state at that time; a second connection (the restart after a kill -9) sees only
    committed rows."""
    path = tmp_path / "j.db"

    def on_disk(acc: str) -> str | None:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT state FROM orders WHERE acceptance_id = ?", (acc,)).fetchone()
        return None if row is None else str(row[0])

    a, b = mkorder("JRF20260923-030000-000001"), mkorder("JRF20260923-030000-000002")
    with Journal(path) as j:
        assert j.defer_orders([a]) is True  # first in the queue: schedule a flush
        assert j.defer_orders([b, Order.new(P, "BUY", 0.01)]) is False  # already scheduled
        assert on_disk(a.acceptance_id or "") is None  # not committed yet: costs no commit
        a.state = OrderState.CANCELLED
        j.flush()
        assert on_disk(a.acceptance_id or "") == "CANCELLED"  # the state at flush time
        assert on_disk(b.acceptance_id or "") == "ACTIVE"
        b.state = OrderState.EXPIRED
        j.defer_orders([b])
        assert j.record_batch([mkfill(1)], []) == [mkfill(1)]  # a fill's commit takes the queue along
        assert on_disk(b.acceptance_id or "") == "EXPIRED"
        b.state = OrderState.CANCELLED
        j.defer_orders([b])
    assert on_disk(b.acceptance_id or "") == "CANCELLED"  # close() writes what was left


def test_an_order_row_round_trips_every_field(tmp_path: Path) -> None:
    """Found by mutating ``_order``: a restored order must equal the journaled one field by field
    (a MARKET order has no price; the child order id may be unknown yet)."""
    market = Order(product=P, side="SELL", size=0.02, price=None, order_type="MARKET",
                   acceptance_id="JRF20260923-030000-000011", child_order_id=None, filled_size=0.01,
                   average_price=101.5, state=OrderState.ACTIVE, created=NOON, updated=NOON + 1, reason="partly")
    limit = mkorder("JRF20260923-030000-000012")
    limit.filled_size, limit.average_price, limit.reason = 0.005, 99.5, "x"
    with Journal(tmp_path / "j.db") as j:
        for o in (market, limit):
            j.record_order(o)
        _, orders, _ = j.load()
        assert j.get_order(market.acceptance_id or "") == market
    assert sorted(orders, key=lambda o: o.acceptance_id or "") == [market, limit]


# ---------------------------------------------------------------------------------------------- found by mutation
# Each test below kills mutants of the first full mutation run of journal.py (docs/mutation-survivors.md).
def test_the_highest_compacted_exec_id_stays_rejected(tmp_path: Path) -> None:
    """A fill folded into the snapshot is counted there: the exec id at the very top of the folded
    ones, replayed (a late event, a resync), must not be journaled and counted a second time."""
    with Journal(tmp_path / "j.db") as j:
        for eid in (1, 2, 3):
            j.record_fill(mkfill(eid, t=NOON - 2 * DAY))
        j.record_fill(mkfill(4))
        assert j.compact(keep_days=1, now=NOON) == 3
        assert j.record_fill(mkfill(3)) is False
        assert j.record_fill(mkfill(5)) is True


def test_compact_without_a_time_uses_the_clock(tmp_path: Path) -> None:
    """The runtime calls ``compact(keep_days=...)`` with no ``now``: it must use the current time."""
    with Journal(tmp_path / "j.db") as j:
        j.record_fill(mkfill(1, t=time.time() - 30 * DAY))
        j.record_fill(mkfill(2, t=time.time()))
        assert j.compact(keep_days=7) == 1 and j.fill_count() == 1


def test_a_fresh_journal_in_a_new_folder_has_no_exec_cursor(tmp_path: Path) -> None:
    """No fill journaled, none compacted: ``load`` gives no ``last_exec_id`` (not a made-up 1)."""
    with Journal(tmp_path / "new" / "sub" / "j.db") as j:  # missing parent folders are created
        assert "last_exec_id" not in j.load()[2]


def test_a_flush_after_close_writes_nothing_and_does_not_raise(tmp_path: Path) -> None:
    """An order event can arrive while the bot stops, after the journal closed: its deferred row is
    dropped (the restart's resync settles it from the exchange), never an error on a closed db."""
    j = Journal(tmp_path / "j.db")
    j.close()
    assert j.defer_orders([mkorder("JRF20260923-030000-000001")]) is True
    j.flush()


def test_compact_can_fold_every_fill(tmp_path: Path) -> None:
    """A bot that has not traded for days: every fill is older than the window and none belongs to
    an open order, so the whole fills table folds into the snapshot."""
    with Journal(tmp_path / "j.db") as j:
        live = Position()
        for eid in (1, 2):
            f = mkfill(eid, t=NOON - 10 * DAY)
            j.record_fill(f)
            live.apply_fill(f)
        assert j.compact(keep_days=1, now=NOON) == 2 and j.fill_count() == 0
        fills, _, kv = j.load()
        rebuilt = Position()
        rebuilt.rebuild(fills, kv)
        assert fills == [] and rebuilt.snapshot() == live.snapshot() and kv["last_exec_id"] == "2"


def _until(cond: object, what: str, timeout: float = 30.0) -> None:
    """Poll ``cond()`` until true; fail naming ``what`` after a generous ``timeout`` (a hang, not a
    timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_journal_left_open_never_keeps_the_process_alive(tmp_path: Path) -> None:
    """The checkpointer is a daemon thread: a bot that exits without closing its journal (a bug, an
    uncaught error on the way out) still exits instead of waiting for the thread forever."""
    with Journal(tmp_path / "d.db") as j:
        assert j._checkpointer.daemon is True
    code = "import sys; from bfsx.account.journal import Journal; j = Journal(sys.argv[1]); j.set('k', 'v')"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "open.db")], timeout=30,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_checkpointer_outlives_idle_rounds_and_checkpoints_later_writes(tmp_path: Path) -> None:
    """A round with nothing dirty (the idle wake-up) goes back to waiting: the thread must not end
    there, or a long run's WAL would only be folded at close."""
    with Journal(tmp_path / "idle.db", checkpoint_every=10, checkpoint_idle=0.01) as j:
        ck = j._checkpointer
        for _ in range(2):  # two wake-ups with nothing dirty: the second is taken only by a live loop
            ck.wake.set()
            _until(lambda: not ck.wake.is_set(), "an idle round")
        assert ck.is_alive() and j.checkpoints == 0
        for eid in range(1, 11):
            j.record_fill(mkfill(eid))
        _until(lambda: j.checkpoints == 1, "a checkpoint of the later writes")


def test_a_wal_beyond_max_frames_is_truncated_while_the_journal_is_open(tmp_path: Path) -> None:
    """Sustained writes never let a PASSIVE checkpoint restart the WAL: past ``max_frames`` the
    checkpointer truncates it (to 0 bytes). Below the bound only PASSIVE runs (the WAL keeps its
    size): the control."""
    for bound, truncated in ((1_000_000, False), (1, True)):
        path = tmp_path / f"wal-{bound}.db"
        with Journal(path, checkpoint_every=200) as j:
            j._checkpointer.max_frames = bound
            for eid in range(1, 200):
                j.record_fill(mkfill(eid))
            wal = Path(f"{path}-wal")
            assert wal.stat().st_size > 0
            j.record_fill(mkfill(200))  # the 200th write wakes the checkpointer
            _until(lambda: j.checkpoints == 1, "the checkpoint")
            assert (wal.stat().st_size == 0) is truncated, bound
