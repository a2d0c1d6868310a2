"""The kill switch and reduce-only corrections with real processes: a ``bfsx sim`` process, real
``bfsx trade`` bots (tests/posserver/strategies/ctl_bot.py) on one account, the position server in
this process, and ``bfsx ctl`` run as the operator would (a subprocess of the real CLI).

- a hand flatten on the exchange, or the simulator's loss-cut: nothing re-opened for at least 3
  check rounds, the market frozen,
  every bot paused (its log, its status line, its refusal gate: even a closing order would open
  exposure, the bots' positions being gone from the exchange), one alert; ``bfsx ctl adopt``
  resolves it with invariant 1 on the adopted base;
- a foreign buy is still corrected (it reduces); ``bfsx ctl flatten`` brings every bot and the
  exchange to the base; ``resume`` lets them trade again;
- ``pause`` / ``resume`` honoured; the pause survives a server restart, and ``bfsx ctl`` during the
  restart answers one line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from bfsx.bitflyer.rest import RestClient
from bfsx.config import TradeConfig
from bfsx.net import free_port
from bfsx.posserver.lease_desk import LeaseLimits
from bfsx.posserver.server import PosServer
from bfsx.sim.hooks import eventually as wait_for

from ..conftest import SimProcess, start_sim_process

FX = "FX_BTC_JPY"
KEY, API_SECRET = "demo-key-1", "demo-secret-1"
POS_SECRET = "pos-secret-ctl"
STRATEGY = Path(__file__).parent / "strategies" / "ctl_bot.py"

pytestmark = pytest.mark.timeout(120)
#: The simulator's limits, raised so the server may check every 0.3 s (at bitFlyer's 500 private
#: calls per 5 minutes its own polls would leave the bots no lease; the leases are not tested here).
LIMIT = 100_000


def _server_config(sim: Any, port: int, **kw: Any) -> TradeConfig:
    base: dict[str, Any] = dict(
        apikey=KEY, secret=API_SECRET, endpoint=sim.url, ws_endpoint=sim.ws_url,
        pos_server=["127.0.0.1", port], pos_server_secret=POS_SECRET, pos_server_check_interval=0.3,
        pos_server_consecutive=2, pos_server_evict_after=20.0, pos_server_report_interval=0.2,
        adjust_max_size=0.1, console_output=False,
    )
    base.update(kw)
    return TradeConfig.model_validate(base)


class Harness:
    """The server (restartable on one port and state dir), the bots, the operator's CLI."""

    def __init__(self, sim: Any, folder: Path) -> None:
        self.sim, self.folder = sim, folder
        self.port = free_port()
        self.server: PosServer | None = None
        self.bots: dict[str, subprocess.Popen[bytes]] = {}
        self.alerts: list[tuple[str, str]] = []
        self.ctl_yaml = folder / "ctl.yaml"
        self.ctl_yaml.write_text(yaml.safe_dump(dict(
            pos_server=["127.0.0.1", self.port], pos_server_secret=POS_SECRET, console_output=False)))

    async def start_server(self, **kw: Any) -> PosServer:
        # quiet_seconds 1: a bot's fill report may lag the exchange by a few hundred ms under load;
        # judged sooner, the server could take the lag for a drift (real settings wait far longer).
        server = PosServer(_server_config(self.sim, self.port, **kw), state_dir=self.folder / "server",
                           console=False, startup_grace=0.5, quiet_seconds=1.0)
        server.leases.limits = LeaseLimits(private=LIMIT, orders=LIMIT, ip=LIMIT)
        # Record every alert (the method the Discord forwarding lives behind), then let it log.
        real = server.alert

        def alert(kind: str, text: str) -> None:
            self.alerts.append((kind, text))
            real(kind, text)

        server.alert = alert  # type: ignore[method-assign]
        await server.start()
        self.server = server
        return server

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def start_bot(self, name: str, buy: float = 0.0, *, strategy: Path = STRATEGY,
                  parameters: dict[str, Any] | None = None) -> None:
        """A real ``bfsx trade`` process of ``strategy`` (ctl_bot.py, buying ``buy`` first, unless
        another strategy and its ``parameters`` are given)."""
        d = self.folder / name
        d.mkdir()
        params = parameters if parameters is not None else {"buy": buy}
        (d / f"{strategy.stem}.yaml").write_text(yaml.safe_dump({"parameters": params, "price_band": 0.5}))
        (d / "trade.yaml").write_text(yaml.safe_dump(dict(
            apikey=KEY, secret=API_SECRET, product=FX, endpoint=self.sim.url, ws_endpoint=self.sim.ws_url,
            bot_name=name, log_folder=str(d / "logs"), console_output=False, health_interval=0.5,
            pos_server=["127.0.0.1", self.port], pos_server_secret=POS_SECRET, pos_server_report_interval=0.2,
            pos_server_control_interval=0.1, status_interval=0.2,
        )))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
        with open(d / "stderr.txt", "wb") as err:
            self.bots[name] = subprocess.Popen(
                [sys.executable, "-m", "bfsx.cli", "trade", "trade.yaml", str(strategy), f"{strategy.stem}.yaml"],
                cwd=d, stdout=subprocess.DEVNULL, stderr=err, env=env)

    def log(self, name: str) -> str:
        path = self.folder / name / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        proc = self.bots[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}: "
                                 f"{(self.folder / name / 'stderr.txt').read_text()[-1500:]}\n{text[-1500:]}")
        return text

    def every_log(self, text: str) -> bool:
        return all(text in self.log(n) for n in self.bots)

    def every_log_after(self, marks: dict[str, int], text: str) -> bool:
        return all(text in self.log(n)[marks[n]:] for n in self.bots)

    def marks(self) -> dict[str, int]:
        return {n: len(self.log(n)) for n in self.bots}

    async def ctl(self, *words: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bfsx.cli", "ctl", str(self.ctl_yaml), *words,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def net(self) -> Decimal:
        return Decimal(repr(self.sim.state()["accounts"][KEY]["positions"][FX]["net"]))

    def total(self) -> Decimal:
        assert self.server is not None
        return self.server.registry.total(FX)

    async def stop_bots(self) -> None:
        for proc in self.bots.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.bots.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 40)
            except TimeoutError:
                proc.kill()
                raise AssertionError(f"{name} did not stop") from None


