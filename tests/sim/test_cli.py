"""``bfsx sim`` as a real process: URLs on start, clean exit on SIGINT/SIGTERM, one-line config errors,
--config accounts, and the conftest ``sim_process`` fixture."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bfsx.net import free_port
from bfsx.sim.config import SimConfig
from bfsx.sim.engine import Engine
from bfsx.sim.flow import SyntheticFlow
from bfsx.sim.model import SIDE_NAME


def _sim(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bfsx.cli", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_urls_and_stops_cleanly(sig: signal.Signals) -> None:
    port = free_port()
    proc = _sim("--port", str(port), "--seed", "4")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.split() == ["REST", f"http://127.0.0.1:{port}", "realtime", f"ws://127.0.0.1:{port}/json-rpc"]
        assert _get(f"http://127.0.0.1:{port}/v1/gethealth") == {"status": "NORMAL"}
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("market:\n  taker_rate: -1\n", "'market.taker_rate' must be a finite number >= 0, got -1"),
        ("market:\n  taker_size_max: .inf\n", "'market.taker_size_max' must be a finite number > 0, got inf"),
        ("acounts: []\n", "unknown key 'acounts' (did you mean 'accounts'?)"),
        ("products: [DOGE_JPY]\n", "DOGE_JPY"),
        ("busy_order_rates: [150, 50, 400]\n", "'busy_order_rates' must be three rising rates"),
        ("accounts: [\n", "YAML syntax error at line"),
        ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
        (None, "sim.yaml: file not found"),
        ("accounts: [{api_key: a, api_secret: b, btc: 1.0e+309}]\n", "accounts[0].btc"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, content: str | None, expect: str) -> None:
    path = tmp_path / "sim.yaml"
    if content is not None:
        path.write_text(content)
    proc = _sim("--port", str(free_port()), "--config", str(path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and lines[0].startswith("bfsx sim:")
    assert "Traceback" not in err and out == ""


def test_port_in_use_is_a_user_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _sim("--port", str(port), "--quiet")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and "cannot listen" in err


def test_config_accounts_and_market(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        "seed: 11\n"
        "products: [FX_BTC_JPY]\n"
        "accounts:\n  - {api_key: alice, api_secret: s3cret, jpy: 1000000, btc: 0.25}\n"
        "market: {start_price: 5000000, taker_rate: 20}\n"
        "limits: {private: 50}\n"
    )
    port = free_port()
    proc = _sim("--port", str(port), "--config", str(path), "--quiet")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("REST ")
        state = _get(f"http://127.0.0.1:{port}/_sim/state")
        assert list(state["accounts"]) == ["alice"] and state["seed"] == 11
        assert state["accounts"]["alice"]["balances"]["BTC"]["amount"] == 0.25
        assert abs(state["markets"]["FX_BTC_JPY"]["fair_mid"] - 5_000_000) < 100_000
        assert list(state["markets"]) == ["FX_BTC_JPY"]
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_sim_process_fixture_replays_seed_1(sim_process: Any) -> None:
    """The conftest fixture runs `bfsx sim --seed 1`: its first executions are the seeded ones."""
    cfg = SimConfig(seed=1)
    engine = Engine(cfg)
    flow = SyntheticFlow(engine, cfg.market, cfg.seed)
    hist = engine.markets["FX_BTC_JPY"].history
    while len(hist) < 10:
        flow.step()
    expected = [(x[0], SIDE_NAME[x[1]], x[2], x[3] / 1e8) for x in list(hist)[:10]]
    url = f"{sim_process.url}/v1/getexecutions?product_code=FX_BTC_JPY&count=500"
    deadline = time.monotonic() + 60
    while True:
        rows = sorted(_get(url), key=lambda r: r["id"])
        if len(rows) >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(r["id"], r["side"], r["price"], r["size"]) for r in rows[:10]] == expected
    assert sim_process.state()["seed"] == 1
    assert sim_process.ws_url == f"ws://127.0.0.1:{sim_process.port}/json-rpc"
