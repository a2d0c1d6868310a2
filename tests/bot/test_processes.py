"""Real ``bfsx trade`` / ``python3 trade.py`` processes against a real ``bfsx sim`` process.

One fleet of five bots, each on its own simulator account, is started in parallel (the four
argument forms of docs/config.md, plus a ``close_on_exit`` bot), trades, and is stopped with SIGINT or
SIGTERM; the tests below check different parts of that one run. Then: a misspelled key, and
kill -9 mid-trading followed by a restart.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bfsx.bitflyer.rest import RestClient

from .conftest import (
    BFSX,
    STRATEGIES,
    TRADE_PY,
    BotProcess,
    SimProc,
    account,
    bot_trade_yaml,
    net,
    wait_sync,
    write_yaml,
)

PROBE = STRATEGIES / "probe.py"


@dataclass
class Fleet:
    bots: dict[str, BotProcess] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    during: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fleet(sim_proc: SimProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    f = Fleet()
    probe_params = {"resting": 2}

    def folder(name: str) -> Path:
        d = root / name
        d.mkdir()
        return d

    # form 0: no argument, ./trade.yaml names the strategy (also: DEBUG log, handlers and a leak attempt)
    d = folder("form0")
    write_yaml(d / "probe0.yaml", {"parameters": {**probe_params, "log_handlers": True, "leak_secret": True}})
    write_yaml(d / "trade.yaml", bot_trade_yaml(sim_proc, 1, d / "logs", strategy_py=str(PROBE),
                                                strategy_yaml="probe0.yaml", log_level="DEBUG"))
    f.bots["form0"] = BotProcess([str(BFSX), "trade"], d, d / "logs" / "bot1.log")
    # form 1: one argument, the run config (python3 trade.py)
    d = folder("form1")
    write_yaml(d / "probe1.yaml", {"parameters": probe_params})
    write_yaml(d / "mytrade.yaml", bot_trade_yaml(sim_proc, 2, d / "logs", strategy_py=str(PROBE),
                                                  strategy_yaml=str(d / "probe1.yaml")))
    f.bots["form1"] = BotProcess([sys.executable, str(TRADE_PY), "mytrade.yaml"], d, d / "logs" / "bot2.log")
    # form 2: strategy + its yaml, ./trade.yaml without strategy keys
    d = folder("form2")
    write_yaml(d / "probe2.yaml", {"parameters": probe_params})
    write_yaml(d / "trade.yaml", bot_trade_yaml(sim_proc, 3, d / "logs"))
    f.bots["form2"] = BotProcess([str(BFSX), "trade", str(PROBE), "probe2.yaml"], d, d / "logs" / "bot3.log")
    # form 3: all three (python3 trade.py)
    d = folder("form3")
    write_yaml(d / "probe3.yaml", {"parameters": probe_params})
    write_yaml(d / "run.yaml", bot_trade_yaml(sim_proc, 4, d / "logs"))
    f.bots["form3"] = BotProcess([sys.executable, str(TRADE_PY), "run.yaml", str(PROBE), "probe3.yaml"], d,
                                 d / "logs" / "bot4.log")
    # close_on_exit: buys at market first, must be flat after Ctrl+C
    d = folder("close")
    write_yaml(d / "probe5.yaml", {"parameters": {**probe_params, "market_buy": 0.02}})
    write_yaml(d / "trade.yaml", bot_trade_yaml(sim_proc, 5, d / "logs", close_on_exit=True))
    f.bots["close"] = BotProcess([str(BFSX), "trade", str(PROBE), "probe5.yaml"], d, d / "logs" / "bot5.log")

    f.accounts = {"form0": 1, "form1": 2, "form2": 3, "form3": 4, "close": 5}
    f.signals = {"form0": signal.SIGTERM, "form1": signal.SIGINT, "form2": signal.SIGTERM,
                 "form3": signal.SIGINT, "close": signal.SIGINT}
    f.secrets = {name: account(n) for name, n in f.accounts.items()}
    try:
        for bot in f.bots.values():
            bot.wait_log("probe ready", timeout=60)
        f.during = sim_proc.state()
        for name, bot in f.bots.items():
            bot.proc.send_signal(f.signals[name])
        # Impatient users press Ctrl+C twice: a second signal during (or after) the stop is harmless.
        for name in ("form1", "close"):
            bot = f.bots[name]
            bot.wait_log("stopping: cancelling open orders", timeout=30)
            if bot.proc.poll() is None:
                bot.proc.send_signal(f.signals[name])
        for name, bot in f.bots.items():
            f.codes[name] = bot.proc.wait(40)
        f.after = sim_proc.state()
        yield f
    finally:
        for bot in f.bots.values():
            bot.kill()


def test_four_argument_forms_start_a_trading_bot(fleet: Fleet) -> None:
    for name in ("form0", "form1", "form2", "form3"):
        key = account(fleet.accounts[name])[0]
        live = fleet.during["accounts"][key]["open_orders"]
        assert len(live) == 2, f"{name}: expected its 2 resting orders on the exchange, got {live}"
        log = fleet.bots[name].log()
        assert "realtime connected" in log and "trading FX_BTC_JPY" in log, name


@pytest.mark.parametrize("name", ["form0", "form1", "form2", "form3", "close"])
def test_sigint_and_sigterm_exit_0_and_leave_no_open_orders(fleet: Fleet, name: str) -> None:
    key = account(fleet.accounts[name])[0]
    assert fleet.codes[name] == 0, f"{name} exited {fleet.codes[name]}: {fleet.bots[name].stderr()[-1000:]}"
    assert fleet.after["accounts"][key]["open_orders"] == [], f"{name} left orders open"
    log = fleet.bots[name].log()
    assert "stopping: cancelling open orders" in log and "stopped: position" in log
    assert "orders still open after stop" not in log
    assert "Traceback" not in fleet.bots[name].stderr()


def test_close_on_exit_flattens(fleet: Fleet) -> None:
    key = account(fleet.accounts["close"])[0]
    assert net(fleet.during, key) == pytest.approx(0.02), "the market buy should have filled before the stop"
    assert net(fleet.after, key) == 0.0
    assert "stopped: position 0.0" in fleet.bots["close"].log()


def test_log_file_rotates_daily_and_never_shows_secrets(fleet: Fleet) -> None:
    bot = fleet.bots["form0"]
    assert bot.log_file.is_file() and bot.log_file.parent.name == "logs"
    log = bot.log()
    assert "probe handler TimedRotatingFileHandler when=MIDNIGHT" in log
    assert "DEBUG   bfsx.bot.bot1: probe leak key=*** secret=***" in log  # log_level: DEBUG applied
    for name, bot in fleet.bots.items():
        text = bot.log() + bot.stderr()
        for secret in fleet.secrets[name]:
            assert secret not in text, f"{name}: a credential is in its log"


# ------------------------------------------------------------------------------ user errors
@pytest.mark.parametrize(
    ("file", "bad", "key"),
    [
        ("trade.yaml", {"adjust_max_sise": 0.1}, "adjust_max_sise"),
        ("probe.yaml", {"close_postion": True}, "close_postion"),
    ],
)
def test_misspelled_key_gives_one_line_and_exit_2(tmp_path: Path, file: str, bad: dict[str, Any], key: str) -> None:
    trade = {"apikey": "k-123456", "secret": "s-123456", "endpoint": "http://127.0.0.1:9",
             "ws_endpoint": "ws://127.0.0.1:9/json-rpc", "strategy_py": str(PROBE), "strategy_yaml": "probe.yaml",
             "console_output": False}
    strategy: dict[str, Any] = {"parameters": {}}
    (trade if file == "trade.yaml" else strategy).update(bad)
    write_yaml(tmp_path / "trade.yaml", trade)
    write_yaml(tmp_path / "probe.yaml", strategy)
    import subprocess

    r = subprocess.run([str(BFSX), "trade"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode not in (0, None)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert key in lines[0] and file in lines[0]
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ kill -9
def _journal(folder: Path) -> tuple[Decimal, int]:
    """(position, fill count) as written in a bot's journal (read-only, while or after it runs)."""
    con = sqlite3.connect(f"file:{folder / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT side, size FROM fills").fetchall()
    finally:
        con.close()
    pos = sum((Decimal(repr(s)) if side == "BUY" else -Decimal(repr(s)) for side, s in rows), Decimal(0))
    return pos, len(rows)


