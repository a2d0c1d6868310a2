"""The position server's history in SQLite (WAL): per-check market and bot samples, market bases,
and the account's margin samples (one per margin poll).

A restart keeps the charts (and the last known ``base_position`` of every market). All SQLite work
runs on one dedicated thread, off the event loop; the connection is never touched elsewhere.
Rows older than ``horizon`` seconds are pruned, so the file stays bounded.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

T = TypeVar("T")

#: Keep at least this much history (seconds), whatever the graph period.
MIN_HORIZON = 48 * 3600.0
PRUNE_EVERY = 200  # records between two prunes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS market_samples (
    ts REAL NOT NULL, market TEXT NOT NULL, position REAL NOT NULL, profit REAL NOT NULL,
    price REAL, exchange REAL, base REAL NOT NULL DEFAULT 0, diff REAL
);
CREATE INDEX IF NOT EXISTS market_samples_ts ON market_samples (market, ts);
CREATE TABLE IF NOT EXISTS bot_samples (
    ts REAL NOT NULL, bot TEXT NOT NULL, market TEXT NOT NULL, position REAL NOT NULL,
    profit REAL NOT NULL, api_remaining INTEGER
);
CREATE INDEX IF NOT EXISTS bot_samples_ts ON bot_samples (ts);
CREATE TABLE IF NOT EXISTS markets (market TEXT PRIMARY KEY, base REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account_samples (
    ts REAL NOT NULL, collateral REAL NOT NULL, open_pnl REAL NOT NULL, require_collateral REAL NOT NULL,
    keep_rate REAL, pnl_today REAL, bots_pnl REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS account_samples_ts ON account_samples (ts);
"""