@contextlib.asynccontextmanager
async def running_harness(folder: Path, market: dict[str, Any] | None = None) -> AsyncIterator[Harness]:
    """A ``bfsx sim`` process (its limits raised, ``market`` over its defaults) and a harness on it;
    bots, server and simulator stopped at the end."""
    cfg = folder / "sim.yaml"
    cfg.write_text(yaml.safe_dump({"limits": {"private": LIMIT, "orders": LIMIT, "ip": LIMIT}, "market": market or {}}))
    sim: SimProcess = start_sim_process("--config", str(cfg))
    h = Harness(sim, folder)
    try:
        yield h
    finally:
        try:
            await h.stop_bots()
            await h.stop_server()
        finally:
            sim.stop()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path) as h:
        yield h


async def _bots_ready(h: Harness, expected: Decimal) -> PosServer:
    server = h.server
    assert server is not None
    await wait_for(lambda: h.every_log("ctl_bot ready"), 60, what="every bot trading")
    try:
        await wait_for(lambda: len(server.registry.bots) == len(h.bots) and h.total() == expected == h.net()
                       and server.results.get(FX) is not None and server.results[FX].exchange == expected,
                       30, what=f"bots counted, exchange = Σ bots = {expected}")
    except AssertionError as e:
        logs = "\n".join(f"--- {n}\n" + "\n".join([line for line in h.log(n).splitlines()
                                                  if "status:" not in line][-25:]) for n in h.bots)
        raise AssertionError(f"{e}: bots {sorted(server.registry.bots)}, Σ {h.total()}, exchange {h.net()}, "
                             f"result {server.results.get(FX)}\n{logs}") from None
    return server


async def _hand_trade(h: Harness, side: str, size: float) -> None:
    async with RestClient(h.sim.url, KEY, API_SECRET) as rest:  # behind every bot's back
        await rest.send_child_order(FX, side, size)  # type: ignore[arg-type]


