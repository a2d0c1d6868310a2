"""The position server's margin watch against the real simulator, alerts to a local webhook.

A collateral change through ``POST /_sim/account`` moves the keep rate: below
``pos_server_keep_rate_warn`` one alert; below ``pos_server_keep_rate_close_only`` the close-only
hold (released above it with hysteresis); a withdrawal under the loss-cut ratio makes the
simulator loss-cut the account, and the server says so. Today's loss beyond
``pos_server_max_daily_loss`` holds every bot; a withdrawal is not a loss. The status query shows
the figures, and a hanging webhook never stops the checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from alert_hook import AlertHook, alert_hook
from bfsx.bitflyer.rest import RestClient
from bfsx.posserver.margin import DAILY_LOSS_HOLD, KEEP_RATE_HOLD
from bfsx.posserver.server import PosServer
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks, eventually
from bfsx.sim.server import SimServer

FX = "FX_BTC_JPY"
KEY, SECRET = "demo-key-1", "demo-secret-1"
QUIET = {"taker_rate": 0, "volatility": 0, "jump_probability": 0, "noise": 0, "impact": 0, "churn_per_second": 0,
         "refill_rate": 0}


@pytest.fixture
def sim_config() -> SimConfig:
    # Quiet: only the test's orders move the last price, so the keep rate is where the test puts it.
    return SimConfig.fast(market=QUIET, limits={"private": 50_000, "ip": 50_000, "orders": 5_000})


@pytest.fixture
async def hook() -> AsyncIterator[AlertHook]:
    async with alert_hook() as h:
        yield h


@pytest.fixture
async def rest(sim: SimServer) -> AsyncIterator[RestClient]:
    r = RestClient(sim.url, KEY, SECRET)
    yield r
    await r.close()


Factory = Callable[..., Awaitable[PosServer]]


async def margin_server(server_factory: Factory, fast_config: Any, sim: SimServer, hook: AlertHook,
                        **keys: Any) -> PosServer:
    cfg = fast_config(endpoint=sim.url, pos_server_discord=hook.url, pos_server_margin_interval=0.1,
                      pos_server_alert_interval=0.05, **keys)
    return await server_factory(cfg, startup_grace=0.3)


async def long(rest: RestClient, size: float) -> None:
    before = await rest.net_position(FX)
    await rest.send_child_order(FX, "BUY", size)
    await eventually(lambda: _is(rest.net_position(FX), before + type(before)(repr(size))), what="filled")


async def _is(value: Awaitable[Any], target: Any) -> bool:
    return bool(await value == target)


def account(sim: SimServer) -> dict[str, Any]:
    acct: dict[str, Any] = sim.state()["accounts"][KEY]
    return acct


def collateral_for(sim: SimServer, keep_rate: float) -> float:
    """The collateral (JPY) that puts the account's keep rate at ``keep_rate``."""
    c = account(sim)["collateral"]
    return round(keep_rate * c["require_collateral"] - c["open_position_pnl"], 2)


async def polls(server: PosServer, n: int = 2) -> None:
    target = server.margin.polls + n
    await eventually(lambda: server.margin.polls >= target, what=f"{n} margin polls")


