"""The real `bfsx trade` process with a misspelled key: one line on stderr, exit != 0, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_cli_misspelled_key_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apikey: k\nsecret: s\nadjust_max_sise: 0.2\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSX_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bfsx.cli", "trade", "bad.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bad.yaml" in lines[0] and "'adjust_max_sise'" in lines[0] and "'adjust_max_size'" in lines[0]


def test_cli_wrong_argument_form_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bfsx.cli", "trade", "strategy.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "TRADE_YAML" in proc.stderr
