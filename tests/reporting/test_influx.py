"""InfluxWriter against a real influxd: points round-trip, the documented Grafana query works, a hung
or dead server never blocks the writer and its buffer stays bounded, and it reconnects."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from influxdb import InfluxDBClient

from bfsx.reporting.influx import ACCOUNT_MEASUREMENT, BOT_MEASUREMENT, MARKET_MEASUREMENT, InfluxWriter
from bfsx.reporting.samples import AccountSample, BotSample, MarketSample

from .conftest import InfluxServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "influxdb.md"


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def writers() -> Iterator[list[InfluxWriter]]:
    made: list[InfluxWriter] = []
    yield made
    for w in made:
        w.close(timeout=5)


def query(server: InfluxServer, q: str, database: str) -> list[dict[str, Any]]:
    client = InfluxDBClient("127.0.0.1", server.port, database=database, timeout=10)
    try:
        return list(client.query(q, epoch="ms").get_points())
    finally:
        client.close()


def test_points_round_trip_and_grafana_query(influxd: InfluxServer, writers: list[InfluxWriter]) -> None:
    writer = InfluxWriter("127.0.0.1", influxd.port, "bfsx_test", flush_interval=0.05)
    writers.append(writer)
    now = time.time()
    t0 = round(now - 300, 3)
    writer.write_bots(
        [
            BotSample(t0, "mm_spread", "FX_BTC_JPY", 0.05, 1234.5, 480),
            BotSample(t0, "scalping", "FX_BTC_JPY", -0.02, -300.0, None),
            BotSample(t0 + 120, "mm_spread", "FX_BTC_JPY", 0.0, 1500.0, 470),
        ]
    )
    writer.write_markets(
        {
            "FX_BTC_JPY": [
                MarketSample(t0, 0.03, 934.5, 10_000_000.0, 0.04),
                MarketSample(t0 + 120, 0.0, 1200.0, None, None),
            ]
        }
    )
    writer.write_account([
        AccountSample(t0, 2_000_000.0, -1500.0, 2_500_000.0, 0.7994, -2200.0, -1800.0),
        AccountSample(t0 + 120, 2_000_000.0, 0.0, 0.0, None, None, 0.0),  # flat, PnL not known yet
    ])
    wait_for(lambda: writer.written == 7, what="7 points written")
    assert writer.connected is True and writer.dropped == 0

    bots = query(influxd, f'SELECT * FROM "{BOT_MEASUREMENT}" ORDER BY time', "bfsx_test")
    assert [(p["bot"], p["market"], p["time"]) for p in bots] == [
        ("mm_spread", "FX_BTC_JPY", round(t0 * 1000)),
        ("scalping", "FX_BTC_JPY", round(t0 * 1000)),
        ("mm_spread", "FX_BTC_JPY", round((t0 + 120) * 1000)),
    ]
    assert bots[0]["position"] == 0.05 and bots[0]["profit"] == 1234.5 and bots[0]["api_remaining"] == 480
    assert bots[1]["api_remaining"] is None  # unknown budget: field absent, not 0
    assert bots[2]["position"] == 0.0  # float field even for a flat position (no type conflict)

    markets = query(influxd, f'SELECT * FROM "{MARKET_MEASUREMENT}" ORDER BY time', "bfsx_test")
    assert markets[0]["market"] == "FX_BTC_JPY"
    assert markets[0]["price"] == 10_000_000.0
    assert markets[0]["exchange_position"] == 0.04
    assert markets[0]["diff"] == pytest.approx(0.01)
    assert markets[1]["price"] is None and markets[1]["diff"] is None

    account = query(influxd, f'SELECT * FROM "{ACCOUNT_MEASUREMENT}" ORDER BY time', "bfsx_test")
    assert account[0]["keep_rate"] == 0.7994 and account[0]["collateral"] == 2_000_000.0
    assert account[0]["pnl_gap"] == pytest.approx(-400.0) and account[0]["open_pnl"] == -1500.0
    assert account[1]["keep_rate"] is None and account[1]["pnl_today"] is None  # absent, never 0
    assert account[1]["pnl_gap"] is None and account[1]["require_collateral"] == 0.0

    # Every example query of docs/influxdb.md, with Grafana's macros filled in as Grafana would.
    queries = re.findall(r"```sql\n(.*?)\n```", DOCS.read_text(), flags=re.S)
    assert len(queries) >= 4
    for q in queries:
        rows = query(
            influxd, q.replace("$timeFilter", "time > now() - 6h").replace("$__interval", "1m"), "bfsx_test"
        )
        assert rows, q
    per_bot = query(
        influxd,
        'SELECT last("profit") FROM "bfsx_bot" WHERE time > now() - 6h GROUP BY time(1m), "bot" fill(none)',
        "bfsx_test",
    )
    assert {round(p["last"], 1) for p in per_bot} == {1234.5, -300.0, 1500.0}


def test_hung_or_dead_server_never_blocks_and_buffer_is_bounded(
    influxd: InfluxServer, writers: list[InfluxWriter]
) -> None:
    writer = InfluxWriter(
        "127.0.0.1",
        influxd.port,
        "bfsx_outage",
        max_buffer=100,
        batch_size=50,
        flush_interval=0.05,
        timeout=60,
        max_backoff=0.3,
    )
    writers.append(writer)
    base = time.time() - 3600

    def bot(i: int) -> BotSample:
        return BotSample(base + i, "mm", "FX_BTC_JPY", i / 1000, float(i), i)

    writer.write_bots([bot(0)])
    wait_for(lambda: writer.written == 1, what="first point")

    # Hung server: the flusher's request gets no answer, yet writes return and stay bounded.
    influxd.pause()
    writer.write_bots([bot(1)])
    wait_for(lambda: writer.buffered == 0, what="the flusher to take the point in flight")
    for i in range(2, 502):
        writer.write_bots([bot(i)])
        assert writer.buffered <= 100
    assert writer.written == 1  # the flusher is still stuck in its request: the writes did not wait
    assert writer.buffered == 100 and writer.dropped == 400
    influxd.resume()
    wait_for(lambda: writer.written == 102, what="hung batch and buffer flushed after SIGCONT")

    # Dead server: connection refused, points buffered (bounded), then written after a restart.
    influxd.stop()
    for i in range(502, 1002):
        writer.write_bots([bot(i)])
        assert writer.buffered <= 100
    wait_for(lambda: writer.connected is False, what="writer to notice the outage")
    wait_for(lambda: writer.buffered == 100, what="failed batch put back")
    assert writer.dropped == 800
    influxd.start()
    wait_for(lambda: writer.written == 202, timeout=30, what="reconnect and flush")
    assert writer.connected is True

    rows = query(influxd, 'SELECT "api_remaining" FROM "bfsx_bot" ORDER BY time', "bfsx_outage")
    kept = [p["api_remaining"] for p in rows]
    # The first point, the hung batch, the newest 100 of each burst: the oldest were dropped.
    assert kept == [0, 1, *range(402, 502), *range(902, 1002)]