async def _hit(url: str, key: str, secret: str, side: str, price: float) -> None:
    """From another account: take every level up to ``price`` on the other side (IOC), so a resting
    order of the killed bot at that price is filled while it is dead."""
    async with RestClient(url, key, secret) as rest:
        board = await rest.get_board("FX_BTC_JPY")
        if side == "SELL":  # into the bids at or above price
            depth = sum(b["size"] for b in board["bids"] if b["price"] >= price)
        else:
            depth = sum(a["size"] for a in board["asks"] if a["price"] <= price)
        await rest.send_child_order("FX_BTC_JPY", side, round(depth + 0.5, 8), price, time_in_force="IOC")


def test_kill_9_mid_trading_then_restart_restores_and_reconciles(
    sim_proc: SimProc, tmp_path: Path, bot_processes: list[BotProcess]
) -> None:
    n = 10
    key, _ = account(n)
    logs = tmp_path / "logs"
    write_yaml(tmp_path / "maker.yaml", {"parameters": {"place": True}})
    write_yaml(tmp_path / "trade.yaml", bot_trade_yaml(sim_proc, n, logs, strategy_py=str(STRATEGIES / "maker.py"),
                                                       strategy_yaml="maker.yaml"))
    first = BotProcess([str(BFSX), "trade"], tmp_path, logs / f"bot{n}.log")
    bot_processes.append(first)
    first.wait_log("maker placed")
    # Trading: wait until at least one fill is journaled, then kill -9 (no cancel, no goodbye).
    wait_sync(lambda: _journal(logs)[1] >= 1, 40, "a first fill in the journal")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    pos_at_death, fills_at_death = _journal(logs)
    state = sim_proc.state()
    resting = state["accounts"][key]["open_orders"]
    assert resting, "the maker should still have resting orders on the exchange"
    # While the bot is dead, another account takes its resting order nearest the touch.
    buys = [o["price"] for o in resting if o["side"] == "BUY"]
    if buys:
        asyncio.run(_hit(sim_proc.url, *account(n + 1), "SELL", max(buys)))
    else:
        asyncio.run(_hit(sim_proc.url, *account(n + 1), "BUY", min(o["price"] for o in resting)))
    wait_sync(lambda: sim_proc.state()["accounts"][key]["executions"] > fills_at_death, 20, "a fill while dead")

    # Restart with the same config (place: false, so it only manages what it has).
    write_yaml(tmp_path / "maker.yaml", {"parameters": {"place": False}})
    second = BotProcess([str(BFSX), "trade"], tmp_path, logs / f"bot{n}.log")
    bot_processes.append(second)
    log = second.wait_log("maker restarted")
    restored = [line for line in log.splitlines() if "restored from journal" in line]
    assert restored, "the restart should report what it restored"
    assert f"{fills_at_death} fills, position {float(pos_at_death)}" in restored[-1]
    # Resync recovers what happened while dead: the journal catches up with the exchange's fills.
    wait_sync(lambda: _journal(logs)[1] == sim_proc.state()["accounts"][key]["executions"], 30,
              "the journal to hold every fill of the account")
    assert second.stop(signal.SIGTERM) == 0
    final = sim_proc.state()
    pos, count = _journal(logs)
    assert count == final["accounts"][key]["executions"]
    assert final["accounts"][key]["open_orders"] == []
    assert float(pos) == pytest.approx(net(final, key), abs=1e-9)
    assert "recovered" in second.log()
