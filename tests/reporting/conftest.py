"""Fixtures for the reporting tests: a real InfluxDB 1.x server and a local Discord stand-in."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import BodyPartReader, web

from alert_hook import serve_webhook
from bfsx.net import free_port
from real_components import missing


class InfluxServer:
    """``influxd`` on loopback with its own temporary meta/data/wal dirs; stoppable and restartable."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.rpc_port = free_port()
        self.config = root / "influxdb.conf"
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{root / "meta"}"

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = (self.root / "influxd.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"influxd exited with {self.proc.returncode}; see {self.root / 'influxd.log'}"
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {timeout}s")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as resp:
                return bool(resp.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def pause(self) -> None:
        """SIGSTOP: the socket still accepts connections but nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    """A running InfluxDB 1.x on a free loopback port; killed after the test."""
    binary = shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)
    if binary is None:
        missing(
            "influxd (Debian package 'influxdb', InfluxDB 1.x) is not installed; `make influxdb` installs it"
        )
    server = InfluxServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- Discord stand-in


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class WebhookRequest:
    path: str
    at: float  # monotonic, on arrival
    parts: list[Part]

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.part("payload_json").data)
        return value

    @property
    def files(self) -> list[Part]:
        return [p for p in self.parts if p.name.startswith("files[")]


@dataclass
class FakeDiscord:
    """A local aiohttp server answering like Discord's webhook endpoint.

    ``responses`` is consumed one per request: ``(status, json body or None, headers)``; when it is
    empty the answer is 204. ``hold`` (when set) makes the handler wait until it is released.
    """

    base: str = ""
    requests: list[WebhookRequest] = field(default_factory=list)
    responses: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, webhook_id: str = "123456789", token: str = "TOPSECRET-token_abc") -> str:
        return f"{self.base}/api/webhooks/{webhook_id}/{token}"

    async def wait_requests(self, n: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self.arrived.clear()
                await self.arrived.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        parts: list[Part] = []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            assert isinstance(part, BodyPartReader), "Discord takes a flat multipart/form-data body"
            data = await part.read()
            parts.append(
                Part(part.name or "", part.filename, part.headers.get("Content-Type", ""), bytes(data))
            )
        self.requests.append(WebhookRequest(request.path, at, parts))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.responses:
            status, body, headers = self.responses.pop(0)
            if body is None:
                return web.Response(status=status, headers=headers)
            return web.Response(
                status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
            )
        return web.Response(status=204)


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with serve_webhook(FakeDiscord()) as fake:
        yield fake
