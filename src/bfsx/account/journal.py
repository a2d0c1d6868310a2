"""The bot's journal: every fill and order change, in SQLite (WAL), written before it is acted on.

Durability choice: ``journal_mode=WAL`` with ``synchronous=NORMAL``. The runtime commits once per
event frame (:meth:`Journal.record_batch`), before the frame's fills count; order-state changes
without a fill wait up to 0.1 s and share a commit (:meth:`Journal.defer_orders`). At commit the WAL frame is written (``write(2)``) into the OS page cache before the
call returns, so a **killed process (kill -9, crash, OOM) loses nothing** it committed. What NORMAL
gives up versus FULL is the fsync per commit: an *OS* crash or power loss can drop the last
transactions (never corrupt the file). FULL costs an fsync per fill (milliseconds on a VPS disk),
which would sit on the event loop between a fill and the strategy's reaction; an OS crash loses
the process too, and the restart's resync (``getexecutions(after=...)``, the exchange's own record)
recovers any fill the OS dropped. ``Journal(path, synchronous="FULL")`` is there for the cautious.

Writes are synchronous on the loop thread on purpose: a thread executor would let the runtime act
on a fill before it is on disk. One small WAL insert costs tens of microseconds (see
``bench/journal_write.py``). What is *not* cheap is a WAL checkpoint (copying the WAL into the
database file, with an fsync: ~10-15 ms, and SQLite runs it inside whichever commit crosses 1000
WAL pages). So the loop's connection has auto-checkpoint off, and a small daemon thread with its
own connection runs ``wal_checkpoint(PASSIVE)`` every ``checkpoint_every`` commits: PASSIVE never
blocks the writer, so the loop never stalls on an fsync. Only when sustained writes keep a PASSIVE
pass from ever catching up (the WAL restarts only once fully copied) and the WAL passes ~64 MB does
the thread take the write lock for one TRUNCATE checkpoint, so the file stays bounded.

Tables: ``fills`` (``exec_id`` UNIQUE: the dedupe that survives restarts; ``seq`` keeps arrival
order so a replay rebuilds exactly the live FIFO state), ``orders`` (by acceptance id, latest
state), ``intents`` (each order POST, written *before* it is sent and closed when its outcome is
known: a kill -9 between the exchange accepting an order and the reply being journaled leaves an
OPEN intent, which the restart resolves by looking the order up, so that order's fills are not
lost), ``kv`` (small facts: compaction snapshot, compacted exec id). :meth:`Journal.compact` folds
old fills into a :class:`~bfsx.account.position.Position` snapshot so the file stays bounded.

One journal, one process: :class:`Journal` holds an exclusive ``flock`` on ``<journal>.lock`` for
as long as it is open. Two live bots writing one journal would each count the other's fills as
lost, so a second process is refused at once (:class:`JournalInUse`, one line with the holder's
pid). The OS drops the lock when the holder dies, kill -9 included, so a crash never leaves a
journal that cannot be opened.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal, cast

import orjson

from bfsx import clock
from bfsx.account.orders import OPEN_STATES, Fill, IntentState, Order, OrderIntent, OrderState
from bfsx.account.position import SNAPSHOT_KEY, Position, jst_day_start
from bfsx.bitflyer.messages import Side
from bfsx.errors import UserError

log = logging.getLogger(__name__)

#: The journal's file name in the bot's log folder (``<log_folder>/journal.db``).
JOURNAL_FILE = "journal.db"
SCHEMA_VERSION = "1"
COMPACTED_KEY = "compacted_exec_id"  # fills at or below this exec id are folded into the snapshot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fills (
    seq INTEGER PRIMARY KEY,
    exec_id INTEGER NOT NULL UNIQUE,
    acceptance_id TEXT NOT NULL,
    child_order_id TEXT NOT NULL,
    product TEXT NOT NULL,
    side TEXT NOT NULL,
    price REAL NOT NULL,
    size REAL NOT NULL,
    commission REAL NOT NULL,
    sfd REAL NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    acceptance_id TEXT PRIMARY KEY,
    child_order_id TEXT,
    product TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    price REAL,
    size REAL NOT NULL,
    filled_size REAL NOT NULL,
    average_price REAL NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    intent_id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    price REAL,
    size REAL NOT NULL,
    sent_at REAL NOT NULL,
    state TEXT NOT NULL,
    acceptance_id TEXT,
    resolved REAL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_FILL_COLS = "exec_id, acceptance_id, child_order_id, product, side, price, size, commission, sfd, time"
_ORDER_COLS = (
    "acceptance_id, child_order_id, product, side, order_type, price, size, filled_size, "
    "average_price, state, created, updated, reason"
)
_INTENT_COLS = "intent_id, product, side, order_type, price, size, sent_at"
_OPEN = tuple(s.value for s in OPEN_STATES)


class _Checkpointer(threading.Thread):
    """Runs PASSIVE WAL checkpoints off the event loop when woken (and at most every ``idle`` s)."""

    def __init__(self, path: Path, idle: float) -> None:
        super().__init__(name=f"journal-checkpoint:{path.name}", daemon=True)
        self.path = path
        self.idle = idle
        self.wake = threading.Event()
        self.stopping = False
        self.dirty = False
        self.count = 0
        self.max_frames = 16_384  # ~64 MB of 4 KiB pages

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            while True:
                self.wake.wait(self.idle)
                self.wake.clear()
                if self.stopping:
                    return
                if not self.dirty:
                    continue
                self.dirty = False
                try:
                    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > self.max_frames:
                        # Sustained writes never let a PASSIVE pass catch up, and the WAL only
                        # restarts once fully copied: take the writer lock briefly to bound it.
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                    self.count += 1
                except sqlite3.Error as e:  # the next round retries; the WAL just grows meanwhile
                    log.warning("journal checkpoint failed: %s", e)
        finally:
            db.close()


class JournalInUse(UserError):
    """Another live process holds this journal: a second bot with the same name or log folder."""


def lock_path(path: str | Path) -> Path:
    """The lock file of the journal at ``path``: ``<journal>.lock`` beside it."""
    p = Path(path)
    return p.with_name(p.name + ".lock")


def _lock(path: Path) -> IO[bytes]:
    """Take the exclusive lock of the journal at ``path`` or raise :class:`JournalInUse`.

    A separate lock file, not the database: SQLite takes POSIX (fcntl) locks on the database, and
    closing *any* descriptor of a file drops every POSIX lock the process holds on it, while
    ``flock`` on its own file is independent of SQLite and released only with our descriptor (or
    by the OS when the process dies). The file is never deleted: unlinking it would let a third
    process lock a fresh inode while the holder still holds the old one.
    """
    where = lock_path(path)
    fd = os.open(where, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    handle = os.fdopen(fd, "r+b", buffering=0)  # closed (and so unlocked) even if we are dropped
    try:
        _try_lock(handle)
    except OSError as e:
        holder = handle.read(32).decode("ascii", "replace").strip() or "unknown"
        handle.close()
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            raise JournalInUse(
                f"journal {path} is in use by another running bot (pid {holder}); "
                f"two bots need different bot_name (or log_folder)"
            ) from None
        raise
    # Who holds it, for the message above; written after the lock, so never someone else's pid.
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    return handle


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[bytes]) -> None:
        # Windows has no flock: lock a byte far past the pid text, which must stay readable to others.
        handle.seek(1 << 20)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        finally:
            handle.seek(0)
else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class Journal:
    """SQLite journal of one bot. Use from one thread (the event loop's).

    Opening it takes the journal's exclusive lock for as long as it stays open (see
    :func:`lock_path`); a journal held by another live process raises :class:`JournalInUse`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        checkpoint_every: int = 256,
        checkpoint_idle: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Locked before SQLite touches the file: a refused second bot must not even open it.
        self._lock = _lock(self.path)
        try:
            self._open(synchronous, checkpoint_every, checkpoint_idle)
        except BaseException:
            self._lock.close()
            raise

    def _open(self, synchronous: Literal["NORMAL", "FULL"], checkpoint_every: int, checkpoint_idle: float) -> None:
        # Autocommit (isolation_level=None): every statement is its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode ({mode})")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO kv VALUES ('schema', ?)", (SCHEMA_VERSION,))
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (COMPACTED_KEY,)).fetchone()
        self._compacted = int(row[0]) if row else 0
        self._checkpoint_every = max(1, checkpoint_every)
        self._writes = 0
        self._checkpointer = _Checkpointer(self.path, checkpoint_idle)
        self._checkpointer.start()
        self._closed = False
        self._deferred: dict[str, Order] = {}  # acceptance id -> order whose latest row is not written yet

    @property
    def checkpoints(self) -> int:
        """Background WAL checkpoints done so far."""
        return self._checkpointer.count

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes >= self._checkpoint_every:
            self._writes = 0
            self._checkpointer.dirty = True
            self._checkpointer.wake.set()

    # ------------------------------------------------------------------ writes (hot path)
    def record_fill(self, fill: Fill) -> bool:
        """Journal a fill; False if its exec id was journaled before (already counted: do not act)."""
        new = self._insert_fill(fill)
        if new:
            self._wrote()
        return new

    def record_order(self, order: Order, intent_id: str | None = None) -> None:
        """Journal an order's current fields (upsert by acceptance id); orders without one (refused
        locally, or not sent) are not journaled. With ``intent_id``, the intent it came from is
        closed as PLACED in the same transaction: the order row and the closed intent land together."""
        if not order.acceptance_id:
            return
        if intent_id is not None:
            self.record_batch((), (order,), intent_id)
            return
        self._deferred.pop(order.acceptance_id, None)
        self._upsert_order(order)  # one autocommit statement: cheaper than a BEGIN ... COMMIT
        self._wrote()

    def record_batch(self, fills: Iterable[Fill], orders: Iterable[Order], intent_id: str | None = None) -> list[Fill]:
        """Journal what one event frame (or one reply) brought, in ONE transaction: the fills, then
        the orders' current rows, and with ``intent_id`` the intent that the (one) order came from,
        closed as PLACED. Returns the fills not journaled before: the caller counts exactly those,
        after this returns, so a fill is durable before it counts. One commit per frame instead of
        one per row: a taker order's ORDER, EXECUTIONs and EXPIRE often share a frame, and each
        commit holds the loop for tens of microseconds."""
        new: list[Fill] = []
        with self._transaction():
            for fill in fills:
                if self._insert_fill(fill):
                    new.append(fill)
            for order in orders:
                if order.acceptance_id:
                    self._deferred.pop(order.acceptance_id, None)
                    self._upsert_order(order)
                    if intent_id is not None:
                        self._close_intent(intent_id, IntentState.PLACED, order.acceptance_id)
            for order in self._deferred.values():  # rides along: no commit of its own
                self._upsert_order(order)
        self._deferred.clear()
        self._wrote()
        return new

    def defer_orders(self, orders: Iterable[Order]) -> bool:
        """Queue order rows for the next write (:meth:`flush`, or the next :meth:`record_batch`,
        whichever comes first); the row written is the order's state at that time. For state
        changes that carry no fill (ORDER, CANCEL, EXPIRE): a kill -9 before the flush leaves the
        journal with the previous state, which the restart's resync settles from the exchange, so
        these need not cost a commit each. Fills and placed orders are never deferred. Returns
        True when the queue was empty before (the caller schedules a flush)."""
        was_empty = not self._deferred
        for order in orders:
            if order.acceptance_id:
                self._deferred[order.acceptance_id] = order
        return was_empty and bool(self._deferred)

    def flush(self) -> None:
        """Write the deferred order rows, in one transaction."""
        if self._closed or not self._deferred:
            return
        with self._transaction():
            for order in self._deferred.values():
                self._upsert_order(order)
        self._deferred.clear()
        self._wrote()

    def _insert_fill(self, fill: Fill) -> bool:
        if fill.exec_id <= self._compacted:
            return False
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO fills ({_FILL_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (fill.exec_id, fill.acceptance_id, fill.child_order_id, fill.product, fill.side,
             fill.price, fill.size, fill.commission, fill.sfd, fill.time),
        )
        return bool(cur.rowcount == 1)

    def _upsert_order(self, order: Order) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO orders ({_ORDER_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (order.acceptance_id, order.child_order_id, order.product, order.side, order.order_type,
             order.price, order.size, order.filled_size, order.average_price, order.state.value,
             order.created, order.updated, order.reason),
        )

    def record_intent(self, intent: OrderIntent) -> None:
        """Journal an order about to be sent, as OPEN. Call it before the POST: if the process dies
        before the reply is journaled, the restart finds it here and looks the order up."""
        self._db.execute(
            f"INSERT INTO intents ({_INTENT_COLS}, state) VALUES (?,?,?,?,?,?,?,?)",
            (intent.intent_id, intent.product, intent.side, intent.order_type, intent.price, intent.size,
             intent.sent_at, IntentState.OPEN.value),
        )
        self._wrote()

    def close_intent(self, intent_id: str, state: IntentState, acceptance_id: str | None = None) -> None:
        """Record an intent's outcome when no order row goes with it (FAILED, NOT_PLACED, UNKNOWN);
        a placed one is closed by :meth:`record_order` with its ``intent_id``."""
        self._close_intent(intent_id, state, acceptance_id)
        self._wrote()

    def _close_intent(self, intent_id: str, state: IntentState, acceptance_id: str | None) -> None:
        self._db.execute(
            "UPDATE intents SET state = ?, acceptance_id = ?, resolved = ? WHERE intent_id = ?",
            (state.value, acceptance_id, clock.time(), intent_id),
        )

    def set(self, key: str, value: str) -> None:
        """Store a small fact in the kv table."""
        self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ reads
    def load(self) -> tuple[list[Fill], list[Order], dict[str, str]]:
        """Everything a restart needs: fills in journal (arrival) order, the orders still open,
        and the kv table plus ``last_exec_id`` (highest journaled exec id, compacted ones included).
        Rebuild with ``Position.rebuild(fills, kv)`` and ``OrderTracker.restore(orders, fills, kv)``."""
        self.flush()
        fills = self._fills("")
        marks = ",".join("?" * len(_OPEN))
        orders = [
            _order(r)
            for r in self._db.execute(
                f"SELECT {_ORDER_COLS} FROM orders WHERE state IN ({marks}) ORDER BY created", _OPEN
            )
        ]
        kv = {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM kv")}
        top = self._db.execute("SELECT MAX(exec_id) FROM fills").fetchone()[0]
        last = max(int(top or 0), self._compacted)
        if last:
            kv["last_exec_id"] = str(last)
        return fills, orders, kv

    def open_intents(self, product: str | None = None) -> list[OrderIntent]:
        """Intents still OPEN (their outcome unknown), oldest first; only ``product``'s if given."""
        where, args = "state = ?", [IntentState.OPEN.value]
        if product is not None:
            where += " AND product = ?"
            args.append(product)
        rows = self._db.execute(f"SELECT {_INTENT_COLS} FROM intents WHERE {where} ORDER BY sent_at", args)
        return [
            OrderIntent(intent_id=str(i), product=str(p), side=cast(Side, s), order_type=str(t),
                        price=None if pr is None else float(pr), size=float(sz), sent_at=float(at))
            for i, p, s, t, pr, sz, at in rows
        ]

    def intent_outcome(self, intent_id: str) -> tuple[IntentState, str | None] | None:
        """(state, acceptance id) of one intent, or None if it was never journaled (or compacted)."""
        row = self._db.execute("SELECT state, acceptance_id FROM intents WHERE intent_id = ?", (intent_id,)).fetchone()
        return None if row is None else (IntentState(str(row[0])), None if row[1] is None else str(row[1]))

    def fills_since(self, day_start: float) -> list[Fill]:
        """Journaled fills executed at or after ``day_start`` (epoch seconds), in journal order."""
        return self._fills("WHERE time >= ?", (day_start,))

    def get_order(self, acceptance_id: str) -> Order | None:
        """The journaled row of one order."""
        self.flush()
        row = self._db.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE acceptance_id = ?", (acceptance_id,)).fetchone()
        return _order(row) if row else None

    def fill_count(self) -> int:
        """Fills currently in the table (compacted ones excluded)."""
        return int(self._db.execute("SELECT COUNT(*) FROM fills").fetchone()[0])

    def _fills(self, where: str, args: tuple[object, ...] = ()) -> list[Fill]:
        rows = self._db.execute(f"SELECT {_FILL_COLS} FROM fills {where} ORDER BY seq", args)
        return [
            Fill(exec_id=int(e), acceptance_id=a, child_order_id=c, product=p, side=cast(Side, s),
                 price=pr, size=sz, commission=cm, sfd=sf, time=t)
            for e, a, c, p, s, pr, sz, cm, sf, t in rows
        ]

    # ------------------------------------------------------------------ housekeeping
    def compact(self, keep_days: int, now: float | None = None) -> int:
        """Fold fills older than the last ``keep_days`` JST days (today counts as one) into the
        position snapshot, and drop finished orders and closed intents older than that (OPEN
        intents stay until resolved). Only a prefix of the journal is folded, and never past a fill
        of a still-open order, so a replay reproduces the live FIFO state exactly. Exec ids at or below the folded ones stay rejected by
        :meth:`record_fill`. Returns the number of fills folded."""
        if keep_days < 1:
            raise ValueError("compact(): keep_days must be >= 1 (today is never compacted)")
        self.flush()
        cutoff = jst_day_start(clock.time() if now is None else now) - (keep_days - 1) * 86400
        marks = ",".join("?" * len(_OPEN))
        stop = self._db.execute(
            f"""SELECT MIN(seq) FROM fills WHERE time >= ?
                OR acceptance_id IN (SELECT acceptance_id FROM orders WHERE state IN ({marks}))""",
            (cutoff, *_OPEN),
        ).fetchone()[0]
        limit = "" if stop is None else f"WHERE seq < {int(stop)}"
        old = self._fills(limit)
        with self._transaction():
            if old:
                kv = dict(self._db.execute("SELECT key, value FROM kv WHERE key = ?", (SNAPSHOT_KEY,)).fetchall())
                position = Position()
                position.rebuild(old, kv)
                top = max(self._compacted, max(f.exec_id for f in old))
                self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)",
                                 (SNAPSHOT_KEY, orjson.dumps(position.snapshot()).decode()))
                self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (COMPACTED_KEY, str(top)))
                self._db.execute(f"DELETE FROM fills {limit}")
                self._compacted = top
            self._db.execute(f"DELETE FROM orders WHERE updated < ? AND state NOT IN ({marks})", (cutoff, *_OPEN))
            self._db.execute("DELETE FROM intents WHERE state != ? AND resolved < ?", (IntentState.OPEN.value, cutoff))
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(old)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Stop the checkpointer, fold the WAL into the database file and close (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        except sqlite3.Error as e:
            log.warning("journal: writing the last order rows failed: %s", e)
        self._closed = True
        self._checkpointer.stopping = True
        self._checkpointer.wake.set()
        self._checkpointer.join(timeout=10)
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as e:
            log.warning("journal final checkpoint failed: %s", e)
        self._db.close()
        self._lock.close()  # releases the flock: another process may open the journal now

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _order(row: tuple[object, ...]) -> Order:
    acc, coid, product, side, otype, price, size, filled, avg, state, created, updated, reason = row
    return Order(
        product=str(product), side=cast(Side, side), size=float(cast(float, size)),
        price=None if price is None else float(cast(float, price)), order_type=str(otype),
        acceptance_id=str(acc), child_order_id=None if coid is None else str(coid),
        filled_size=float(cast(float, filled)), average_price=float(cast(float, avg)),
        state=OrderState(str(state)), created=float(cast(float, created)),
        updated=float(cast(float, updated)), reason=str(reason),
    )