@pytest.mark.parametrize("outside", ["hand_flatten", "loss_cut"])
async def test_a_hand_flatten_is_not_reopened_bots_paused_one_alert_then_adopt(harness: Harness,
                                                                                   outside: str) -> None:
    h = harness
    server = await h.start_server()
    h.start_bot("long1", 0.02)
    h.start_bot("long2", 0.01)
    await _bots_ready(h, Decimal("0.03"))
    checks_before = server.checks
    if outside == "hand_flatten":
        await _hand_trade(h, "SELL", 0.03)  # the botter flattens the account in the app
    else:  # the collateral withdrawn: the simulator loss-cuts every CFD position with its own orders
        reply = await h.sim.set_account(KEY, 0)
        assert reply["loss_cut"] is True, reply
    await wait_for(lambda: h.net() == 0, 10, what=f"the {outside} filled")
    await wait_for(lambda: server.controls.frozen_why(FX) is not None, 30, what="the market frozen")
    # Several check rounds later: still flat, not one correcting order, one alert.
    frozen_at = server.checks
    await wait_for(lambda: server.checks >= frozen_at + 4, 20, what="4 more check rounds")
    assert server.checks - checks_before >= 3 + 4
    assert h.net() == 0
    assert server.counters["corrections"] == 0 and server.counters["correction_errors"] == 0
    assert server.counters["reopen_refused"] >= 1
    freezes = [a for a in h.alerts if a[0] == "freeze"]
    assert len(freezes) == 1, h.alerts
    assert "re-open" in freezes[0][1] and FX in freezes[0][1]
    assert h.total() == Decimal("0.03")  # the bots still believe their positions (their own fills)
    # Every bot: told once, shows it in its status line, its gate refuses every order: a SELL that
    # "closes" a bot's own position would open a short on the flat account.
    await wait_for(lambda: h.every_log("position server: mode pause (pause:frozen)"), 10, what="bots paused")
    await wait_for(lambda: h.every_log("| mode pause (pause:frozen)"), 10, what="status lines")
    await wait_for(lambda: h.every_log("ctl_bot probe BUY refused: paused by the position server (pause:frozen)"),
                   10, what="BUY refused")
    await wait_for(lambda: h.every_log("ctl_bot probe SELL refused: paused by the position server (pause:frozen)"),
                   10, what="SELL refused")
    assert all(h.log(n).count("position server: mode pause") == 1 for n in h.bots)
    # The gate's latest answer for a SELL (logged on each change) is the refusal: not one closing order.
    assert all(h.log(n).rsplit("ctl_bot probe SELL ", 1)[1].startswith("refused: paused") for n in h.bots)
    assert h.net() == 0  # nothing traded while frozen
    st = server.status()
    fx = next(m for m in st["markets"] if m["market"] == FX)
    assert fx["frozen"] and fx["mode"] == "pause"

    # The operator keeps the account flat: the exchange position becomes the expected one.
    marks = h.marks()
    code, out, err = await h.ctl("adopt", FX)
    assert code == 0, (out, err)
    assert out.startswith("adopted: FX_BTC_JPY base -0.03") and not err, out
    assert server.controls.frozen_why(FX) is None and server.base_of(FX) == Decimal("-0.03")
    await wait_for(lambda: h.every_log_after(marks, "position server: mode run"), 10, what="bots run again")
    await wait_for(lambda: h.every_log_after(marks, "ctl_bot probe BUY ok"), 10, what="BUY allowed again")
    checks = server.checks
    await wait_for(lambda: server.checks >= checks + 4, 20, what="checks after adopt")
    # Invariant 1 with the adopted base: exchange = Σ bots + base.
    assert h.net() == h.total() + server.base_of(FX) == 0
    assert server.counters["corrections"] == 0
    assert len([a for a in h.alerts if a[0] == "freeze"]) == 1
    assert any(a[0] == "kill_switch" and "adopt" in a[1] for a in h.alerts)
    # Persisted: the adopted base is in the state dir's controls.json.
    assert '"FX_BTC_JPY": "-0.03"' in (h.folder / "server" / "controls.json").read_text()


async def test_b_a_foreign_buy_is_corrected_and_ctl_flatten_brings_all_to_base(harness: Harness) -> None:
    h = harness
    server = await h.start_server()
    h.start_bot("long", 0.02)
    h.start_bot("small", 0.01)
    await _bots_ready(h, Decimal("0.03"))
    await _hand_trade(h, "BUY", 0.01)  # exposure no bot asked for: taken away (it reduces |exchange|)
    await wait_for(lambda: server.counters["corrections"] == 1 and h.net() == Decimal("0.03"), 30,
                   what="the foreign buy corrected")
    assert server.controls.frozen_why(FX) is None and not [a for a in h.alerts if a[0] == "freeze"]

    code, out, err = await h.ctl("flatten")
    assert code == 0 and "every bot closes its position" in out, (out, err)
    await wait_for(lambda: h.every_log("position server flatten: SELL"), 15, what="every bot closed")
    await wait_for(lambda: h.total() == 0 and h.net() == 0, 30, what="every bot and the exchange at base 0")
    assert h.every_log("position server: mode flatten (flatten)")
    await wait_for(lambda: h.every_log("| mode flatten (flatten)"), 10, what="status lines")
    # Close-only afterwards: nothing may grow a position.
    await wait_for(lambda: h.every_log("ctl_bot probe BUY refused: flatten by the position server"), 10,
                   what="BUY refused after the flatten")
    marks = h.marks()
    code, out, _ = await h.ctl("resume")
    assert code == 0 and "resumed" in out, out
    await wait_for(lambda: h.every_log_after(marks, "position server: mode run"), 10, what="bots run again")
    checks = server.checks
    await wait_for(lambda: server.checks >= checks + 3, 20, what="checks after resume")
    assert h.net() == h.total() + server.base_of(FX) == 0
    assert any(a[0] == "kill_switch" and "flatten" in a[1] for a in h.alerts)


