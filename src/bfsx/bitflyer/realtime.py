"""Realtime client: JSON-RPC 2.0 over WebSocket (docs/bitflyer.md#realtime-channels).

One socket carries every channel. On each (re)connect the client authenticates (when it has a
key), subscribes every registered channel in one batch, waits for the replies and only then tells
the upper layers (``on_connect(True)`` on a reconnect) so their REST resync cannot miss anything
sent after the subscription. Any close — 1006, 1012 maintenance, an error, a silent channel —
leads to a reconnect after a jittered exponential back-off.

The read loop hands each frame to :meth:`RealtimeClient.dispatch_frame`: ``orjson.loads``, one
``method`` check, one dict lookup by channel, one call. Handlers run synchronously in the read loop
(keep them short; they see messages in wire order); a failing handler is logged and counted, and
the loop goes on. Server pings are answered by aiohttp (``autoping``); the client sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from bfsx.aio import backoff_delay
from bfsx.bitflyer import auth, channels

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]
ConnectCallback = Callable[[bool], Awaitable[None] | None]
DisconnectCallback = Callable[[int | None], None]
SilenceCallback = Callable[[str], None]

_monotonic = time.monotonic
_loads = orjson.loads
SILENCE_CLOSE_CODE = 4000  # private-use close code: we hang up on a silent channel
_LOG_FIRST_ERRORS = 10  # then every 1000th, so a handler failing on every frame cannot flood the log


class RealtimeError(Exception):
    """A JSON-RPC call got an error reply or none."""


def _fan_out(first: Handler, second: Handler) -> Handler:
    def both(message: Any) -> None:
        try:
            first(message)
        finally:
            second(message)

    return both


class RealtimeClient:
    """Auto-reconnecting bitFlyer realtime client.

    ``silence_timeout``: ``{channel: seconds}``; a subscribed channel with no message for that long
    fires the ``on_silence`` callbacks and forces a reconnect (the "server accepts but sends
    nothing" case). ``backoff``: (first, max) reconnect delay in seconds; doubled per failed
    attempt, with jitter, reset once a connection has lived longer than ``max``.

    Counters: ``connects``, ``reconnects`` (successful connections after the first), ``frames``
    (channel messages), ``handler_errors``, ``silences``.
    """

    def __init__(
        self,
        ws_url: str,
        api_key: str | None = None,
        secret: str | None = None,
        *,
        silence_timeout: dict[str, float] | None = None,
        backoff: tuple[float, float] = (0.5, 10.0),
        session: aiohttp.ClientSession | None = None,
        connect_timeout: float = 10.0,
        reply_timeout: float = 10.0,
        max_msg_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.ws_url = ws_url
        self._key = api_key
        self._secret = secret
        self._watch: dict[str, float] = dict(silence_timeout or {})
        self.backoff_base, self.backoff_max = backoff
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.max_msg_size = max_msg_size
        self._session = session
        self._own_session = session is None
        self._handlers: dict[str, Handler] = {}
        self._connect_cbs: list[ConnectCallback] = []
        self._disconnect_cbs: list[DisconnectCallback] = []
        self._silence_cbs: list[SilenceCallback] = []
        self._last: dict[str, float] = {}  # watched channel -> when the watchdog last saw it speak
        self._heard: set[str] = set()  # watched channels that spoke since the last watchdog tick
        self._live: set[str] = set()  # channels requested on the current connection
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.connected = asyncio.Event()
        self.authenticated = False
        self.auth_error: str | None = None
        self.last_close_code: int | None = None
        self.connects = 0
        self.reconnects = 0
        self.frames = 0
        self.handler_errors = 0
        #: Frames that were not JSON or not a well-formed channelMessage (dropped; logged sparingly).
        self.malformed_frames = 0
        self.silences = 0

    # ---- registration ----------------------------------------------------------------------

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Register ``handler`` for ``channel`` (several handlers per channel are called in
        order). Before :meth:`start`, or at any time: when connected it is subscribed at once."""
        existing = self._handlers.get(channel)
        self._handlers[channel] = handler if existing is None else _fan_out(existing, handler)
        ws = self._ws
        if existing is None and ws is not None and not ws.closed and self.connected.is_set():
            self._spawn(self._subscribe(ws, [channel]))

    def on_connect(self, cb: ConnectCallback) -> None:
        """``cb(reconnected)`` after every successful (re)subscription; ``reconnected`` is True on
        every connection after the first: the upper layers must resync what they may have missed."""
        self._connect_cbs.append(cb)

    def on_disconnect(self, cb: DisconnectCallback) -> None:
        """``cb(close_code)`` each time a connection ends other than by :meth:`close` (``None`` when
        the socket had no close code), before the back-off: a recorder marks the gap from here."""
        self._disconnect_cbs.append(cb)

    def on_silence(self, cb: SilenceCallback) -> None:
        """``cb(channel)`` when a watched channel has been silent for its timeout."""
        self._silence_cbs.append(cb)

    @property
    def channels(self) -> list[str]:
        return list(self._handlers)

    # ---- hot path --------------------------------------------------------------------------

    def dispatch_frame(self, data: str | bytes) -> None:
        """Decode one text frame and hand a channel message to its handler; anything else is a
        JSON-RPC reply (or a batch of them)."""
        try:
            msg = _loads(data)
        except orjson.JSONDecodeError:
            self._malformed(f"undecodable frame ({len(data)} bytes)")
            return
        if type(msg) is dict:
            if msg.get("method") == "channelMessage":
                try:
                    params = msg["params"]
                    channel = params["channel"]
                    message = params["message"]
                except (KeyError, TypeError):
                    self._malformed("malformed channelMessage")
                    return
                if type(channel) is not str:  # a list or dict would raise in the lookups below
                    self._malformed("malformed channelMessage")
                    return
                self.frames += 1
                if channel in self._watch:
                    self._heard.add(channel)  # cheaper than a clock read per frame
                handler = self._handlers.get(channel)
                if handler is not None:
                    try:
                        handler(message)
                    except Exception:
                        self._handler_failed(channel)
                return
            self._reply(msg)
        elif type(msg) is list:
            for item in msg:
                if type(item) is dict:
                    self._reply(item)

    def _malformed(self, what: str) -> None:
        # Counted always, logged the first few times and then every 1000th: a peer sending garbage
        # must not flood the log (nor cost a log write per frame).
        self.malformed_frames += 1
        n = self.malformed_frames
        if n <= _LOG_FIRST_ERRORS or n % 1000 == 0:
            log.warning("realtime: %s (%d malformed frames so far)", what, n)

    def _handler_failed(self, channel: str) -> None:
        self.handler_errors += 1
        n = self.handler_errors
        if n <= _LOG_FIRST_ERRORS or n % 1000 == 0:
            log.exception("realtime handler for %s failed (%d errors so far)", channel, n)

    def _reply(self, msg: dict[str, Any]) -> None:
        key = msg.get("id")
        fut = self._pending.pop(key, None) if type(key) is int else None
        if fut is not None:
            if not fut.done():
                fut.set_result(msg)
        elif "error" in msg:
            log.warning("realtime error reply: %s", msg.get("error"))

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background and return at once; ``await client.connected.wait()``
        to wait for the first subscription."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="realtime")

    async def close(self) -> None:
        """Close the socket and stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in list(self._background):
            t.cancel()
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()
        self.connected.clear()

    async def reconnect(self) -> None:
        """Drop the current connection; the run loop reconnects (used by the watchdog, and by
        callers that know the feed went bad)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close(code=SILENCE_CLOSE_CODE, message=b"reconnect")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max)  # jittered: no reconnect storms

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            started = _monotonic()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    ws = await self._http().ws_connect(
                        self.ws_url,
                        autoping=True,  # answer the server's pings; a client that does not is dropped
                        heartbeat=None,
                        max_msg_size=self.max_msg_size,
                        decode_text=False,  # orjson decodes bytes directly: skip a str copy
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                log.warning("realtime connect to %s failed: %s", self.ws_url, e or type(e).__name__)
            else:
                try:
                    await self._serve(ws)
                except Exception:  # a bug must not end the feed: log it and reconnect
                    log.exception("realtime connection loop failed")
            if self._closing:
                break
            if _monotonic() - started > self.backoff_max:
                attempt = 0
            delay = self._delay(attempt)
            attempt += 1
            log.info("realtime reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        watchdog: asyncio.Task[None] | None = None
        try:
            await self._handshake(ws)
            reconnected = self.connects > 0
            self.connects += 1
            if reconnected:
                self.reconnects += 1
            self.connected.set()
            log.info("realtime %s (%d channels)", "reconnected" if reconnected else "connected", len(self._handlers))
            if self._watch:
                watchdog = asyncio.create_task(self._watchdog(ws))
            for cb in list(self._connect_cbs):
                try:
                    res = cb(reconnected)
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("realtime on_connect callback failed")
            await reader
        except (RealtimeError, ConnectionError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("realtime connection failed: %s", e or type(e).__name__)
        finally:
            self.connected.clear()
            self.authenticated = False
            for t in (watchdog, reader):
                if t is not None and not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
            with contextlib.suppress(Exception):
                await ws.close()
            self._fail_pending()
            self.last_close_code = ws.close_code
            self._ws = None
            if not self._closing:
                log.warning("realtime closed (code %s)", ws.close_code)
                for dcb in list(self._disconnect_cbs):
                    try:
                        dcb(ws.close_code)
                    except Exception:
                        log.exception("realtime on_disconnect callback failed")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        try:
            async for m in ws:
                if m.type is aiohttp.WSMsgType.TEXT or m.type is aiohttp.WSMsgType.BINARY:
                    self.dispatch_frame(m.data)
                elif m.type is aiohttp.WSMsgType.ERROR:
                    log.warning("realtime socket error: %s", ws.exception())
                    break
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("realtime connection closed"))

    # ---- JSON-RPC --------------------------------------------------------------------------

    def _request(self, method: str, params: Any) -> tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]:
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        return {"jsonrpc": "2.0", "method": method, "params": params, "id": self._next_id}, fut

    async def _await(self, futs: list[asyncio.Future[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self.reply_timeout):
                return list(await asyncio.gather(*futs))
        except TimeoutError as e:
            raise RealtimeError("no reply to a JSON-RPC request") from e

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        if self._key and self._secret:
            req, fut = self._request("auth", auth.ws_auth_params(self._key, self._secret))
            await ws.send_str(orjson.dumps(req).decode())
            (reply,) = await self._await([fut])
            if reply.get("result") is True:
                self.authenticated, self.auth_error = True, None
            else:
                err = reply.get("error")
                self.auth_error = str(err.get("message") if isinstance(err, dict) else err or reply.get("result"))
                # Not fatal: public channels still work; private ones are skipped below.
                log.error("realtime auth failed: %s (check api key / secret)", self.auth_error)
        self._live = set()
        await self._subscribe(ws, list(self._handlers))
        # Channels registered while the batch was in flight.
        missing = [c for c in self._handlers if c not in self._live]
        if missing:
            await self._subscribe(ws, missing)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse[bool], chans: list[str]) -> None:
        self._live.update(chans)
        wanted = [c for c in chans if self.authenticated or c not in channels.PRIVATE_CHANNELS]
        skipped = [c for c in chans if c not in wanted]
        if skipped:
            log.error("realtime: not subscribing %s: not authenticated", ", ".join(skipped))
        if not wanted:
            return
        reqs, futs = [], []
        for c in wanted:
            req, fut = self._request("subscribe", {"channel": c})
            reqs.append(req)
            futs.append(fut)
        # One batch frame: the server processes it in order and answers with one array.
        await ws.send_str(orjson.dumps(reqs).decode())
        now = _monotonic()
        for c in wanted:
            if c in self._watch:
                self._last[c] = now  # the silence clock starts at the subscription
                self._heard.discard(c)
        for c, reply in zip(wanted, await self._await(futs), strict=True):
            err = reply.get("error")
            if err is not None and not (isinstance(err, dict) and err.get("code") == channels.ALREADY_SUBSCRIBED[0]):
                log.error("realtime subscribe %s failed: %s", c, err)

    # ---- watchdog --------------------------------------------------------------------------

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        interval = max(0.02, min(self._watch.values()) / 4)
        while not ws.closed:
            await asyncio.sleep(interval)
            now = _monotonic()
            heard, last = self._heard, self._last
            for ch in heard:
                last[ch] = now
            heard.clear()
            for ch, limit in self._watch.items():
                if ch not in self._handlers:
                    continue
                silent = now - self._last.get(ch, now)
                if silent > limit:
                    self.silences += 1
                    log.warning("realtime channel %s silent for %.1fs: reconnecting", ch, silent)
                    for cb in list(self._silence_cbs):
                        try:
                            cb(ch)
                        except Exception:
                            log.exception("realtime on_silence callback failed")
                    await ws.close(code=SILENCE_CLOSE_CODE, message=b"silent channel")
                    return
