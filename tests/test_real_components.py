"""A missing real component skips a test locally and fails it under CI=true (never a quiet green)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("", "1 skipped")])
def test_missing_component_fails_in_ci_and_skips_with_its_reason_locally(tmp_path: Path, ci: str, outcome: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text("from real_components import missing\n\ndef test_needs_it():\n    missing('influxd is not installed')\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(HERE)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", "--rootdir", str(tmp_path), str(probe)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    ).stdout
    assert outcome in out and "influxd is not installed" in out, out
