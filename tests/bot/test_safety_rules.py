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
from types import SimpleNamespace
from typing import Any

from bfsx.account.journal import Journal
from bfsx.account.orders import Fill, Order, OrderState, OrderTracker
from bfsx.account.position import Position
from bfsx.bitflyer.errors import ApiError, BitflyerError
from bfsx.bitflyer.products import get_product
from bfsx.bot.desk import OrderDesk
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


# ---------------------------------------------------------------------------------------------- the desk alone
# Found by mutating ``bot/desk.py`` (docs/mutation-survivors.md): the desk against stand-ins for the
# REST client, the feed and the health poller, so that one rule of the desk is the only thing tested.
class _Rest:
    def __init__(self) -> None:
        self.cancels: list[str] = []
        self.orders: list[tuple[str, float, float | None]] = []
        self.fail_cancel: BitflyerError | None = None

    async def cancel_child_order(self, product: str, *, acceptance_id: str) -> None:
        self.cancels.append(acceptance_id)
        if self.fail_cancel is not None:
            raise self.fail_cancel

    async def send_child_order(self, product: str, side: str, size: float, price: float | None,
                               **kw: object) -> str:
        self.orders.append((side, size, price))
        return f"JRF20260923-033127-{len(self.orders):06d}"


class _Reconciler:
    def touch(self) -> None:
        pass

    def journal_and_count(self, fills: object, orders: object, intent_id: str | None = None) -> int:
        return 0


def _desk(tmp_path: Path, position: float = 0.0, **strategy: Any) -> tuple[OrderDesk, _Rest]:
    connected = asyncio.Event()
    connected.set()
    spec = get_product("FX_BTC_JPY")
    assert spec is not None  # min_size 0.001
    rest = _Rest()
    journal = Journal(tmp_path / "journal.db")
    desk = OrderDesk(
        product="FX_BTC_JPY", spec=spec, rest=rest,  # type: ignore[arg-type]
        realtime=SimpleNamespace(connected=connected),  # type: ignore[arg-type]
        health=SimpleNamespace(health="NORMAL", state="RUNNING"),  # type: ignore[arg-type]
        feed=SimpleNamespace(book=SimpleNamespace(ready=True, mid_price=10_000_000.0)),  # type: ignore[arg-type]
        budget=SimpleNamespace(order_refusal=lambda size: None, private_remaining=500),  # type: ignore[arg-type]
        tracker=OrderTracker("FX_BTC_JPY"), journal=journal,
        position=SimpleNamespace(size=position),  # type: ignore[arg-type]
        reconciler=_Reconciler(),  # type: ignore[arg-type]
        trade=SimpleNamespace(trade_health="SUPER BUSY"),  # type: ignore[arg-type]
        strategy_config=StrategyConfig(**strategy), log=logging.getLogger("test"),
    )
    return desk, rest


async def test_a_cancel_is_sent_once_reports_failures_and_needs_an_id(tmp_path: Path) -> None:
    """A second cancel of the same order within ``CANCEL_REPEAT_AFTER`` is not sent again (its
    CANCEL event is on the way) but still answers True; a cancel the exchange refused answers
    False; an order without an acceptance id (refused locally, never sent) cannot be cancelled."""
    desk, rest = _desk(tmp_path)
    acc = "JRF20260923-033127-000001"
    assert await desk.cancel_order(acc) is True
    assert await desk.cancel_order(acc) is True
    assert rest.cancels == [acc]
    other = "JRF20260923-033127-000002"
    rest.fail_cancel = ApiError(status=-111, message="Order not found", http_status=400)
    assert await desk.cancel_order(other) is False
    assert await desk.cancel_order(other) is False  # a refused cancel is not "recently sent"
    assert rest.cancels == [acc, other, other]
    refused = Order.new("FX_BTC_JPY", "BUY", 0.01)
    refused.refuse("close-only mode")
    assert await desk.cancel_order(refused) is False
    assert rest.cancels == [acc, other, other]
    desk.journal.close()


async def test_a_position_of_exactly_the_minimum_size_is_closed(tmp_path: Path) -> None:
    """The smallest position a bot can hold (one minimum order) is not "flat": ``close_position``
    flattens it (a long with a SELL, a short with a BUY), as a closing order that passes close-only
    and a stopping bot."""
    for pos, side in ((0.001, "SELL"), (-0.001, "BUY")):
        desk, rest = _desk(tmp_path, pos, close_position=True)
        desk.stopping = True
        order = await desk.close_position()
        assert order is not None and order.acceptance_id, order and order.reason
        assert rest.orders == [(side, 0.001, None)]
        desk.journal.close()
    desk, rest = _desk(tmp_path, 0.0009)  # below the minimum: nothing can be sent
    assert await desk.close_position() is None and rest.orders == []
    desk.journal.close()


def test_default_risk_limits_are_100_and_1000_minimum_sizes(tmp_path: Path) -> None:
    """Without ``max_order_size`` / ``max_position`` the limits are 100 and 1000 minimum order
    sizes (docs/config.md); an order of exactly the limit passes, one step more is refused."""
    desk, _ = _desk(tmp_path)
    assert desk.refusal("BUY", 0.1) is None
    assert "max_order_size" in (desk.refusal("BUY", 0.101) or "")
    desk.position.size = 0.95  # type: ignore[misc]
    assert desk.refusal("BUY", 0.05) is None  # 0.95 + 0.05: exactly the position limit
    assert "max_position" in (desk.refusal("BUY", 0.051) or "")
    desk.journal.close()
    desk, _ = _desk(tmp_path, max_order_size=0.05, max_position=0.2)
    assert desk.refusal("SELL", 0.05) is None  # exactly max_order_size
    assert "max_order_size" in (desk.refusal("SELL", 0.051) or "")
    desk.journal.close()


async def test_a_frozen_market_refuses_even_the_bots_own_close(tmp_path: Path) -> None:
    """After a loss-cut or a hand flatten the server freezes the market and pauses its bots. A bot's
    own close (a strategy's close_position(), close_on_exit at stop) is refused there too: the
    position it counts may be gone from the exchange, so closing it would open the opposite one.
    An operator's pause keeps allowing it, and ``bfsx ctl flatten`` (which lifts the freeze) too."""
    desk, rest = _desk(tmp_path, position=0.02)
    desk.control_mode, desk.control_reasons = "pause", ("pause:frozen",)
    assert "market frozen" in (desk.refusal("SELL", 0.02, closing=True) or "")
    order = await desk.close_position()
    assert order is not None and order.state is OrderState.REFUSED and "market frozen" in order.reason
    assert not rest.orders
    desk.control_reasons = ("pause:ctl",)
    assert desk.refusal("SELL", 0.02, closing=True) is None
    desk.control_mode, desk.control_reasons = "flatten", ("flatten",)
    assert desk.refusal("SELL", 0.02, closing=True) is None
    desk.journal.close()
