"""Safety rules of the position server, each isolated so that breaking the rule alone fails a test.

Found by mutating the code (issue 13 item 4): each of these rules could be deleted or inverted with
the rest of the suite still green, because every test of it also broke something else (board
state, order sending) or only looked at a display string. Each test below keeps everything else
working and asserts behaviour: what reached the exchange (the simulator's own account state and
``getchildorders``), the server's counters and the drift streak.

* an unknown exchange position is never judged as 0 while the board is running;
* an API error leaves the exchange position unknown (``None``, no difference), never a number;
* no correction while a bot's position just changed (the quiet rule);
* no judging within the startup grace after a (re)start.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from bfsx.bitflyer.rest import RestClient
from bfsx.config import TradeConfig
from bfsx.posserver.client import PosServerClient
from bfsx.posserver.server import PosServer
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer

from .conftest import SECRET

FX = "FX_BTC_JPY"
KEY = ("demo-key-1", "demo-secret-1")
POSITIONS = "/v1/me/getpositions"


@pytest.fixture
def sim_config() -> SimConfig:
    # The server checks every 0.3 s: room in the limits for that pace.
    return SimConfig.fast(limits={"private": 20_000, "ip": 50_000, "orders": 5_000})


class Bot:
    """A bot reduced to what the server sees: real market orders on the simulator, and reports."""

    def __init__(self, sim: SimServer, server: PosServer, name: str) -> None:
        self.sim = sim
        self.rest = RestClient(sim.url, *KEY)
        self.client = PosServerClient("127.0.0.1", server.port, SECRET, name, FX, report_interval=0.2,
                                      query_interval=0.5)
        self.position = Decimal(0)

    async def start(self) -> Bot:
        await self.client.start()
        self.report()
        return self

    def report(self) -> None:
        self.client.report(float(self.position), 0.0, 0.0, 0.0, self.rest.budget.snapshot())

    async def buy(self, size: str, *, report: bool = True) -> None:
        before = _net(self.sim)
        await self.rest.send_child_order(FX, "BUY", float(size))  # type: ignore[arg-type]
        for _ in range(200):
            if _net(self.sim) == before + Decimal(size):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("market order not filled")
        if report:  # report=False: the fill is lost to the bot (as with dropped private events)
            self.position += Decimal(size)
            self.report()

    async def close(self) -> None:
        await self.client.stop()
        await self.rest.close()


def _net(sim: SimServer) -> Decimal:
    return Decimal(repr(sim.state()["accounts"][KEY[0]]["positions"][FX]["net"]))


async def _bot(sim: SimServer, server: PosServer, name: str) -> Bot:
    return await Bot(sim, server, name).start()


async def _orders_on_exchange(sim: SimServer) -> int:
    async with RestClient(sim.url, *KEY) as rest:
        return len(await rest.get_child_orders(FX))


async def _checks(server: PosServer, n: int, wait_for: Any, timeout: float = 30.0) -> None:
    target = server.checks + n
    await wait_for(lambda: server.checks >= target, timeout=timeout, what=f"{n} checks")


def _nothing_sent(server: PosServer) -> None:
    c = server.counters
    assert (c["corrections"], c["corrections_refused"], c["correction_errors"]) == (0, 0, 0), dict(c)


async def _server(server_factory: Any, fast_config: Any, sim: SimServer, **kw: Any) -> PosServer:
    cfg: TradeConfig = fast_config(endpoint=sim.url, adjust_max_size=0.05)
    kw.setdefault("startup_grace", 0.3)
    s: PosServer = await server_factory(cfg, **kw)
    return s


@pytest.mark.parametrize("fault", ["500", "400", "timeout"])
async def test_unknown_exchange_position_is_never_judged_as_zero(
    sim: SimServer, server_factory: Any, fast_config: Any, wait_for: Any, fault: str
) -> None:
    """Only getpositions fails (500, an API error, or a timeout): the board runs, the ticker and
    order sending work. The bots hold 0.02: judging the unknown position as 0 would buy 0.02."""
    server = await _server(server_factory, fast_config, sim)
    a = await _bot(sim, server, "a")
    await a.buy("0.02")
    await wait_for(lambda: FX in server.results and server.results[FX].exchange == Decimal("0.02"),
                   what="the server sees the exchange position")
    orders = await _orders_on_exchange(sim)
    if fault == "timeout":
        server.rest.timeout = 0.3  # the client gives up long before the simulator answers
        await sim.set_faults(fail_paths=[POSITIONS], fail_paths_timeout_ms=2_000)
    else:
        await sim.set_faults(fail_paths=[POSITIONS], http_error_status=int(fault))
    await _checks(server, 2 * server.config.pos_server_consecutive + 1, wait_for, timeout=60)
    ms = server.registry.markets[FX]
    assert ms.board_state == "RUNNING" and ms.health == "NORMAL"  # the isolation: only the position is unknown
    assert server.results[FX].expected == Decimal("0.02")
    _nothing_sent(server)
    assert server._drift[FX].streak == 0
    assert _net(sim) == Decimal("0.02")
    assert await _orders_on_exchange(sim) == orders  # no correcting order reached the exchange
    assert server.results[FX].exchange is None
    # Control: the same setup judges again once the position is known (0.02 = expected: in sync).
    await sim.set_faults(fail_paths=[], fail_paths_timeout_ms=0, http_error_status=500)
    await wait_for(lambda: server.results[FX].exchange == Decimal("0.02"), timeout=30, what="known again")
    _nothing_sent(server)
    await a.close()


async def test_an_api_error_leaves_the_exchange_position_unknown(
    sim: SimServer, server_factory: Any, fast_config: Any, wait_for: Any
) -> None:
    """What the console shows as ``exchange ?``: the status and the registry hold no number and
    no difference for the market (nothing downstream can act on a made-up one), and the market is
    not taken as in sync."""
    server = await _server(server_factory, fast_config, sim)
    a = await _bot(sim, server, "a")
    await a.buy("0.01")
    await wait_for(lambda: FX in server.results and server.results[FX].exchange == Decimal("0.01"),
                   what="the server sees the exchange position")
    await sim.set_faults(fail_paths=[POSITIONS], http_error_status=400)
    await wait_for(lambda: server.results[FX].exchange is None, timeout=30, what="the position unknown")
    await _checks(server, 2, wait_for)
    (fx,) = [m for m in server.status()["markets"] if m["market"] == FX]
    assert fx["exchange"] is None and fx["diff"] is None
    assert fx["state"] == "RUNNING" and fx["expected"] == 0.01
    ms = server.registry.markets[FX]
    assert ms.exchange is None and ms.diff is None
    assert server.results[FX].exchange is None
    _nothing_sent(server)
    await a.close()


async def test_no_correction_while_a_bot_just_traded(
    sim: SimServer, server_factory: Any, fast_config: Any, wait_for: Any
) -> None:
    """A real, stable difference (a lost fill), but a bot's position changed within the quiet
    time: the server must wait, however many checks see the same difference."""
    server = await _server(server_factory, fast_config, sim, quiet_seconds=60.0)
    a = await _bot(sim, server, "a")
    await a.buy("0.03", report=False)  # 0.03 on the exchange, 0 reported
    await wait_for(lambda: FX in server.results and server.results[FX].exchange == Decimal("0.03"),
                   what="the server sees the difference")
    await _checks(server, 3 * server.config.pos_server_consecutive, wait_for)
    assert server.results[FX].expected == 0
    _nothing_sent(server)
    assert server._drift[FX].streak == 0
    assert _net(sim) == Decimal("0.03")
    # Control: the same difference, now quiet, is corrected (so the wait above was the rule).
    server._quiet_override = 0.0
    await wait_for(lambda: _net(sim) == 0, timeout=30, what="corrected once quiet")
    # the counter moves when the order's reply is back, which may be after the fill is seen
    await wait_for(lambda: server.counters["corrections"] >= 1, timeout=10, what="the correction counted")
    assert server.counters["corrections"] == 1
    await a.close()


async def test_no_judging_within_the_startup_grace(
    sim: SimServer, server_factory: Any, fast_config: Any, wait_for: Any
) -> None:
    """After a (re)start the server waits for every bot to report before judging: a difference
    seen in that time, stable over many checks, sends nothing and builds no streak."""
    grace = 6.0
    server = await _server(server_factory, fast_config, sim, startup_grace=grace, quiet_seconds=0.0)
    started = time.monotonic()
    a = await _bot(sim, server, "a")
    await a.buy("0.03", report=False)
    await wait_for(lambda: FX in server.results and server.results[FX].exchange == Decimal("0.03"),
                   what="the server sees the difference")
    await _checks(server, 2 * server.config.pos_server_consecutive + 1, wait_for)
    assert time.monotonic() - started < grace, "the checks took longer than the grace: the test proves nothing"
    _nothing_sent(server)
    assert server._drift[FX].streak == 0
    assert _net(sim) == Decimal("0.03")
    # Control: once the grace is over, the same difference is corrected.
    await wait_for(lambda: _net(sim) == 0, timeout=30, what="corrected after the grace")
    # the counter moves when the order's reply is back, which may be after the fill is seen
    await wait_for(lambda: server.counters["corrections"] >= 1, timeout=10, what="the correction counted")
    assert server.counters["corrections"] == 1
    await a.close()


async def test_the_last_gate_sends_only_a_finite_size_within_the_cap(server_factory: Any, fast_config: Any) -> None:
    """Found by mutating ``_correct``: whatever reaches it, only a size in (0, adjust_max_size]
    is sent. Nothing listens at the endpoint, so a size that passes the gate fails to send
    (``correction_errors``), one that does not is refused before any request
    (``corrections_refused``)."""
    server: PosServer = await server_factory(fast_config(adjust_max_size=0.1))
    zero = Decimal(0)
    for size in ("0.2", "0.1000001", "0", "-0.01", "NaN", "Infinity"):
        before = dict(server.counters)
        done = await server._correct(FX, "BUY", Decimal(size), zero, zero, zero, zero)
        assert "refused" in done, size
        assert server.counters["corrections_refused"] == before.get("corrections_refused", 0) + 1, size
        assert server.counters["correction_errors"] == before.get("correction_errors", 0), size
    for size in ("0.1", "0.001"):  # at the cap and below: it goes out (and fails: nobody listens)
        before = dict(server.counters)
        done = await server._correct(FX, "BUY", Decimal(size), zero, zero, zero, zero)
        assert server.counters["correction_errors"] == before.get("correction_errors", 0) + 1, (size, done)
        assert server.counters["corrections_refused"] == before.get("corrections_refused", 0), size
    assert server.counters["corrections"] == 0
