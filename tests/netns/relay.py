"""A bad network in userspace: a UDP and TCP forwarder that delays, jitters, duplicates and reorders.

The kernel of the test machines has no ``netem`` qdisc, so the router namespace of
tests/netns/conftest.py runs this script (``ip netns exec <router> python relay.py CONFIG``)
on the router's own addresses. Each listener forwards to one target, optionally from a chosen
source address (one per client host, so the simulator still sees one IP per host, as bitFlyer
would)::

    bot ns                     router ns (this relay)                  sim / pos ns
    client ──TCP/UDP──▶ listen 10.77.3.1:P  ──(delay, jitter, dup, reorder)──▶ target 10.77.1.2:P
                                            source 10.77.1.13

Loss is not done here: nftables in the router namespace drops packets (``numgen random``), so TCP
sees real retransmissions and UDP real gaps.

Impairments (the ``impair`` object of the config file; the file is read again on SIGHUP, so a
test changes them while traffic flows):

- ``delay_ms``: added to every TCP chunk and UDP datagram, each direction;
- ``jitter_ms``: ± uniform on top of the delay. TCP keeps its byte order (a chunk never overtakes
  the one before it, as a TCP stream over a jittery path), UDP does not;
- ``duplicate_pct``: a UDP datagram is sent twice (the copy 1 ms later);
- ``reorder_pct``: a UDP datagram is held back ``reorder_ms`` (default 250) more, so later ones
  overtake it.

Config (JSON)::

    {"tcp": [{"listen": ["10.77.3.1", 18000], "target": ["10.77.1.2", 8787], "source": "10.77.1.13"}],
     "udp": [{"listen": ["10.77.3.1", 51000], "target": ["10.77.2.2", 51000], "source": "10.77.2.13"}],
     "impair": {"delay_ms": 0, "jitter_ms": 0, "duplicate_pct": 0, "reorder_pct": 0}}

Prints ``READY`` once every listener is bound; counters (``forwarded``, ``duplicated``,
``reordered`` ...) go to stderr on SIGUSR1 and at exit, as one JSON line. Uses only the standard
library: it must run with any python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

CHUNK = 65536
QUEUE_CHUNKS = 256  # per direction of a TCP connection: reading pauses when this many wait


class Impair:
    """The impairments in force (replaced as a whole on SIGHUP)."""

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        c = cfg or {}
        self.delay = float(c.get("delay_ms", 0)) / 1000
        self.jitter = float(c.get("jitter_ms", 0)) / 1000
        self.duplicate = float(c.get("duplicate_pct", 0)) / 100
        self.reorder = float(c.get("reorder_pct", 0)) / 100
        self.reorder_extra = float(c.get("reorder_ms", 250)) / 1000

    def latency(self) -> float:
        if not self.jitter:
            return self.delay
        return max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))


class Relay:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.config = self._read()
        self.impair = Impair(self.config.get("impair"))
        self.counters: Counter[str] = Counter()
        self.servers: list[asyncio.AbstractServer] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.conns: set[asyncio.Task[None]] = set()

    def _read(self) -> dict[str, Any]:
        with open(self.config_path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data

    def reload(self) -> None:
        try:
            self.impair = Impair(self._read().get("impair"))
        except (OSError, ValueError) as e:
            print(f"relay: config not reloaded: {e}", file=sys.stderr, flush=True)
            return
        self.counters["reloads"] += 1
        print("RELOADED", flush=True)  # whoever sent the signal may wait for this line

    def dump(self) -> None:
        print(json.dumps({"relay": dict(self.counters)}), file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ TCP
    async def start_tcp(self, spec: dict[str, Any]) -> None:
        host, port = spec["listen"]
        target = (spec["target"][0], int(spec["target"][1]))
        source = spec.get("source")

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.conns.add(task)
            try:
                await self._tcp_session(reader, writer, target, source)
            finally:
                self.conns.discard(task)

        self.servers.append(await asyncio.start_server(on_client, host, int(port), reuse_address=True))

    async def _tcp_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           target: tuple[str, int], source: str | None) -> None:
        self.counters["tcp_accepted"] += 1
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(*target, local_addr=(source, 0) if source else None), 10)
        except (OSError, TimeoutError):
            self.counters["tcp_connect_failed"] += 1
            writer.close()
            return
        pumps = [asyncio.ensure_future(self._pipe(reader, up_w, "tcp_up")),
                 asyncio.ensure_future(self._pipe(up_r, writer, "tcp_down"))]
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if all(t.result() for t in done) and pending:
                await asyncio.wait(pending)  # a clean EOF (half close): the other way may still talk
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_w):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pumps, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> bool:
        """Copy reader → writer; each chunk is due at now + latency, never before the previous one.
        True after a clean EOF (forwarded), False when either side failed."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                self.counters[name + "_bytes"] += len(data)

        sender = asyncio.ensure_future(send())
        me = asyncio.current_task()

        def sender_done(t: asyncio.Task[None]) -> None:
            if me is not None and not t.cancelled() and t.exception() is not None:
                me.cancel()  # the far side failed: stop reading, or a full queue would block forever

        sender.add_done_callback(sender_done)
        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                last_due = max(last_due, time.monotonic() + self.impair.latency())
                await queue.put((last_due, data))
                if not data:  # EOF: forwarded after what came before it
                    break
            await sender
            return True
        except (OSError, asyncio.IncompleteReadError):
            return False
        except asyncio.CancelledError:
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                return False
            raise
        finally:
            sender.cancel()

    # ------------------------------------------------------------------ UDP
    async def start_udp(self, spec: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        host, port = spec["listen"]
        target = (spec["target"][0], int(spec["target"][1]))
        source = spec.get("source")
        relay = self
        upstreams: dict[Any, asyncio.DatagramTransport] = {}

        class Down(asyncio.DatagramProtocol):
            """Replies from the target to one client (sent back through the listener)."""

            def __init__(self, client: Any) -> None:
                self.client = client

            def datagram_received(self, data: bytes, addr: Any) -> None:
                relay._udp_send(listener, data, self.client, "udp_down")

        class Listener(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                up = upstreams.get(addr)
                if up is None:
                    # One upstream socket per client, so a reply finds its way back.
                    pending = loop.create_task(loop.create_datagram_endpoint(
                        lambda: Down(addr), local_addr=(source or "0.0.0.0", 0), remote_addr=target))

                    def opened(t: asyncio.Task[Any], data: bytes = data) -> None:
                        if t.cancelled() or t.exception() is not None:
                            relay.counters["udp_open_failed"] += 1
                            return
                        upstreams[addr] = t.result()[0]
                        relay.transports.append(upstreams[addr])
                        relay._udp_send(upstreams[addr], data, None, "udp_up")

                    pending.add_done_callback(opened)
                    return
                relay._udp_send(up, data, None, "udp_up")

            def error_received(self, exc: Exception) -> None:
                relay.counters["udp_errors"] += 1

        transport, _ = await loop.create_datagram_endpoint(Listener, local_addr=(host, int(port)))
        listener = transport
        self.transports.append(transport)

    def _udp_send(self, transport: Any, data: bytes, addr: Any, name: str) -> None:
        imp = self.impair
        loop = asyncio.get_running_loop()
        delay = imp.latency()
        if imp.reorder and random.random() < imp.reorder:
            delay += imp.reorder_extra
            self.counters[name + "_reordered"] += 1
        copies = 2 if imp.duplicate and random.random() < imp.duplicate else 1
        if copies == 2:
            self.counters[name + "_duplicated"] += 1
        for i in range(copies):
            loop.call_later(delay + i * 0.001, self._sendto, transport, data, addr, name)

    def _sendto(self, transport: Any, data: bytes, addr: Any, name: str) -> None:
        if transport.is_closing():
            return
        try:
            if addr is None:
                transport.sendto(data)
            else:
                transport.sendto(data, addr)
            self.counters[name] += 1
        except OSError:
            self.counters[name + "_errors"] += 1

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.dump)
        for spec in self.config.get("tcp", []):
            await self.start_tcp(spec)
        for spec in self.config.get("udp", []):
            await self.start_udp(spec)
        print("READY", flush=True)
        await stop.wait()
        for s in self.servers:
            s.close()
        for t in self.transports:
            t.close()
        for c in list(self.conns):
            c.cancel()
        self.dump()


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: relay.py CONFIG.json", file=sys.stderr)
        return 2
    asyncio.run(Relay(sys.argv[1]).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