class History:
    """Async facade over one SQLite file; ``await open()`` first, ``await close()`` at the end."""

    def __init__(self, path: str | Path, horizon: float = MIN_HORIZON) -> None:
        self.path = Path(path)
        self.horizon = max(horizon, MIN_HORIZON)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posserver-history")
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("History is not open")
        return self._db

    async def open(self) -> None:
        def _open() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db

        await self._run(_open)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(_close)
        self._pool.shutdown(wait=True)

    async def record(
        self,
        markets: Sequence[tuple[str, MarketSample, float, float | None]],
        bots: Sequence[BotSample],
    ) -> None:
        """One check: ``markets`` rows are (market, sample, base, diff)."""
        m_rows = [(s.ts, m, s.position, s.profit, s.price, s.exchange_position, base, diff)
                  for m, s, base, diff in markets]
        b_rows = [(b.ts, b.bot, b.market, b.position, b.profit, b.api_remaining) for b in bots]
        latest = max([s.ts for _, s, _, _ in markets] + [b.ts for b in bots], default=0.0)

        def _write() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT INTO market_samples VALUES (?,?,?,?,?,?,?,?)", m_rows)
                db.executemany("INSERT INTO bot_samples VALUES (?,?,?,?,?,?)", b_rows)
            self._writes += 1
            if self._writes % PRUNE_EVERY == 1:
                self._prune(db, latest)

        await self._run(_write)

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        if not now:
            return
        edge = now - self.horizon
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM market_samples WHERE ts < ?", (edge,))
            db.execute("DELETE FROM bot_samples WHERE ts < ?", (edge,))
            db.execute("DELETE FROM account_samples WHERE ts < ?", (edge,))

    async def record_account(self, sample: AccountSample) -> None:
        """One margin poll (pruned with the rest)."""
        row = (sample.ts, sample.collateral, sample.open_pnl, sample.require_collateral, sample.keep_rate,
               sample.pnl_today, sample.bots_pnl)

        def _write() -> None:
            with self._conn() as db:
                db.execute("INSERT INTO account_samples VALUES (?,?,?,?,?,?,?)", row)

        await self._run(_write)

    async def account_samples(self, since: float, limit: int = 20_000) -> list[AccountSample]:
        """Margin samples from ``since`` on, oldest first, at most ``limit`` (the newest kept)."""
        rows = await self._run(lambda: self._conn().execute(
            "SELECT ts, collateral, open_pnl, require_collateral, keep_rate, pnl_today, bots_pnl "
            "FROM account_samples WHERE ts >= ? ORDER BY ts", (since,)).fetchall())
        step = max(1, -(-len(rows) // limit))
        kept = rows[::step]
        if rows and kept[-1] is not rows[-1]:
            kept[-1] = rows[-1]
        return [AccountSample(ts=r[0], collateral=r[1], open_pnl=r[2], require_collateral=r[3], keep_rate=r[4],
                              pnl_today=r[5], bots_pnl=r[6]) for r in kept]

    async def prune(self, now: float) -> None:
        """Drop rows older than the horizon now (also done every few records)."""
        await self._run(lambda: self._prune(self._conn(), now))

    async def save_base(self, market: str, base: float, now: float) -> None:
        def _save() -> None:
            with self._conn() as db:
                db.execute("INSERT INTO markets VALUES (?,?,?) ON CONFLICT(market) DO UPDATE SET "
                           "base=excluded.base, updated=excluded.updated", (market, base, now))

        await self._run(_save)

    async def bases(self) -> dict[str, float]:
        """The last known base_position of every market seen before."""
        rows = await self._run(lambda: self._conn().execute("SELECT market, base FROM markets").fetchall())
        return {str(m): float(b) for m, b in rows}

    async def market_samples(self, market: str, since: float, limit: int = 20_000) -> list[MarketSample]:
        """Samples of ``market`` from ``since`` on, oldest first, at most ``limit`` (thinned evenly).

        The last sample before ``since`` comes first (the "carry-in"): it is the state at ``since``,
        so a chart's left edge shows the position held then. Only with samples from ``since`` on: a
        market no longer checked stays out of the reports. The thinning always keeps the newest.
        """
        def _read() -> list[tuple[float, float, float, float | None, float | None]]:
            db = self._conn()
            rows = db.execute(
                "SELECT ts, position, profit, price, exchange FROM market_samples "
                "WHERE market = ? AND ts >= ? ORDER BY ts", (market, since)).fetchall()
            if not rows:
                return rows
            return db.execute(
                "SELECT ts, position, profit, price, exchange FROM market_samples "
                "WHERE market = ? AND ts < ? ORDER BY ts DESC LIMIT 1", (market, since)).fetchall() + rows

        rows = await self._run(_read)
        step = max(1, -(-len(rows) // limit))  # ceil: thin evenly down to at most ``limit`` points
        kept = rows[::step]
        if rows and kept[-1] is not rows[-1]:
            kept[-1] = rows[-1]  # the newest one is "now" on the chart: never thinned away
        return [MarketSample(ts=r[0], position=r[1], profit=r[2], price=r[3], exchange_position=r[4])
                for r in kept]

    async def markets(self) -> list[str]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT DISTINCT market FROM market_samples").fetchall())
        return sorted(str(r[0]) for r in rows)

    async def recent_markets(self, since: float) -> set[str]:
        """Markets with a bot sample from ``since`` on."""
        rows = await self._run(lambda: self._conn().execute(
            "SELECT DISTINCT market FROM bot_samples WHERE ts >= ?", (since,)).fetchall())
        return {str(r[0]) for r in rows}

    async def bot_samples(self, since: float, limit: int = 50_000) -> list[BotSample]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT ts, bot, market, position, profit, api_remaining FROM bot_samples "
            "WHERE ts >= ? ORDER BY ts DESC LIMIT ?", (since, limit)).fetchall())
        return [BotSample(ts=r[0], bot=r[1], market=r[2], position=r[3], profit=r[4], api_remaining=r[5])
                for r in reversed(rows)]

    async def counts(self) -> tuple[int, int]:
        """(market rows, bot rows) — for tests and the status."""
        def _count() -> tuple[int, int]:
            db = self._conn()
            return (db.execute("SELECT COUNT(*) FROM market_samples").fetchone()[0],
                    db.execute("SELECT COUNT(*) FROM bot_samples").fetchone()[0])

        return await self._run(_count)
