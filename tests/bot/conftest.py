"""Fixtures for the bot-runtime tests.

In-process: ``start_bot(strategy, ...)`` runs a :class:`BotRuntime` on the test's loop against the
in-process ``sim`` fixture and stops it (exit code checked) at teardown.

Processes: ``run_bot(...)`` starts a real ``bfsx trade`` / ``python3 trade.py`` with a generated
trade.yaml; :class:`BotProcess` waits on its log file and sends it signals. The module-scoped
``sim_proc`` is one ``bfsx sim`` process with many accounts (``acct-1`` ... ``acct-20``), so each
bot trades an account nobody else touches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bfsx.bot.runtime import BotRuntime
from bfsx.bot.strategy import Strategy
from bfsx.config import StrategyConfig, TradeConfig
from bfsx.sim.hooks import eventually as wait_for
from bfsx.sim.server import SimServer

HERE = Path(__file__).resolve().parent
STRATEGIES = HERE / "strategies"
REPO = HERE.parent.parent
TRADE_PY = REPO / "trade.py"
BFSX = Path(sys.executable).with_name("bfsx")
ACCOUNTS = 20


def account(n: int) -> tuple[str, str]:
    """(api key, secret) of the n-th account of ``sim_proc`` (1-based)."""
    return f"acct-{n}", f"secret-of-acct-{n}-5f1d2c"




def wait_sync(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def net(state: dict[str, Any], key: str, product: str = "FX_BTC_JPY") -> float:
    """Exchange net position of ``key`` in a /_sim/state reply."""
    return float(state["accounts"][key]["positions"][product]["net"])


# ------------------------------------------------------------------------------ in-process bots
def trade_config(sim: SimServer, folder: Path, **kw: Any) -> TradeConfig:
    """A validated TradeConfig for the in-process simulator, with short intervals."""
    base: dict[str, Any] = dict(
        apikey="demo-key-1", secret="demo-secret-1", endpoint=sim.url, ws_endpoint=sim.ws_url,
        log_folder=str(folder), console_output=False, health_interval=0.2, bot_name="testbot",
    )
    base.update(kw)
    return TradeConfig.model_validate(base)


StartBot = Callable[..., Awaitable[BotRuntime]]


@pytest.fixture
async def start_bot(sim: SimServer, tmp_path: Path) -> AsyncIterator[StartBot]:
    """``await start_bot(strategy, strategy_config=None, strategy_yaml_path=None, config=None,
    trade_path=None, **trade_keys)``:
    a running BotRuntime (connected, book ready). Stopped at teardown; its run() must return 0."""
    running: list[tuple[BotRuntime, asyncio.Task[int]]] = []
    counter = itertools.count(1)

    async def start(
        strategy: Strategy,
        *,
        strategy_config: StrategyConfig | None = None,
        strategy_yaml_path: str | None = None,
        config: TradeConfig | None = None,
        trade_path: str | None = None,
        ready: bool = True,
        **trade: Any,
    ) -> BotRuntime:
        folder = tmp_path / f"bot{next(counter)}"
        trade.setdefault("log_folder", str(folder))
        cfg = config or trade_config(sim, folder, **trade)
        rt = BotRuntime(cfg, strategy_config or StrategyConfig(), strategy,
                        strategy_yaml_path=strategy_yaml_path, trade_path=trade_path)
        task = asyncio.create_task(rt.run())
        running.append((rt, task))
        if ready:
            await wait_for(lambda: task.done() or (rt.realtime.connected.is_set() and rt.feed.book.ready),
                           what="bot connected with a ready book")
            if task.done():
                task.result()
        return rt

    yield start
    for rt, task in running:
        if not task.done():
            rt.request_stop()
        code = await asyncio.wait_for(task, 30)
        assert code == 0


# ------------------------------------------------------------------------------ processes
def _sim_yaml(path: Path) -> Path:
    data = {
        "accounts": [
            {"api_key": k, "api_secret": s, "jpy": 100_000_000}
            for k, s in (account(n) for n in range(1, ACCOUNTS + 1))
        ],
        "market": {"taker_rate": 10.0, "taker_size_mean": 0.05, "snapshot_interval": 1.0, "ticker_interval": 0.2},
    }
    path.write_text(yaml.safe_dump(data))
    return path


class SimProc:
    """A ``bfsx sim`` process (see tests/conftest.py ``start_sim_process``) with blocking hooks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.url: str = inner.url
        self.ws_url: str = inner.ws_url

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = self.inner.state()
        return data

    def faults(self, **kw: Any) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.url}/_sim/faults", data=json.dumps(kw).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data


@pytest.fixture(scope="module")
def sim_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    """One ``bfsx sim`` process per test module, accounts acct-1..acct-20 (100M JPY each)."""
    start_sim_process = _start_sim_process()
    cfg = _sim_yaml(tmp_path_factory.mktemp("sim") / "sim.yaml")
    sp = start_sim_process("--config", str(cfg), seed=7)
    try:
        yield SimProc(sp)
    finally:
        sp.stop()


def _start_sim_process() -> Callable[..., Any]:
    # tests/conftest.py is not importable as a module under --import-mode=importlib: load it by path.
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bfsx_root_conftest", REPO / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn: Callable[..., Any] = mod.start_sim_process
    return fn


class BotProcess:
    """A running ``bfsx trade`` process; console off, stderr to a file, log in its log_folder."""

    def __init__(self, cmd: list[str], cwd: Path, log_file: Path) -> None:
        self.cmd = cmd
        self.cwd = cwd
        self.log_file = log_file
        self.stderr_file = cwd / f"stderr-{int(time.monotonic() * 1000)}.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
        with open(self.stderr_file, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env=env)

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        return self.stderr_file.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 40.0) -> str:
        def seen() -> bool:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited {self.proc.returncode} before logging {text!r}: "
                                     f"{self.stderr()[-2000:]}\n{self.log()[-3000:]}")
            return False

        wait_sync(seen, timeout, f"{text!r} in {self.log_file}")
        return self.log()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"bot did not exit within {timeout}s of signal {sig}:\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def bot_trade_yaml(sim: SimProc, n: int, folder: Path, **kw: Any) -> dict[str, Any]:
    """trade.yaml keys for a bot on account ``n`` of ``sim_proc``, logging into ``folder``."""
    key, secret = account(n)
    data: dict[str, Any] = dict(
        apikey=key, secret=secret, product="FX_BTC_JPY", endpoint=sim.url, ws_endpoint=sim.ws_url,
        bot_name=f"bot{n}", log_folder=str(folder), console_output=False, health_interval=0.5,
    )
    data.update(kw)
    return data


@pytest.fixture
def bot_processes() -> Iterator[list[BotProcess]]:
    """Append every BotProcess here: any still running after the test is killed."""
    procs: list[BotProcess] = []
    yield procs
    for p in procs:
        p.kill()
