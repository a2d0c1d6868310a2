"""Fixtures for the position-server tests: a config and an in-process server on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bfsx.config import TradeConfig
from bfsx.posserver.server import PosServer
from bfsx.sim.hooks import eventually as wait_for

SECRET = "pos-secret"
#: Nothing listens here: every REST call of a server without a simulator fails fast (= unknown).
DEAD_ENDPOINT = "http://127.0.0.1:9"


def fast_config(endpoint: str = DEAD_ENDPOINT, **kw: Any) -> TradeConfig:
    """Short intervals so 30 s logic runs in a fraction of a second (validated, then port 0)."""
    base: dict[str, Any] = dict(
        apikey="demo-key-1", secret="demo-secret-1", endpoint=endpoint, ws_endpoint="ws://127.0.0.1:9/json-rpc",
        pos_server=["127.0.0.1", 51000], pos_server_secret=SECRET, pos_server_check_interval=0.3,
        pos_server_consecutive=3, pos_server_evict_after=2.0, pos_server_report_interval=0.2,
        pos_server_query_interval=0.2, adjust_max_size=0.1, console_output=False,
    )
    base.update(kw)
    cfg = TradeConfig.model_validate(base)
    return cfg.model_copy(update={"pos_server": ("127.0.0.1", 0)})




@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[PosServer]]]:
    servers: list[PosServer] = []

    async def make(config: TradeConfig | None = None, **kw: Any) -> PosServer:
        kw.setdefault("state_dir", tmp_path / "state")
        kw.setdefault("console", False)
        s = PosServer(config or fast_config(), **kw)
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.stop()


@pytest.fixture(name="fast_config")
def _fast_config() -> Callable[..., TradeConfig]:
    return fast_config


@pytest.fixture(name="wait_for")
def _wait_for() -> Callable[..., Awaitable[Any]]:
    return wait_for
