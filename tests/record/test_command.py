"""``bfsx record`` as a command: a real process against a real simulator process survives the
maintenance's 1012 close (a gap in the file, recording after it) and stops on SIGTERM with exit 0
and a readable, closed file; a mistake in the arguments is one line and exit 2."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

from bfsx.bitflyer import channels
from bfsx.cli import main
from record.helpers import frames, gaps, marks, records

if TYPE_CHECKING:
    from conftest import SimProcess  # the sim_process fixture of tests/conftest.py

BTC = "BTC_JPY"
STATUS = re.compile(r"^([\d,]+) frames \(([\d,]+)/s\) \| dropped (\d+) \| gaps (\d+) \| (\w+) \| ")


def _status_until(stdout: IO[str], done: Callable[[int, int, str], bool]) -> tuple[int, str]:
    """Read status lines (one every 0.3 s) until ``done(frames, gaps, state)``; return that line's
    frame count and the line."""
    for line in stdout:
        m = STATUS.match(line)
        assert m is not None, line
        n = int(m.group(1).replace(",", ""))
        if done(n, int(m.group(4)), m.group(5)):
            return n, line
    raise AssertionError("bfsx record ended before the expected status line")


def test_a_recording_process_survives_maintenance_and_stops_on_sigterm_with_a_readable_file(
    sim_process: SimProcess, tmp_path: Path
) -> None:
    (tmp_path / "trade.yaml").write_text(f"product: {BTC}\nws_endpoint: {sim_process.ws_url}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bfsx.cli", "record", "trade.yaml", "--out", "rec",
         "--status-seconds", "0.3", "--flush-seconds", "0.2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.extend(proc.stderr.readlines()) if proc.stderr else None)
    drain.start()
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"recording {BTC} from {sim_process.ws_url} (trade.yaml) into rec"), first
        _, line = _status_until(proc.stdout, lambda n, g, state: n >= 30)
        assert f"{BTC}/" in line and ".jsonl.zst" in line
        asyncio.run(sim_process.set_faults(maintenance=True))  # closes the socket with 1012
        _status_until(proc.stdout, lambda n, g, state: g == 1 and state == "connected")
        asyncio.run(sim_process.set_faults(maintenance=False))
        before, _ = _status_until(proc.stdout, lambda n, g, state: True)
        _status_until(proc.stdout, lambda n, g, state: n >= before + 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, "".join(err)
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(5)
    assert "stopped:" in rest and "1 gaps" in rest and "Traceback" not in "".join(err)

    recs = records(tmp_path / "rec" / BTC)
    assert marks(recs, "open")[0] is recs[0] and marks(recs, "close")[0] is recs[-1]
    assert recs[0].data["source"] == sim_process.ws_url  # type: ignore[union-attr]
    assert marks(recs, "close")[0].data["reason"] == "stop"
    (gap,) = gaps(recs)
    assert gap.code == 1012 and gap.reason == "maintenance"
    later = frames(recs[recs.index(gap):], channels.EXECUTIONS)
    assert later and all(f.recv_ns > gap.to_ns for f in later)
    got = frames(recs)
    assert len(got) >= 60 and {f.channel for f in got} >= {channels.board(BTC), channels.executions(BTC)}


@pytest.mark.parametrize(("args", "expect"), [
    (["--products", "FOO_JPY"], "unknown product 'FOO_JPY'; known: "),
    (["nope.yaml"], "nope.yaml: file not found"),
    (["--ws-endpoint", "http://127.0.0.1:1/json-rpc"], "ws_endpoint must be a ws:// or wss:// URL"),
    (["--retention-days", "-1"], "--retention-days must be 0 (keep everything) or more, got -1"),
    (["--status-seconds", "0"], "--status-seconds must be a number > 0, got 0"),
    (["--queue-mb", "nan"], "--queue-mb must be a number > 0, got nan"),
    (["--out", "afile"], "--out 'afile': "),
    (["bad.yaml"], "bad.yaml: 'product' is not a known product"),
])
def test_a_bad_argument_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], expect: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "bad.yaml").write_text("product: NOPE\n")
    assert main(["record", "--ws-endpoint", "ws://127.0.0.1:1/json-rpc", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bfsx record: "), err
    assert expect in err, err
    assert not (tmp_path / "recordings").exists()
