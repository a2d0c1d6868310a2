"""A local stand-in for a Discord webhook that takes alerts (JSON posts) on 127.0.0.1.

``status`` answers every post (204 by default; 500 for a failing webhook); ``hold`` (when set)
keeps each request waiting until it is released, as a webhook that hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web


@dataclass
class AlertHook:
    base: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    status: int = 204
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"{self.base}/api/webhooks/42/SECRET-alert-token"

    def texts(self, kind: str | None = None) -> list[str]:
        """Contents posted (and answered 2xx), of ``kind`` only when given."""
        out = [str(p.get("content", "")) for p in self.posts]
        return [t for t in out if kind is None or f"`{kind}`" in t]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        body = orjson.loads(await request.read())
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.status < 300:
            self.posts.append(body)
        return web.Response(status=self.status)


class Webhook(Protocol):
    base: str
    hold: asyncio.Event | None

    async def handle(self, request: web.Request) -> web.StreamResponse: ...


W = TypeVar("W", bound=Webhook)


@asynccontextmanager
async def serve_webhook(hook: W) -> AsyncIterator[W]:
    """``hook.handle`` as Discord's webhook route on a free loopback port (``hook.base`` set);
    a held request is released before the server stops."""
    app = web.Application()
    app.router.add_post("/api/webhooks/{id}/{token}", hook.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hook
    finally:
        if hook.hold is not None:
            hook.hold.set()
        await runner.cleanup()


@asynccontextmanager
async def alert_hook() -> AsyncIterator[AlertHook]:
    async with serve_webhook(AlertHook()) as hook:
        yield hook
