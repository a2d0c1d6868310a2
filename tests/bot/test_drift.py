"""Single-bot drift correction (``adjust_position_with_api``, invariant 3) in-process:
an API error is unknown (never read as 0, no correction), then after ``adjust_consecutive``
identical diffs market orders capped by ``adjust_max_size`` bring the exchange back to the bot's
position + base_position, without moving the bot's own position."""

from __future__ import annotations

from decimal import Decimal

from bfsx.bitflyer.rest import RestClient
from bfsx.bot.strategy import Strategy
from bfsx.sim.server import SimServer

from .conftest import StartBot, wait_for

KEY, SECRET = "demo-key-1", "demo-secret-1"


def exchange_net(sim: SimServer) -> Decimal:
    return Decimal(repr(sim.state()["accounts"][KEY]["positions"]["FX_BTC_JPY"]["net"]))


def market_sells(sim: SimServer) -> list[float]:
    """Sizes of the account's market sells (the corrections), oldest first."""
    acct = sim.engine.accounts[KEY]
    return [o.size / 1e8 for o in acct.finished if o.order_type == "MARKET" and o.side < 0]


async def test_drift_is_corrected_after_n_identical_diffs_but_never_on_unknown(
    sim: SimServer, start_bot: StartBot
) -> None:
    async with RestClient(sim.url, KEY, SECRET) as rest:
        await rest.send_child_order("FX_BTC_JPY", "BUY", 0.02)  # the position held outside the bot
        await wait_for(lambda: exchange_net(sim) == Decimal("0.02"), what="base position on the exchange")
        s = Strategy()
        rt = await start_bot(
            s, base_position=0.02, adjust_position_with_api=False, adjust_position_interval=0.1,
            adjust_consecutive=3, adjust_max_size=0.05,
        )
        # Drift: an order on the same account that the bot knows nothing about.
        await rest.send_child_order("FX_BTC_JPY", "BUY", 0.07)
    await wait_for(lambda: exchange_net(sim) == Decimal("0.09"), what="the drift on the exchange")

    # Every API call fails: the exchange position is unknown, which is not 0, so nothing is sent.
    await sim.set_faults(http_error_rate=1.0, http_error_status=500)
    rt.trade = rt.trade.model_copy(update={"adjust_position_with_api": True})  # as a live reload does
    await wait_for(lambda: rt.drift.unknown >= 2 * 3, what="several unknown samples")
    assert rt.drift.corrections == 0 and rt.drift.streak == 0
    assert exchange_net(sim) == Decimal("0.09") and market_sells(sim) == []

    # The API is back: 3 identical diffs of 0.07 → SELL 0.05 (capped), then 0.02 → SELL 0.02.
    await sim.set_faults(http_error_rate=0.0)
    await wait_for(lambda: exchange_net(sim) == Decimal("0.02"), timeout=30, what="exchange back to bot + base")
    assert market_sells(sim) == [0.05, 0.02]
    assert rt.drift.corrections == 2
    assert rt.position.size == 0 and rt.fills_applied == 0  # corrections never move the bot's own position