async def test_keep_rate_warn_one_alert_then_close_only_hold_and_its_release(
    sim: SimServer, rest: RestClient, hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    server = await margin_server(server_factory, fast_config, sim, hook, pos_server_keep_rate_warn=1.5,
                                 pos_server_keep_rate_close_only=1.0)
    await long(rest, 0.5)
    await polls(server)
    assert server.margin.keep_rate is not None and server.margin.keep_rate > 3  # 10M JPY behind 0.5 BTC at 2x
    assert hook.texts("keep_rate_warn") == [] and not server.controls.held(FX)
    hooks = SimHooks(sim.url)
    await hooks.set_account(KEY, collateral_for(sim, 1.3))  # below warn, above close-only
    await eventually(lambda: hook.texts("keep_rate_warn"), what="the warn alert")
    await polls(server, 5)  # still below: no second alert
    assert len(hook.texts("keep_rate_warn")) == 1 and "keep rate 130.0% is below 150%" in hook.texts()[0]
    assert not server.controls.held(FX)

    await hooks.set_account(KEY, collateral_for(sim, 0.8))  # below close-only, above the loss-cut (0.5)
    await eventually(lambda: server.controls.held(FX), what="the close-only hold")
    assert server.controls.held(FX) == [KEEP_RATE_HOLD]
    await eventually(lambda: hook.texts("keep_rate_close_only"), what="the close-only alert")
    assert account(sim)["loss_cuts"] == 0

    await hooks.set_account(KEY, collateral_for(sim, 1.05))  # above close-only, within the hysteresis
    await polls(server, 3)
    assert server.controls.held(FX)
    await hooks.set_account(KEY, collateral_for(sim, 1.2))
    await eventually(lambda: not server.controls.held(FX), what="the hold released")
    await eventually(lambda: "released" in hook.texts("keep_rate_close_only")[-1], what="the release alert")
    status = server.status()["margin"]
    assert status["keep_rate"] == pytest.approx(1.2, abs=1e-6) and status["holds"] == []
    assert status["collateral"] == account(sim)["collateral"]["collateral"]


async def test_a_sim_loss_cut_is_detected_and_alerted(
    sim: SimServer, rest: RestClient, hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    server = await margin_server(server_factory, fast_config, sim, hook, pos_server_keep_rate_warn=0,
                                 pos_server_keep_rate_close_only=1.0)
    await long(rest, 0.5)
    await polls(server)
    await SimHooks(sim.url).set_account(KEY, collateral_for(sim, 0.4))  # under 50 %: the exchange cuts
    await eventually(lambda: account(sim)["loss_cuts"] == 1, what="the simulator's loss-cut")
    await eventually(lambda: hook.texts("loss_cut"), what="the loss-cut alert")
    assert len(hook.texts("loss_cut")) == 1 and "loss-cut" in hook.texts("loss_cut")[0]
    assert server.margin.keep_rate is None  # flat now
    # Flat with too little collateral for the position it held: the hold stays until a deposit.
    assert server.controls.held(FX)
    await SimHooks(sim.url).set_account(KEY, 10_000_000)
    await eventually(lambda: not server.controls.held(FX), what="released after the deposit")


async def test_max_daily_loss_holds_every_bot_and_a_withdrawal_is_no_loss(
    sim: SimServer, rest: RestClient, hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    server = await margin_server(server_factory, fast_config, sim, hook, pos_server_max_daily_loss=50)
    await polls(server)
    await SimHooks(sim.url).set_account(KEY, 5_000_000)  # a 5M JPY withdrawal: not a trading loss
    await polls(server, 3)
    # Today's transfers: the simulator's opening deposit of 10M (a DEPOSIT row today), then -5M.
    assert server.margin.transfers_today == 5_000_000 and server.margin.pnl_today == 0
    assert not server.controls.held(FX)
    # Buy then sell 0.5 BTC across the spread: a realised loss of the spread × 0.5 (> 50 JPY).
    await long(rest, 0.5)
    await rest.send_child_order(FX, "SELL", 0.5)
    await eventually(lambda: _is(rest.net_position(FX), 0), what="flat again")
    await eventually(lambda: server.controls.held(FX), what="the daily loss hold")
    assert server.controls.held(FX) == [DAILY_LOSS_HOLD]
    pnl = server.margin.pnl_today
    assert pnl is not None and pnl < -50
    history = await rest.get_collateral_history(count=100)
    assert pnl == pytest.approx(sum(r["change"] for r in history if r["reason_code"] == "CLEARING_COLL"))
    await eventually(lambda: hook.texts("daily_loss"), what="the daily loss alert")
    assert "until the next JST day" in hook.texts("daily_loss")[0]
    assert server.status()["margin"]["pnl_gap"] == pytest.approx(pnl)  # no bot reports it: all of it is the gap
    # An operator's resume (bfsx ctl releases the hold) holds for the rest of the day.
    assert server.controls.release(DAILY_LOSS_HOLD)
    await polls(server, 3)
    assert not server.controls.held(FX)


async def test_the_daily_loss_hold_ends_with_the_jst_day(sim: SimServer, rest: RestClient) -> None:
    """The watch on its own, with a clock moved a day on: yesterday's rows are not today's loss."""
    from types import SimpleNamespace

    from bfsx.posserver.controls import Controls
    from bfsx.posserver.margin import MarginWatch

    shift = [0.0]
    alerts: list[tuple[str, str]] = []
    controls = Controls()
    settings = SimpleNamespace(pos_server_margin_interval=0.1, pos_server_keep_rate_warn=0,
                               pos_server_keep_rate_close_only=0, pos_server_max_daily_loss=50)
    watch = MarginWatch(rest, lambda: settings, controls, lambda k, t: alerts.append((k, t)), lambda: 0.0,
                        clock=lambda: time.time() + shift[0])
    await long(rest, 0.5)
    await rest.send_child_order(FX, "SELL", 0.5)
    await eventually(lambda: _is(rest.net_position(FX), 0), what="flat again")
    await eventually(watch.poll, what="a reading")
    await eventually(lambda: controls.held(FX) == [DAILY_LOSS_HOLD], what="the daily loss hold")
    assert [k for k, _ in alerts] == ["daily_loss"]
    shift[0] = 86_400.0  # the next JST day
    await watch.poll()
    assert watch.realized_today == 0 and watch.pnl_today == 0
    assert controls.held(FX) == [] and alerts[-1] == ("daily_loss", "a new JST day: the daily loss hold is released")


async def test_a_hanging_webhook_never_stops_the_checks_or_the_margin_polls(
    sim: SimServer, rest: RestClient, hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    hook.hold = asyncio.Event()
    server = await margin_server(server_factory, fast_config, sim, hook, pos_server_keep_rate_warn=1.5,
                                 pos_server_keep_rate_close_only=1.0)
    await long(rest, 0.5)
    await polls(server)
    await SimHooks(sim.url).set_account(KEY, collateral_for(sim, 0.8))
    await asyncio.wait_for(hook.arrived.wait(), 20)  # an alert is posted and its request hangs
    checks, margin_polls = server.checks, server.margin.polls
    await eventually(lambda: server.checks >= checks + 5 and server.margin.polls >= margin_polls + 5,
                     what="checks and polls while the webhook hangs")
    assert server.controls.held(FX) and hook.posts == []


async def test_the_servers_own_over_limit_is_one_alert_and_the_margin_goes_unknown(
    hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    # A private limit the margin polls (2 calls every 0.05 s) exceed within a second: real -1 answers.
    async with SimServer(SimConfig.fast(market=QUIET, limits={"private": 30})) as small:
        cfg = fast_config(endpoint=small.url, pos_server_discord=hook.url, pos_server_margin_interval=0.05,
                          pos_server_alert_interval=0.05, over_limit_pause=30)
        server = await server_factory(cfg, startup_grace=0.3)
        await eventually(lambda: hook.texts("over_limit"), what="the over-limit alert")
        assert "the position server got -1" in hook.texts("over_limit")[0]
        await eventually(lambda: hook.texts("margin_unknown"), what="the collateral unknown alert")
        known_polls = server.margin.polls
        await eventually(lambda: server.margin.failures >= 6, what="more refused polls")
        assert len(hook.texts("over_limit")) == 1  # one pause, however many -1 extend it
        assert server.margin.polls == known_polls  # nothing decided on what it could not read
        await server.stop()


async def test_thresholds_and_the_alert_selection_reload_live(
    sim: SimServer, rest: RestClient, hook: AlertHook, server_factory: Factory, fast_config: Any
) -> None:
    server = await margin_server(server_factory, fast_config, sim, hook, pos_server_keep_rate_warn=0,
                                 pos_server_keep_rate_close_only=0, pos_server_alerts=["loss_cut"])
    await long(rest, 0.5)
    await polls(server)
    await SimHooks(sim.url).set_account(KEY, collateral_for(sim, 0.9))
    await polls(server, 3)
    assert not server.controls.held(FX)  # close-only is off
    new = server.config.model_copy(update={"pos_server_keep_rate_close_only": 1.0,
                                           "pos_server_alerts": frozenset({"keep_rate_close_only"})})
    await server._config_changed(new)
    await eventually(lambda: server.controls.held(FX) == [KEEP_RATE_HOLD], what="the hold after the reload")
    await eventually(lambda: hook.texts("keep_rate_close_only"), what="the alert of a newly selected kind")
    assert server.alerts.kinds == {"keep_rate_close_only"}
