"""Isolate config tests from the developer's environment and current directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for var in ("BFSX_APIKEY", "BFSX_SECRET", "BFSX_POS_SERVER_SECRET"):
        monkeypatch.delenv(var, raising=False)
    # The generated position-server secret goes to a per-test folder, never the developer's ~/.config.
    monkeypatch.setenv("BFSX_CONFIG_HOME", str(tmp_path / "bfsx-config"))
    monkeypatch.chdir(tmp_path)
    yield
