"""Test utilities for a running simulator: its ``/_sim`` hooks and a bare wire-level client.

:class:`SimHooks` talks to ``POST /_sim/faults``, ``POST /_sim/account`` and ``GET /_sim/state``. :class:`WireClient` and
:class:`WireSocket` speak raw bitFlyer REST and JSON-RPC (signed with ``bfsx.bitflyer.auth``) so the
simulator's own tests check exact paths, headers and payloads without depending on the bot-side
client. Not for bots: they use ``bfsx.bitflyer.rest`` / ``realtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from bfsx.bitflyer import auth, endpoints
from bfsx.sim import paths


async def eventually(
    cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.02
) -> Any:
    """Poll ``cond`` (plain, or returning an awaitable) until it is truthy and return that value;
    raise AssertionError naming ``what`` after ``timeout`` seconds. Tests wait for conditions with
    generous timeouts instead of sleeping a fixed time and asserting on timing."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


class SimHooks:
    """``/_sim/faults``, ``/_sim/account`` and ``/_sim/state`` of the simulator at ``url`` (``http://host:port``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """POST /_sim/faults with any subset of the switches; returns the faults in force."""
        async with aiohttp.ClientSession() as s, s.post(f"{self.url}{paths.FAULTS}", json=faults) as r:
            data: dict[str, Any] = await r.json()
            if r.status != 200:
                raise ValueError(data.get("error", f"HTTP {r.status}"))
            return data

    async def set_account(self, api_key: str, collateral_jpy: float) -> dict[str, Any]:
        """POST /_sim/account: set the account's CFD collateral to ``collateral_jpy`` (a deposit or a
        withdrawal; a withdrawal may loss-cut it at once). Returns the reply; raises ``ValueError``
        with the simulator's one-line error (bad value, unknown key)."""
        body = {"api_key": api_key, "collateral_jpy": collateral_jpy}
        async with aiohttp.ClientSession() as s, s.post(f"{self.url}{paths.ACCOUNT}", json=body) as r:
            data: dict[str, Any] = await r.json()
            if r.status != 200:
                raise ValueError(data.get("error", f"HTTP {r.status}"))
            return data

    async def fetch_state(self) -> dict[str, Any]:
        """GET /_sim/state."""
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}{paths.STATE}") as r:
            data: dict[str, Any] = await r.json()
            return data


@dataclass
class WireReply:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def data(self) -> Any:
        return json.loads(self.text) if self.text else None


class WireClient:
    """Signed REST calls exactly as a third-party client sends them (for simulator tests)."""

    def __init__(self, url: str, api_key: str | None = None, secret: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WireClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        sign: bool | None = None,
        secret: str | None = None,
    ) -> WireReply:
        """One request; private paths (``/v1/me/``) are signed unless ``sign=False``."""
        assert self._session is not None, "use `async with WireClient(...)`"
        target = path + ("?" + urlencode(query) if query else "")
        raw = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if (sign if sign is not None else path.startswith(endpoints.PRIVATE_PREFIX)) and self.api_key:
            headers.update(auth.rest_headers(self.api_key, secret or self.secret or "", method, target, raw))
        async with self._session.request(method, self.url + target, data=raw or None, headers=headers) as r:
            return WireReply(r.status, r.headers, await r.text())

    async def get(self, path: str, **query: Any) -> WireReply:
        return await self.call("GET", path, {k: v for k, v in query.items() if v is not None} or None)

    async def post(self, path: str, body: Mapping[str, Any]) -> WireReply:
        return await self.call("POST", path, body=body)

    async def order(self, product: str, side: str, size: float, price: float | None = None, **opts: Any) -> str:
        """sendchildorder; returns the acceptance id or raises ``AssertionError`` with the error body."""
        body: dict[str, Any] = {
            "product_code": product,
            "child_order_type": "MARKET" if price is None else "LIMIT",
            "side": side,
            "size": size,
            **opts,
        }
        if price is not None:
            body["price"] = price
        r = await self.post(endpoints.SEND_CHILD_ORDER, body)
        assert r.status == 200, f"sendchildorder: HTTP {r.status} {r.text}"
        acceptance: str = r.data["child_order_acceptance_id"]
        return acceptance


class WireSocket:
    """A raw JSON-RPC realtime connection that records every channel message (bounded)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._replies: dict[Any, asyncio.Future[Any]] = {}
        self.messages: deque[tuple[str, Any]] = deque(maxlen=50_000)
        self.raw: deque[Any] = deque(maxlen=1_000)
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, ws_url: str) -> WireSocket:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(ws_url, autoping=True, autoclose=False)
        except BaseException:
            await session.close()
            raise
        return cls(ws, session)

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(msg.extra or "")
                    await self.ws.close()
                    break
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = orjson.loads(msg.data)
                self.raw.append(data)
                items = data if isinstance(data, list) else [data]
                for item in items:
                    if isinstance(item, dict) and item.get("method") == "channelMessage":
                        p = item["params"]
                        self.messages.append((p["channel"], p["message"]))
                    elif isinstance(item, dict) and item.get("id") in self._replies:
                        fut = self._replies.pop(item["id"])
                        if not fut.done():
                            fut.set_result(item)
                self._changed.set()
        finally:
            self.close_code = self.ws.close_code
            self._changed.set()

    async def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Send one request and wait for its reply (the whole reply object)."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}, "id": rid}))
        return await asyncio.wait_for(fut, timeout)

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def subscribe(self, channel: str) -> Any:
        return await self.call("subscribe", {"channel": channel})

    async def auth(self, api_key: str, secret: str) -> Any:
        return await self.call("auth", dict(auth.ws_auth_params(api_key, secret)))

    def channel(self, name: str) -> list[Any]:
        return [m for ch, m in self.messages if ch == name]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll ``predicate`` on every incoming frame until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0 or (self._reader.done() and not got):
                raise TimeoutError("condition not met on the realtime socket")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def events(self, acceptance_id: str | None = None) -> list[dict[str, Any]]:
        """All child_order_events received (optionally for one order), flattened."""
        out = [e for msg in self.channel("child_order_events") for e in msg]
        if acceptance_id is not None:
            out = [e for e in out if e["child_order_acceptance_id"] == acceptance_id]
        return out

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()

    async def __aenter__(self) -> WireSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
