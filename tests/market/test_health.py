"""HealthPoller against the simulator's getboardstate, through the real RestClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bfsx.bitflyer.rest import RestClient
from bfsx.market import UNKNOWN, HealthPoller
from bfsx.sim.server import SimServer


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[RestClient]:
    async with RestClient(sim.url, retries=1, timeout=5.0) as client:
        yield client


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_normal_then_forced_health_then_maintenance(sim: SimServer, rest: RestClient) -> None:
    poller = HealthPoller(rest, "FX_BTC_JPY", interval=0.05)
    assert poller.health == UNKNOWN and poller.state == UNKNOWN and not poller.can_trade  # never polled
    changes: list[tuple[str, str]] = []
    poller.on_change.append(lambda h, s: changes.append((h, s)))
    await poller.start()
    try:
        assert (poller.health, poller.state) == ("NORMAL", "RUNNING") and poller.can_trade
        await sim.set_faults(health="SUPER BUSY")
        await until(lambda: poller.health == "SUPER BUSY")
        assert poller.can_trade  # the default worst tolerated health
        await sim.set_faults(health="NO ORDER")
        await until(lambda: poller.health == "NO ORDER")
        assert not poller.can_trade
        await sim.set_faults(health=None, maintenance=True)
        await until(lambda: poller.state == "CLOSED")
        assert not poller.can_trade
        await sim.set_faults(maintenance=False)
        await until(lambda: poller.can_trade)
    finally:
        await poller.stop()
    assert changes[0] == ("NORMAL", "RUNNING") and ("NO ORDER", "RUNNING") in changes
    assert poller.errors == 0


async def test_errors_and_timeouts_read_unknown_never_normal(sim: SimServer, rest: RestClient) -> None:
    poller = HealthPoller(rest, "FX_BTC_JPY", interval=0.05, timeout=0.5)
    await poller.start()
    try:
        assert poller.can_trade
        await sim.set_faults(http_error_rate=1.0, http_error_status=500)
        await until(lambda: poller.health == UNKNOWN)
        assert poller.state == UNKNOWN and not poller.can_trade and poller.last_error
        await sim.set_faults(http_error_rate=0.0)
        await until(lambda: poller.health == "NORMAL")
        assert poller.last_error is None
        await sim.set_faults(latency_ms=3000)  # slower than the poller's timeout
        await until(lambda: poller.health == UNKNOWN)
        assert "Timeout" in (poller.last_error or "")
        await sim.set_faults(latency_ms=0)
        await until(lambda: poller.can_trade)
    finally:
        await poller.stop()
        await sim.set_faults(latency_ms=0, http_error_rate=0.0)
    assert poller.errors >= 2


async def test_stale_reading_reads_unknown(sim: SimServer, rest: RestClient) -> None:
    poller = HealthPoller(rest, "FX_BTC_JPY", interval=60.0, stale_after=0.2)
    await poller.poll_once()
    assert poller.health == "NORMAL"
    await until(lambda: poller.health == UNKNOWN)  # nobody polled since: no longer trusted
    assert not poller.can_trade
    await poller.stop()  # never started: stop is harmless


def test_bad_interval() -> None:
    with pytest.raises(ValueError):
        HealthPoller(object(), "FX_BTC_JPY", interval=0)  # type: ignore[arg-type]
