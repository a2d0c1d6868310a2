"""The bot side of the position server: UDP reports and the TCP budget query (docs/protocol.md).

``report()`` never blocks and never raises: it encodes one datagram and hands it to the kernel.
A heartbeat resends the latest state every ``report_interval`` seconds (fresh sequence number and
time), so a lost datagram or a restarted server is healed within one interval. The query task asks
the account-wide budget every ``query_interval`` seconds over one kept-alive TCP connection;
``account_budget`` is ``None`` whenever the last good reply is too old, so the runtime falls back to
its own budget and never trades on a fabricated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from bfsx.bitflyer.budget import BudgetSnapshot
from bfsx.errors import UserError
from bfsx.net import is_loopback
from bfsx.posserver import protocol as p

log = logging.getLogger("bfsx.posserver.client")

#: A budget reply older than this many query intervals is no longer honoured.
BUDGET_STALE_INTERVALS = 3.0


class PosServerUnavailable(Exception):
    """No valid reply from the position server (down, timeout, wrong secret, bad reply)."""


class _Datagrams(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the server is down: expected, the heartbeat retries.
        log.debug("position server UDP error: %s", exc)


class _Connection:
    """One TCP connection for request / reply, reopened on any failure."""

    def __init__(self, host: str, port: int, secret: bytes, sender: p.Sender, timeout: float) -> None:
        self.host, self.port, self.secret, self.sender, self.timeout = host, port, secret, sender, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.busy = False  # a request is on the wire: replies come in order, one at a time

    async def request(self, msg: p.Message) -> p.Message:
        if self.busy:
            # A concurrent caller gets a connection of its own rather than waiting on a lock.
            other = _Connection(self.host, self.port, self.secret, self.sender, self.timeout)
            try:
                return await other.request(msg)
            finally:
                await other.close()
        self.busy = True
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the inner call completes, and stop() would then wait forever.
            async with asyncio.timeout(self.timeout):
                return await self._request(msg)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, p.ProtocolError) as e:
            await self.close()
            raise PosServerUnavailable(f"{type(e).__name__}: {e}") from None
        finally:
            self.busy = False

    async def _request(self, msg: p.Message) -> p.Message:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        data = self.sender.encode(msg)
        seq = self.sender.last_seq
        self._writer.write(p.frame(data))
        await self._writer.drain()
        n = p.read_frame_length(await self._reader.readexactly(p.FRAME_PREFIX.size), p.MAX_REPLY)
        reply = p.decode(await self._reader.readexactly(n), self.secret, max_size=p.MAX_REPLY)
        if getattr(reply, "re", None) != seq:
            raise p.ProtocolError("replay", "reply does not answer our query")
        return reply

    async def close(self) -> None:
        w, self._writer, self._reader = self._writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


class PosServerClient:
    """A bot's link to the position server.

    ``report()`` on every position change; ``account_budget`` is the latest account-wide budget
    (``None`` when unknown); ``start()`` / ``stop()`` around the bot's life.
    """

    def __init__(
        self,
        host: str,
        port: int,
        secret: str | bytes,
        bot_id: str,
        market: str,
        *,
        report_interval: float = 10.0,
        query_interval: float = 10.0,
        timeout: float = 5.0,
        on_budget: Callable[[p.BudgetReply], None] | None = None,
    ) -> None:
        if not bot_id or len(bot_id) > p.MAX_ID_LEN or not bot_id.isprintable():
            raise UserError(f"bot_name {bot_id!r}: 1 to {p.MAX_ID_LEN} printable characters for the position server")
        self.host, self.port = host, int(port)
        self.bot_id, self.market = bot_id, market
        self.report_interval, self.query_interval, self.timeout = report_interval, query_interval, timeout
        self.on_budget = on_budget
        self._secret = secret.encode() if isinstance(secret, str) else secret
        if not self._secret and not is_loopback(host):
            log.warning("pos_server %s is not loopback and pos_server_secret is empty: the server will refuse", host)
        self._sender = p.Sender(self._secret)
        self._transport: asyncio.DatagramTransport | None = None
        self._latest: p.Report | None = None
        self._reply: p.BudgetReply | None = None
        self._reply_at = 0.0  # monotonic
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._conn = _Connection(host, self.port, self._secret, self._sender, timeout)
        self._pid = os.getpid()
        self.reports_sent = 0
        self.send_errors = 0
        self.last_report_seq = 0  # sequence number of the latest report sent (tools, tests)

    # ------------------------------------------------------------------------------ reports
    def report(
        self,
        position: float,
        base_position: float,
        profit: float,
        realized: float,
        budget: BudgetSnapshot | None = None,
    ) -> None:
        """Send the bot's absolute state now (one UDP datagram; never blocks, never raises)."""
        try:
            self._latest = p.Report(
                bot=self.bot_id, market=self.market, position=float(position), base_position=float(base_position),
                profit=float(profit), realized=float(realized), pid=self._pid, budget=budget,
            )
        except (TypeError, ValueError) as e:
            log.warning("position report not sent: %s", e)
            return
        self._send()

    def _send(self) -> None:
        if self._transport is None or self._latest is None:
            return
        try:
            self._transport.sendto(self._sender.encode(self._latest))
            self.reports_sent += 1
            self.last_report_seq = self._sender.last_seq
        except (OSError, ValueError) as e:  # ValueError: a non-finite number
            self.send_errors += 1
            log.debug("position report not sent: %s", e)

    # ------------------------------------------------------------------------------ budget
    @property
    def account_budget(self) -> p.BudgetReply | None:
        """The account-wide budget (``remaining``, ``advice``, ``budget``), or ``None`` when the
        server has not answered within the last few query intervals."""
        if self._reply is None:
            return None
        if time.monotonic() - self._reply_at > BUDGET_STALE_INTERVALS * self.query_interval + self.timeout:
            return None
        return self._reply

    async def query_budget(self) -> p.BudgetReply:
        """Ask the account-wide budget now; raises :class:`PosServerUnavailable`."""
        reply = await self._conn.request(p.BudgetQuery(bot=self.bot_id, market=self.market))
        if not isinstance(reply, p.BudgetReply):
            raise PosServerUnavailable(f"unexpected reply {type(reply).__name__}")
        self._reply, self._reply_at = reply, time.monotonic()
        if self.on_budget is not None:
            self.on_budget(reply)
        return reply

    async def status(self) -> dict[str, Any]:
        """The server's status (bots, markets, counters); raises :class:`PosServerUnavailable`."""
        return await query_status(self.host, self.port, self._secret, client_id=self.bot_id, timeout=self.timeout)

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the UDP endpoint, send the latest report (if any) and start the background tasks."""
        if self._transport is not None:
            return
        self._closing = False
        if self._latest is not None and self._latest.final:
            self._latest = dataclasses.replace(self._latest, final=False)  # running again
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        # "localhost" may resolve to ::1 first while the server listens on 127.0.0.1 only; a lost
        # datagram says nothing, so prefer IPv4 (a server bound to "localhost" listens on both).
        family, _, _, _, addr = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
        transport, _ = await loop.create_datagram_endpoint(
            _Datagrams, remote_addr=(str(addr[0]), int(addr[1])), family=family)
        self._transport = transport
        self._send()
        self._tasks = [
            loop.create_task(self._heartbeat(), name="posserver-heartbeat"),
            loop.create_task(self._query_loop(), name="posserver-query"),
        ]

    async def stop(self) -> None:
        """Send a last report, stop the tasks, close the sockets."""
        self._closing = True
        tasks, self._tasks = self._tasks, []
        while tasks:
            for t in tasks:
                t.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)
        if self._latest is not None:
            # The run's last report: the server lets a restarted boot with this id take over at once.
            self._latest = dataclasses.replace(self._latest, final=True)
        self._send()
        await self._conn.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.report_interval)
            self._send()

    async def _query_loop(self) -> None:
        warned = False
        while not self._closing:
            try:
                await self.query_budget()
                if warned:
                    log.info("position server budget replies back")
                warned = False
            except PosServerUnavailable as e:
                if not warned:
                    log.warning("position server budget query failed (%s); using this bot's own budget", e)
                warned = True
            await asyncio.sleep(self.query_interval)


async def query_status(
    host: str, port: int, secret: str | bytes, *, client_id: str = "status", timeout: float = 5.0
) -> dict[str, Any]:
    """One STATUS_QUERY on a fresh connection; raises :class:`PosServerUnavailable`."""
    key = secret.encode() if isinstance(secret, str) else secret
    conn = _Connection(host, port, key, p.Sender(key), timeout)
    try:
        reply = await conn.request(p.StatusQuery(client=client_id))
    finally:
        await conn.close()
    if not isinstance(reply, p.StatusReply):
        raise PosServerUnavailable(f"unexpected reply {type(reply).__name__}")
    return reply.status


async def send_ctl(
    host: str, port: int, secret: str | bytes, command: str, market: str = "", *, client_id: str = "ctl",
    timeout: float = 5.0,
) -> p.CtlReply:
    """One CTL_COMMAND (``bfsx ctl``) on a fresh connection; raises :class:`PosServerUnavailable`
    (down, timeout, wrong secret: the server drops a badly signed frame without a word)."""
    key = secret.encode() if isinstance(secret, str) else secret
    conn = _Connection(host, port, key, p.Sender(key), timeout)
    try:
        reply = await conn.request(p.CtlCommand(client=client_id, command=command, market=market))
    finally:
        await conn.close()
    if not isinstance(reply, p.CtlReply):
        raise PosServerUnavailable(f"unexpected reply {type(reply).__name__}")
    return reply
