"""``bfsx sim --upstream`` / ``--replay`` as real processes: a paper simulator following another
``bfsx sim`` process, and one clear line with exit 2 for every bad argument."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bfsx.net import free_port
from conftest import start_sim_process

FX = "FX_BTC_JPY"


def _run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "bfsx.cli", "sim", *args], capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _until(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--upstream", "http://example.com/json-rpc"], "is not a ws:// or wss:// URL"),
        (["--upstream", "ws://host:notaport/json-rpc"], "is not a URL"),
        (["--upstream", "ws://127.0.0.1:{port}/json-rpc"], "is this simulator itself"),
        (["--replay", "{tmp}/missing.jsonl.zst"], "no such file or folder"),
        (["--replay", "{tmp}/junk.jsonl.zst"], "not a bfsx recording"),
        (["--replay", "{tmp}"], "no recording files"),
        (["--replay", "{tmp}/junk.jsonl.zst", "--speed", "0"], "--speed must be a number > 0"),
        (["--replay", "{tmp}/junk.jsonl.zst", "--speed", "nan"], "--speed must be a number > 0"),
        (["--speed", "2"], "--speed only applies to --replay"),
        (["--upstream", "ws://127.0.0.1:1/json-rpc", "--replay", "{tmp}/junk.jsonl.zst"], "cannot be used together"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path: Path, args: list[str], expect: str) -> None:
    (tmp_path / "junk.jsonl.zst").write_bytes(b"this is not zstd")
    port = free_port()
    argv = [a.format(port=port, tmp=tmp_path) for a in args]
    code, out, err = _run("--port", str(port), "--quiet", *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("bfsx sim:") and expect in lines[0] and "Traceback" not in err
    assert out == ""  # refused before it listens


def test_a_paper_simulator_process_follows_another_simulator_process(tmp_path: Path) -> None:
    quick = tmp_path / "sim.yaml"  # snapshots every 0.3 s: the paper simulator knows the book sooner
    quick.write_text("market: {snapshot_interval: 0.3}\nupstream: {backoff_s: 0.05, backoff_max_s: 0.2}\n")
    upstream = start_sim_process("--config", str(quick), seed=3)
    paper = None
    try:
        paper = start_sim_process("--upstream", upstream.ws_url, "--config", str(quick), seed=1)
        board_url = f"{paper.url}/v1/getboard?product_code={FX}"
        _until(lambda: _get(f"{paper.url}/v1/gethealth?product_code={FX}") == {"status": "NORMAL"},
               "the paper simulator knows the book")
        state = paper.state()
        assert state["upstream"]["connected"] and state["flow_steps"] == 0
        # the upstream keeps trading: its prints reach the paper simulator's tape
        _until(lambda: paper.state()["upstream"]["prints"] > 0, "upstream prints on the paper tape")
        assert _get(board_url)["asks"] and _get(board_url)["bids"]
        upstream.stop()  # the upstream goes away: the paper simulator stops trading at once
        _until(lambda: _get(f"{paper.url}/v1/gethealth?product_code={FX}") == {"status": "STOP"}, "STOP")
        assert _get(board_url) == {"mid_price": 0, "bids": [], "asks": []}
        reasons = paper.state()["upstream"]["reasons"]
        assert "upstream disconnected" in reasons[FX]
        assert paper.proc.poll() is None  # still serving, reconnecting with back-off
        err = paper.stderr()
        assert "book known" in err and "upstream disconnected" in err and "Traceback" not in err
    finally:
        upstream.stop()
        if paper is not None:
            assert paper.stop() == 0


def test_a_replay_process_plays_a_recording_and_says_when_it_is_done(tmp_path: Path) -> None:
    from sim.test_replay import write_recording

    snapshot = {"mid_price": 10_000_000.0, "bids": [{"price": 9_999_900.0, "size": 0.5}],
                "asks": [{"price": 10_000_100.0, "size": 0.5}]}
    rows = [{"id": 500 + i, "side": "BUY", "price": 10_000_100.0, "size": 0.01,
             "exec_date": "2026-05-28T20:26:41.1234567Z"} for i in range(3)]
    frames: list[tuple[float, str, Any]] = [(0.0, f"lightning_board_snapshot_{FX}", snapshot)]
    frames += [(0.1 * (i + 1), f"lightning_executions_{FX}", [row]) for i, row in enumerate(rows)]
    folder = write_recording(tmp_path / "rec", frames)
    paper = start_sim_process("--replay", str(folder), "--speed", "2")
    try:
        _until(lambda: "replay finished" in paper.stderr(), "the end of the replay")
        state = paper.state()["upstream"]
        assert state["prints"] == 3 and state["reasons"][FX] == "the replay has ended"
        assert "replay finished: 4 frames, 0 gaps" in paper.stderr()
        tape = _get(f"{paper.url}/v1/getexecutions?product_code={FX}")
        assert [(t["side"], t["price"], t["size"]) for t in tape] == [("BUY", 10_000_100, 0.01)] * 3
    finally:
        assert paper.stop() == 0
