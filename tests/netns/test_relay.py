"""The relay of the multi-host test (tests/netns/relay.py) does what it says, on loopback (no root):
UDP delayed, duplicated and reordered; TCP delayed and jittered with its byte order kept; the
impairments changed live by SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bfsx.net import free_port

HERE = Path(__file__).resolve().parent


class Relay:
    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        self.path, self.spec = path, spec
        path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "relay.py"), str(path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"READY"

    def impair(self, **kw: float) -> None:
        self.spec["impair"] = kw
        self.path.write_text(json.dumps(self.spec))
        self.proc.send_signal(signal.SIGHUP)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"RELOADED"  # in force from now on


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("udp_in", "tcp_in")}


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Relay] = []

    def make(spec: dict[str, Any]) -> Relay:
        r = Relay(tmp_path / "relay.json", spec)
        made.append(r)
        return r

    yield make
    for r in made:
        r.proc.terminate()
        r.proc.wait(10)


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((time.monotonic(), data))

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        """Until ``n`` datagrams came (a loaded machine may be slow), then a little longer: one
        more than expected would show."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.15)


async def test_udp_delayed_duplicated_reordered(ports: dict[str, int], relay_factory: Any) -> None:
    loop = asyncio.get_running_loop()
    sink_t, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    target = sink_t.get_extra_info("sockname")[1]
    relay = relay_factory({"udp": [{"listen": ["127.0.0.1", ports["udp_in"]], "target": ["127.0.0.1", target],
                                    "source": "127.0.0.1"}], "impair": {"delay_ms": 80}})
    send_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                    remote_addr=("127.0.0.1", ports["udp_in"]))
    try:
        sent = time.monotonic()
        send_t.sendto(b"first")
        await sink.wait(1)
        assert [d for _, d in sink.got] == [b"first"]
        assert sink.got[0][0] - sent >= 0.075  # the delay

        relay.impair(duplicate_pct=100)
        sink.got.clear()
        for i in range(5):
            send_t.sendto(b"d%d" % i)
        await sink.wait(10)
        assert sorted(d for _, d in sink.got) == sorted([b"d%d" % i for i in range(5)] * 2)

        relay.impair(reorder_pct=50, reorder_ms=100)
        sink.got.clear()
        for i in range(40):
            send_t.sendto(b"%03d" % i)
            await asyncio.sleep(0.005)
        await sink.wait(40)
        order = [int(d) for _, d in sink.got]
        assert sorted(order) == list(range(40))  # nothing lost or added
        assert order != sorted(order)  # overtaken (the chance of none of 40 is 2^-40)
    finally:
        send_t.close()
        sink_t.close()


async def test_tcp_jitter_keeps_the_byte_order(ports: dict[str, int], relay_factory: Any) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    relay_factory({"tcp": [{"listen": ["127.0.0.1", ports["tcp_in"]], "target": ["127.0.0.1", target]}],
                   "impair": {"delay_ms": 20, "jitter_ms": 20}})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcp_in"])
        payload = b"".join(b"%05d," % i for i in range(300))
        t0 = time.monotonic()
        for i in range(0, len(payload), 60):
            writer.write(payload[i:i + 60])
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(-1), 10)
        assert got == payload  # every byte, in order, through a jittery path both ways
        assert time.monotonic() - t0 >= 0.04
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
