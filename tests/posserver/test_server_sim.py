"""Position server against the real simulator, with in-process fake bots that place real orders.

(a) reports that match the exchange → no correction (FX, and spot with a base_position);
(b) a fill not reported → after N identical diffs a capped market order, invariant 1 holds;
(c) a bot gone silent while holding a position → evicted, then corrected;
(e) health STOP / maintenance → no correction, until the market trades again.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from bfsx.bitflyer.rest import RestClient
from bfsx.config import TradeConfig
from bfsx.posserver.client import PosServerClient
from bfsx.posserver.server import PosServer
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

SECRET = "pos-secret"
FX = "FX_BTC_JPY"


@pytest.fixture
def sim_config() -> SimConfig:
    # The server checks every 0.3 s: room in the limits for that pace (the logic is the 30 s one).
    return SimConfig.fast(limits={"private": 20_000, "ip": 50_000, "orders": 5_000})


class FakeBot:
    """A bot reduced to what the server sees: real market orders on the simulator, and reports."""

    def __init__(self, sim: SimServer, server: PosServer, name: str, market: str = FX, base: float = 0.0,
                 key: tuple[str, str] = ("demo-key-1", "demo-secret-1")) -> None:
        self.rest = RestClient(sim.url, *key)
        self.client = PosServerClient("127.0.0.1", server.port, SECRET, name, market, report_interval=0.2,
                                      query_interval=0.5)
        self.market, self.base, self.position = market, base, Decimal(0)

    async def start(self) -> FakeBot:
        await self.client.start()
        self.report()
        return self

    def report(self) -> None:
        self.client.report(float(self.position), self.base, 0.0, 0.0, self.rest.budget.snapshot())

    async def trade(self, side: str, size: str, *, report: bool = True) -> None:
        """A market order; the position changes once the exchange shows the fill."""
        before = await self.rest.net_position(self.market)
        await self.rest.send_child_order(self.market, side, float(size))  # type: ignore[arg-type]
        delta = Decimal(size) if side == "BUY" else -Decimal(size)
        for _ in range(200):
            if await self.rest.net_position(self.market) == before + delta:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("market order not filled")
        if report:  # report=False: the fill is lost to the bot (as with dropped private events)
            self.position += delta
            self.report()

    async def vanish(self) -> None:
        """Silent from now on, without a last report (as after kill -9)."""
        for t in self.client._tasks:
            t.cancel()
        self.client._tasks = []
        self.client._latest = None
        await self.close()

    async def close(self) -> None:
        await self.client.stop()
        await self.rest.close()


def _net(sim: SimServer, market: str = FX, key: str = "demo-key-1") -> Decimal:
    return Decimal(repr(sim.state()["accounts"][key]["positions"][market]["net"]))


@pytest.fixture
async def server(sim: SimServer, server_factory: Any, fast_config: Any) -> PosServer:
    cfg: TradeConfig = fast_config(endpoint=sim.url, adjust_max_size=0.05)
    s: PosServer = await server_factory(cfg, startup_grace=0.5)
    return s


async def _checks(server: PosServer, n: int, wait_for: Any) -> None:
    target = server.checks + n
    await wait_for(lambda: server.checks >= target, what=f"{n} checks")


async def test_a_matching_reports_no_correction(sim: SimServer, server: PosServer, wait_for: Any) -> None:
    a = await FakeBot(sim, server, "a").start()
    b = await FakeBot(sim, server, "b").start()
    spot = await FakeBot(sim, server, "spot", market="BTC_JPY", base=1.0).start()  # holds 1 BTC outside bots
    await a.trade("BUY", "0.03")
    await b.trade("SELL", "0.01")
    await _checks(server, 6, wait_for)  # well over consecutive (3) checks in a quiet state
    assert server.counters["corrections"] == 0
    r = server.results[FX]
    assert r.exchange == r.expected == Decimal("0.02") and r.skip_reason == ""
    spot_r = server.results["BTC_JPY"]
    assert spot_r.exchange == spot_r.expected == Decimal("1.0")  # Σ bots (0) + base_position (1)
    assert _net(sim) == Decimal("0.02")
    for bot in (a, b, spot):
        await bot.close()


async def test_b_unreported_fill_is_corrected(sim: SimServer, server: PosServer, wait_for: Any) -> None:
    a = await FakeBot(sim, server, "a").start()
    b = await FakeBot(sim, server, "b").start()
    await a.trade("BUY", "0.02")
    await b.trade("BUY", "0.08", report=False)  # the fill never reaches b's position
    # 0.08 too much on the exchange; adjust_max_size 0.05 caps each order: SELL 0.05 then SELL 0.03.
    await wait_for(lambda: server.counters["corrections"] >= 2 and _net(sim) == Decimal("0.02"),
                   what="capped corrections")
    await _checks(server, 6, wait_for)
    assert server.counters["corrections"] == 2  # no overshoot once settled
    assert _net(sim) == a.position + b.position + 0  # invariant 1
    fx = (await a.client.status())["markets"][0]
    assert fx["diff"] == 0 and fx["corrections"] == 2
    await a.close()
    await b.close()


async def test_c_silent_bot_evicted_then_corrected(sim: SimServer, server: PosServer, wait_for: Any) -> None:
    a = await FakeBot(sim, server, "a").start()
    b = await FakeBot(sim, server, "b").start()
    await a.trade("SELL", "0.01")
    await b.trade("BUY", "0.04")
    await _checks(server, 2, wait_for)
    await b.vanish()  # holding +0.04
    await wait_for(lambda: "b" not in server.registry.bots, what="eviction")
    await wait_for(lambda: _net(sim) == Decimal("-0.01"), what="correction to Σ remaining + base")
    assert server.counters["evictions"] == 1 and server.counters["corrections"] == 1
    assert _net(sim) == a.position  # invariant 1 with the remaining bot
    await a.close()


async def test_e_no_correction_while_stopped_or_in_maintenance(sim: SimServer, server: PosServer,
                                                               wait_for: Any) -> None:
    a = await FakeBot(sim, server, "a").start()
    await a.trade("BUY", "0.01", report=False)  # drift of +0.01
    await sim.set_faults(health="STOP")
    await _checks(server, 5, wait_for)
    assert server.counters["corrections"] == 0
    assert "STOP" in server.results[FX].skip_reason
    await sim.set_faults(health=None, maintenance=True)
    await _checks(server, 5, wait_for)
    assert server.counters["corrections"] == 0
    assert "CLOSED" in server.results[FX].skip_reason
    assert _net(sim) == Decimal("0.01")
    # Trading again: the drift is judged afresh and corrected.
    await sim.set_faults(maintenance=False)
    # The fill can show before the server has read the order's reply (and counted it): wait for both.
    await wait_for(lambda: _net(sim) == Decimal(0) and server.counters["corrections"] >= 1,
                   what="correction after the reopen")
    assert server.counters["corrections"] == 1
    await a.close()


async def test_unknown_exchange_data_never_corrects(sim: SimServer, server: PosServer, wait_for: Any) -> None:
    a = await FakeBot(sim, server, "a").start()
    await a.trade("BUY", "0.01", report=False)
    await sim.set_faults(http_error_rate=1.0)  # every REST call fails: the exchange position is unknown
    await _checks(server, 5, wait_for)
    assert server.counters["corrections"] == 0
    assert "unknown" in server.results[FX].skip_reason
    await sim.set_faults(http_error_rate=0.0)
    await wait_for(lambda: server.counters["corrections"] == 1, what="correction once known")
    await a.close()


async def test_f_corrections_deaths_duplicates_and_stops_are_alerted(sim: SimServer, server_factory: Any,
                                                                     fast_config: Any, wait_for: Any) -> None:
    from alert_hook import alert_hook

    async with alert_hook() as hook:
        cfg: TradeConfig = fast_config(endpoint=sim.url, adjust_max_size=0.05, pos_server_discord=hook.url,
                                       pos_server_alerts="all", pos_server_alert_interval=0.05)
        server: PosServer = await server_factory(cfg, startup_grace=0.5)
        a = await FakeBot(sim, server, "a").start()
        b = await FakeBot(sim, server, "b").start()
        await a.trade("BUY", "0.01", report=False)  # a lost fill: corrected, and said so
        await wait_for(lambda: hook.texts("correction"), what="the correction alert")
        assert "sent MARKET SELL 0.01" in hook.texts("correction")[0]
        twin = PosServerClient("127.0.0.1", server.port, SECRET, "a", FX, report_interval=0.2)
        await twin.start()  # a second live sender of bot id "a"
        twin.report(0.0, 0.0, 0.0, 0.0, None)
        await wait_for(lambda: hook.texts("duplicate"), what="the duplicate alert")
        await twin.stop()
        await b.trade("BUY", "0.02")
        await b.vanish()  # dies holding +0.02
        await wait_for(lambda: hook.texts("bot_died"), what="the dead bot alert")
        assert "bot b went silent" in hook.texts("bot_died")[0] and "holding 0.02" in hook.texts("bot_died")[0]
        c = await FakeBot(sim, server, "c").start()
        await c.close()  # a clean stop, flat: its last report says so
        await wait_for(lambda: "c" not in server.registry.bots, what="the stopped bot evicted")
        assert not [t for t in hook.texts() if "bot c " in t]  # routine: no alert
        await sim.set_faults(health="STOP")
        await wait_for(lambda: hook.texts("health_stop"), what="the health STOP alert")
        await sim.set_faults(health=None)
        assert "SECRET-alert-token" not in "".join(hook.texts())
        await a.close()


async def test_g_a_failed_correction_is_alerted(sim: SimServer, server_factory: Any, fast_config: Any,
                                                wait_for: Any) -> None:
    from alert_hook import alert_hook

    async with alert_hook() as hook:
        cfg: TradeConfig = fast_config(endpoint=sim.url, adjust_max_size=0.05, pos_server_discord=hook.url,
                                       pos_server_alert_interval=0.05)
        server: PosServer = await server_factory(cfg, startup_grace=0.5)
        a = await FakeBot(sim, server, "a").start()
        await a.trade("BUY", "0.01", report=False)  # a drift the server will try to correct
        await sim.set_faults(fail_paths=["/v1/me/sendchildorder"])  # every order POST fails (-208)
        await wait_for(lambda: hook.texts("correction_failed"), what="the failed correction alert")
        assert "correcting order SELL 0.01" in hook.texts("correction_failed")[0] and "failed: OverloadError" in hook.texts("correction_failed")[0]
        assert hook.texts("correction") == []  # a correction that worked is not in the default kinds
        await sim.set_faults(fail_paths=[])
        await a.close()