async def test_c_pause_survives_a_server_restart_and_resume(harness: Harness) -> None:
    h = harness
    await h.start_server()
    h.start_bot("pausy", 0.01)
    await _bots_ready(h, Decimal("0.01"))
    code, out, _ = await h.ctl("pause", "fx_btc_jpy")  # odd casing: the product code it names
    assert code == 0 and out.startswith("FX_BTC_JPY: paused"), out
    await wait_for(lambda: h.every_log("ctl_bot probe BUY refused: paused by the position server"), 10,
                   what="BUY refused")
    await wait_for(lambda: h.every_log("ctl_bot probe SELL refused: paused by the position server"), 10,
                   what="SELL refused")
    assert h.every_log("position server: mode pause (pause:ctl)")

    await h.stop_server()
    await wait_for(lambda: h.every_log("control query failed"), 10, what="the bot lost the server")
    assert h.every_log("keeping the last mode (pause)")
    code, out, err = await h.ctl("status")  # during the restart
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, (out, err)
    assert "no valid answer from the position server" in err or "cannot reach" in err
    marks = h.marks()
    server = await h.start_server()
    code, out, _ = await h.ctl("status")
    assert code == 0 and "FX_BTC_JPY paused (ctl)" in out, out
    assert server.controls.bot_control(FX).mode == "pause"
    await wait_for(lambda: FX in server.registry.markets, 10, what="the bot reports to the new server")
    # The bot kept its mode through the outage and the new server says the same: no change logged.
    assert "position server: mode" not in h.log("pausy")[marks["pausy"]:]
    assert "ctl_bot probe BUY ok" not in h.log("pausy")[marks["pausy"]:]

    code, out, _ = await h.ctl("resume", FX)
    assert code == 0 and "resumed" in out, out
    await wait_for(lambda: h.every_log_after(marks, "position server: mode run"), 10, what="bot runs again")
    await wait_for(lambda: h.every_log_after(marks, "ctl_bot probe BUY ok"), 10, what="BUY allowed again")


async def test_margin_keep_rate_and_daily_loss_turn_real_bots_close_only(harness: Harness) -> None:
    """Margin watch + real controls: a collateral drop below pos_server_keep_rate_close_only puts
    every bot process close-only; a deposit releases it; a daily loss limit does the same."""
    from bfsx.sim.hooks import SimHooks

    h = harness
    await h.start_server(pos_server_margin_interval=0.1, pos_server_keep_rate_warn=1.5,
                         pos_server_keep_rate_close_only=1.0)
    h.start_bot("m1", 0.02)
    h.start_bot("m2", 0.01)
    server = await _bots_ready(h, Decimal("0.03"))
    c = h.sim.state()["accounts"][KEY]["collateral"]
    hooks = SimHooks(h.sim.url)
    await hooks.set_account(KEY, round(0.8 * c["require_collateral"] - c["open_position_pnl"], 2))
    await wait_for(lambda: h.every_log("position server: mode close-only (keep_rate)"), 20, what="bots close-only")
    assert server.controls.bot_control(FX).mode == "close-only"
    marks = h.marks()
    await hooks.set_account(KEY, 10_000_000)
    await wait_for(lambda: h.every_log_after(marks, "position server: mode run"), 20, what="bots run again")
    kinds = [k for k, _ in h.alerts]
    assert "keep_rate_warn" in kinds and kinds.count("keep_rate_close_only") == 2  # held, released
    # The daily loss limit, reloaded live: today's realised loss (the spread of the bots' buys) is over 1 JPY?
    new = server.config.model_copy(update={"pos_server_max_daily_loss": 1e-6})
    await server._config_changed(new)
    await wait_for(lambda: server.margin.pnl_today is not None and server.margin.pnl_today < 0, 20,
                   what="a loss today")
    await wait_for(lambda: h.every_log("position server: mode close-only (daily_loss)"), 20, what="daily loss hold")
