"""Safety rules of the bot, each isolated so that breaking the rule alone fails a test.

Found by mutating the code: each of these rules could be deleted or inverted with the rest of the
suite still green. Each test below breaks exactly one of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path

from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, OrderState, OrderTracker
from bfsx.account.position import Position
from bfsx.bot.listeners import Listener
from bfsx.bot.resync import Reconciler
from bfsx.bot.strategy import Strategy
from bfsx.config import StrategyConfig
from bfsx.net import free_port
from bfsx.sim.server import SimServer

from .conftest import StartBot, wait_for

KEY = "demo-key-1"


def exchange_net(sim: SimServer) -> Decimal:
    return Decimal(str(sim.state()["accounts"][KEY]["positions"]["FX_BTC_JPY"]["net"]))


async def test_close_only_never_lets_a_short_position_grow(sim: SimServer, start_bot: StartBot) -> None:
    s = Strategy()
    rt = await start_bot(s)
    await s.sell(0.01)
    await wait_for(lambda: s.position == -0.01, what="a short position")
    rt.strategy_config = StrategyConfig(close_position=True)
    sent = rt.budget.orders.sent
    grow = await s.sell(0.01)
    assert grow.state is OrderState.REFUSED and "close-only" in grow.reason
    flip = await s.buy(0.02)  # buying more than the short would open a long
    assert flip.state is OrderState.REFUSED and "close-only" in flip.reason
    assert rt.budget.orders.sent == sent
    closing = await s.buy(0.01)  # reduces the short: allowed
    assert closing.acceptance_id
    await wait_for(lambda: s.position == 0, what="flat")
    assert exchange_net(sim) == 0


async def test_close_position_flattens_a_short_even_in_close_only_and_while_stopping(
    sim: SimServer, start_bot: StartBot
) -> None:
    """Found by mutating ``close_position``: the flattening order buys back a short (not only
    sells a long), and, being a closing order, passes close-only mode, a size limit below the
    position and a stopping bot."""
    s = Strategy()
    rt = await start_bot(s)
    await s.sell(0.02)
    await wait_for(lambda: s.position == -0.02, what="a short position")
    rt.strategy_config = StrategyConfig(close_position=True, max_order_size=0.01)
    rt.desk.stopping = True
    order = await s.close_position()
    assert order is not None and order.acceptance_id, order and order.reason
    assert order.side == "BUY" and order.size == 0.02
    await wait_for(lambda: s.position == 0, what="flat")
    assert exchange_net(sim) == 0
    assert await s.close_position() is None  # already flat: nothing is sent


async def test_no_order_while_realtime_is_disconnected(sim: SimServer, start_bot: StartBot) -> None:
    """REST and health are fine, only the realtime socket is down: own fills would go unseen."""
    s = Strategy()
    rt = await start_bot(s)
    rt.realtime.ws_url = f"ws://127.0.0.1:{free_port()}/json-rpc"  # every reconnect is refused
    await sim.set_faults(close_websockets=True)
    await wait_for(lambda: not rt.realtime.connected.is_set(), what="realtime down")
    assert rt.health.health == "NORMAL"  # REST and health still answer: only the socket is down
    sent = rt.budget.orders.sent
    for order in (await s.buy(0.01), await s.sell(0.01, round(rt.feed.executions.ltp * 1.01))):
        assert order.state is OrderState.REFUSED, order.reason
    assert rt.budget.orders.sent == sent
    assert exchange_net(sim) == 0


async def test_async_callbacks_are_coalesced_never_queued() -> None:
    """A slow async callback runs at most once at a time; while it runs only the latest argument
    is kept, and it runs once more with that one."""
    seen: list[int] = []
    running = 0
    most = 0

    async def slow(n: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        seen.append(n)
        running -= 1

    tasks: set[asyncio.Task[None]] = set()
    listener = Listener(slow, logging.getLogger("test"), tasks)
    for n in range(100):
        listener(n)
    while tasks:
        await asyncio.gather(*list(tasks))
    assert most == 1
    assert seen == [0, 99]  # the first, then only the latest of the 99 that came while it ran


def _fill(exec_id: int, size: float = 0.01) -> Fill:
    return Fill(
        exec_id=exec_id, acceptance_id="JRF-1", child_order_id="JOR-1", product="FX_BTC_JPY",
        side="BUY", price=10_000_000.0, size=size, commission=0.0, sfd=0.0, time=time.time(),
    )


def test_only_the_journals_new_fills_move_the_position(tmp_path: Path) -> None:
    """The tracker's exec-id set is bounded; the journal's unique key is what counts a fill once
    across restarts and beyond that bound. A fill the journal already holds must not move the
    position again, even when the tracker hands it over once more."""
    handed: list[list[Fill]] = []
    journal = Journal(tmp_path / "journal.db")
    try:
        rec = Reconciler(
            product="FX_BTC_JPY", rest=None, tracker=OrderTracker("FX_BTC_JPY", max_seen=1),  # type: ignore[arg-type]
            journal=journal, position=Position(), on_new_fills=handed.append, log=logging.getLogger("test"),
        )
        assert rec.journal_and_count([_fill(1), _fill(2)], ()) == 2
        assert rec.journal_and_count([_fill(2), _fill(3)], ()) == 1  # 2 is already journaled
        assert rec.position.exact_size == Decimal("0.03")
        assert rec.fills_applied == 3 and [len(h) for h in handed] == [2, 1]
    finally:
        journal.close()
