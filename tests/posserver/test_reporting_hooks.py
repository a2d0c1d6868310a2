"""The server's reporting hooks: charts to a folder, Discord posts (a local stand-in for the
webhook), InfluxDB points (a real ``influxd`` when installed), live reload of the chart settings."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bfsx.posserver.client import PosServerClient
from bfsx.posserver.server import PosServer
from real_components import missing

SECRET = "pos-secret"
PNG = b"\x89PNG\r\n\x1a\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """Records multipart posts as a Discord webhook would receive them."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        files: list[tuple[str, bytes]] = []
        payload: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":  # type: ignore[union-attr]
                payload = orjson.loads(data)
            else:
                files.append((part.filename or "", bytes(data)))  # type: ignore[union-attr]
        self.posts.append({"payload": payload, "files": files})
        return web.Response(status=204)


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/api/webhooks/{id}/{token}", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    hook.url = f"http://127.0.0.1:{port}/api/webhooks/42/tok-secret"
    yield hook
    await runner.cleanup()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("influxd")
    if binary is None:
        missing("influxd (Debian package 'influxdb') is not installed; `make influxdb` installs it")
    port, rpc = _port(), _port()
    conf = tmp_path / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n[meta]\n  dir = "{tmp_path}/meta"\n'
        f'[data]\n  dir = "{tmp_path}/data"\n  wal-dir = "{tmp_path}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n'
        '[logging]\n  level = "warn"\n')
    proc = subprocess.Popen([binary, "-config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("influxd did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(15)


def _influx_count(port: int) -> int:
    q = "SELECT count(position) FROM bfsx_market"
    url = f"http://127.0.0.1:{port}/query?db=bfsx&q={urllib.request.quote(q)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        series = orjson.loads(r.read())["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def test_charts_discord_and_influx(server_factory: Any, fast_config: Any, webhook: Webhook, influxd: int,
                                         tmp_path: Path, wait_for: Any) -> None:
    cfg = fast_config(pos_server_discord=webhook.url, pos_server_discord_interval=0.02,
                      pos_server_discord_send_text=True, pos_server_discord_influxdb=["127.0.0.1", influxd])
    charts = tmp_path / "charts"
    s: PosServer = await server_factory(cfg, chart_dir=charts, chart_interval=0.5)
    c = PosServerClient("127.0.0.1", s.port, SECRET, "bot-r", "FX_BTC_JPY", report_interval=0.2)
    await c.start()
    c.report(0.01, 0.0, 1234.0, 1000.0, None)
    await wait_for(lambda: s.checks >= 3, what="checks")
    await wait_for(lambda: webhook.posts, what="a Discord post")
    post = webhook.posts[0]
    assert post["files"] and all(data.startswith(PNG) for _, data in post["files"])
    assert "FX_BTC_JPY.png" in [name for name, _ in post["files"]]
    assert "bot-r" in post["payload"]["content"]  # pos_server_discord_send_text
    await wait_for(lambda: (charts / "FX_BTC_JPY.png").exists(), what="chart file")
    assert (charts / "FX_BTC_JPY.png").read_bytes().startswith(PNG)
    await wait_for(lambda: _influx_count(influxd) >= 2, what="InfluxDB points")
    # Live reload of the chart settings: the bitFlyer-style total PnL chart appears.
    s.config = s.config.model_copy(update={"pos_server_bitflyer_color": True})
    s.reporter.update(s._report_settings())
    await wait_for(lambda: (charts / "pnl_total.png").exists(), what="bitFlyer-style chart")
    await c.stop()


async def test_unreachable_influx_and_webhook_never_block(server_factory: Any, fast_config: Any,
                                                          wait_for: Any) -> None:
    dead = _port()
    cfg = fast_config(pos_server_discord=f"http://127.0.0.1:{dead}/api/webhooks/1/x", pos_server_discord_interval=0.02,
                      pos_server_discord_influxdb=["127.0.0.1", dead])
    s: PosServer = await server_factory(cfg)
    c = PosServerClient("127.0.0.1", s.port, SECRET, "bot-q", "FX_BTC_JPY", report_interval=0.2)
    await c.start()
    c.report(0.01, 0.0, 0.0, 0.0, None)
    await wait_for(lambda: s.influx.connected is False, what="InfluxDB seen unreachable")
    await wait_for(lambda: s.reporter._inflight is not None, what="a Discord post under way (retrying)")
    checks = s.checks
    await wait_for(lambda: s.checks >= checks + 3, what="checks go on")
    assert (await c.status())["bots"][0]["id"] == "bot-q"  # the loop still answers
    assert s.reporter.posts_ok == 0 and s.influx.buffered > 0  # points kept for later, bounded
    await c.stop()


def _influx_account(port: int) -> list[Any]:
    q = "SELECT last(keep_rate), last(collateral), last(pnl_gap) FROM bfsx_account"
    url = f"http://127.0.0.1:{port}/query?db=bfsx&q={urllib.request.quote(q)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        series = orjson.loads(r.read())["results"][0].get("series")
    return list(series[0]["values"][0][1:]) if series else []


async def test_keep_rate_in_influx_the_account_chart_and_the_console(
    sim: Any, server_factory: Any, fast_config: Any, webhook: Webhook, influxd: int, tmp_path: Path, wait_for: Any
) -> None:
    from rich.console import Console as RichConsole

    from bfsx.bitflyer.rest import RestClient
    from bfsx.posserver.console import Console

    cfg = fast_config(endpoint=sim.url, pos_server_discord=webhook.url, pos_server_discord_interval=60,
                      pos_server_discord_influxdb=["127.0.0.1", influxd], pos_server_margin_interval=0.1)
    charts = tmp_path / "charts"
    s: PosServer = await server_factory(cfg, chart_dir=charts, chart_interval=0.3)
    async with RestClient(sim.url, "demo-key-1", "demo-secret-1") as rest:
        await rest.send_child_order("FX_BTC_JPY", "BUY", 0.2)
        await wait_for(lambda: s.margin.keep_rate is not None, what="a keep rate")
    await wait_for(lambda: len(_influx_account(influxd)) == 3 and _influx_account(influxd)[0] is not None,
                   what="bfsx_account points")
    keep, collateral, _gap = _influx_account(influxd)
    assert keep > 1 and collateral > 0
    await wait_for(lambda: (charts / "account.png").exists(), what="the account chart")
    saved = await s.history.account_samples(0)  # what a restart draws the account chart from
    assert saved and any(a.keep_rate is not None and a.keep_rate > 1 for a in saved)
    assert (charts / "account.png").read_bytes().startswith(PNG)
    out = RichConsole(record=True, width=200)
    out.print(Console(s, live=True).render())
    text = out.export_text()
    assert f"margin: keep rate {s.margin.keep_rate:.1%}" in text and "collateral" in text and "Σ bots" in text
