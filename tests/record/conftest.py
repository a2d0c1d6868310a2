"""Fixtures of the recorder tests: a recorder on the in-process simulator, a sink that can be made slow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bfsx.record import DayFiles, Recorder, Store
from bfsx.sim.config import SimConfig
from bfsx.sim.server import SimServer
from record.helpers import FX, MakeRecorder


@pytest.fixture
def sim_config() -> SimConfig:
    """The busy test market, with a board snapshot every 0.5 s."""
    return SimConfig.fast(market={"snapshot_interval": 0.5})


@pytest.fixture
async def make_recorder(sim: SimServer, tmp_path: Path) -> AsyncIterator[MakeRecorder]:
    """``make_recorder(store=None, products=[FX], **kw)``: a started-later Recorder on the ``sim``
    fixture writing to ``tmp_path/rec``, quick to reconnect; stopped after the test."""
    made: list[Recorder] = []

    def make(store: Store | None = None, products: list[str] | None = None, **kw: Any) -> Recorder:
        st = store or Store(DayFiles(tmp_path / "rec"), flush_s=0.1)
        kw.setdefault("backoff_s", (0.05, 0.2))
        rec = Recorder(sim.ws_url, products or [FX], st, **kw)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        await rec.stop()
