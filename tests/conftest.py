"""Shared fixtures: the exchange simulator, in-process (``sim``) or as a real process (``sim_process``).

Override the in-process config per test module with a ``sim_config`` fixture::

    @pytest.fixture
    def sim_config() -> SimConfig:
        return SimConfig.fast(minute_seconds=0.5, limits={"private": 20})

Hooks (faults, state) work the same on both: ``await sim.set_faults(latency_ms=200)``,
``sim.state()`` / ``await sim_process.fetch_state()``; ``sim_hooks(url)`` for any running simulator.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any

import pytest

from bfsx.net import free_port
from bfsx.sim.config import SimConfig
from bfsx.sim.hooks import SimHooks
from bfsx.sim.server import SimServer

DEMO_KEYS = (("demo-key-1", "demo-secret-1"), ("demo-key-2", "demo-secret-2"))


@pytest.fixture
def sim_config() -> SimConfig:
    """Config of the ``sim`` fixture: a busy seeded market (``SimConfig.fast()``)."""
    return SimConfig.fast()


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[SimServer]:
    """An in-process simulator on a free loopback port, on the test's event loop."""
    async with SimServer(sim_config, host="127.0.0.1", port=0) as server:
        yield server


class SimProcess(SimHooks):
    """A ``bfsx sim`` subprocess: ``url``, ``ws_url``, ``port``, ``proc`` and the /_sim hooks."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(f"http://127.0.0.1:{port}")
        self.port = port
        self.ws_url = f"ws://127.0.0.1:{port}/json-rpc"
        self.proc = proc
        self.stderr_file: IO[bytes] | None = None

    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        if self.stderr_file is None:
            return ""
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def state(self) -> dict[str, Any]:
        """GET /_sim/state, blocking (handy outside a loop)."""
        import json

        with urllib.request.urlopen(f"{self.url}/_sim/state", timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def stop(self) -> int:
        """SIGTERM, then wait (kill after 10 s); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.stderr_file is not None:
            self.stderr_file.close()
            self.stderr_file = None
        return self.proc.returncode


def start_sim_process(*extra: str, seed: int = 1, timeout: float = 20.0) -> SimProcess:
    """Start ``python -m bfsx.cli sim`` on a free port and wait until it answers gethealth."""
    port = free_port()
    cmd = [sys.executable, "-m", "bfsx.cli", "sim", "--port", str(port), "--seed", str(seed), "--quiet", *extra]
    # stderr goes to a file, not a pipe nobody reads (a full pipe would stall the simulator)
    err_file = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the SimProcess, closed in stop()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
    sp = SimProcess(port, proc)
    sp.stderr_file = err_file
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err_file.seek(0)
            err = err_file.read().decode(errors="replace")
            raise RuntimeError(f"bfsx sim exited with {proc.returncode}: {err.strip()}")
        try:
            with urllib.request.urlopen(f"{sp.url}/v1/gethealth", timeout=1) as r:
                if r.status == 200:
                    return sp
        except OSError:
            pass
        if time.monotonic() > deadline:
            sp.stop()
            raise RuntimeError("bfsx sim did not answer gethealth in time")
        time.sleep(0.05)


@pytest.fixture
def sim_process() -> Iterator[SimProcess]:
    """A real ``bfsx sim --seed 1 --quiet`` process on a free port (terminated after the test)."""
    sp = start_sim_process()
    try:
        yield sp
    finally:
        sp.stop()


@pytest.fixture
def sim_hooks() -> Callable[[str], SimHooks]:
    """``sim_hooks(url)`` -> faults/state helper for any running simulator."""
    return SimHooks
