"""The simulator's aiohttp server: bitFlyer REST under ``/v1``, realtime JSON-RPC at ``/json-rpc``,
test hooks under ``/_sim`` (docs/simulator.md#test-hooks-no-signature-needed), and the ``bfsx sim``
command (:func:`run_sim`).

One event loop owns the engine; REST handlers and timers call it synchronously. Frames are encoded
once (orjson) and queued to each subscribed socket; a socket whose bounded queue fills is dropped
rather than letting memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from multidict import MultiMapping

from bfsx import aio
from bfsx.bitflyer import auth, channels, endpoints, errors, limits
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.products import PRODUCTS, REGIONS
from bfsx.errors import UserError
from bfsx.sim import accounts as accounts_mod
from bfsx.sim import faults as faults_mod
from bfsx.sim import paths, views
from bfsx.sim.config import SimConfig, load_sim_config
from bfsx.sim.engine import Engine
from bfsx.sim.faults import Faults
from bfsx.sim.flow import SyntheticFlow
from bfsx.sim.live import LiveView
from bfsx.sim.model import SAT, Account, EngineError, Order, btc
from bfsx.sim.ratelimit import RateLimiter
from bfsx.sim.replay import ReplayFeed, check_paths, check_speed
from bfsx.sim.upstream import UpstreamFeed, UpstreamMarket, check_upstream_url

JSON = "application/json"
_MAX_COUNT = 1000

#: The private paths the simulator serves, as ``getpermissions`` lists them.
PRIVATE_PATHS = (
    endpoints.GET_PERMISSIONS,
    endpoints.GET_BALANCE,
    endpoints.GET_COLLATERAL,
    endpoints.GET_COLLATERAL_ACCOUNTS,
    endpoints.GET_COLLATERAL_HISTORY,
    endpoints.SEND_CHILD_ORDER,
    endpoints.CANCEL_CHILD_ORDER,
    endpoints.CANCEL_ALL_CHILD_ORDERS,
    endpoints.GET_CHILD_ORDERS,
    endpoints.GET_MY_EXECUTIONS,
    endpoints.GET_POSITIONS,
    endpoints.GET_TRADING_COMMISSION,
)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def _rpc_error(rid: Any, err: tuple[int, str], data: Any = None) -> dict[str, Any]:
    e: dict[str, Any] = {"code": err[0], "message": err[1]}
    if data is not None:
        e["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": e}


class _Client:
    """One realtime connection: its subscriptions, its account after ``auth``, its outgoing queue."""

    __slots__ = ("account", "channels", "closed", "queue", "task", "ws")

    def __init__(self, ws: web.WebSocketResponse, maxsize: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize)
        self.channels: set[str] = set()
        self.account: Account | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> bool:
        """Queue a frame; False when the socket is too slow (the caller drops it)."""
        if self.closed:
            return True
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True


Handler = Callable[[web.Request, MultiMapping[str], bytes, "Account | None"], Any]


class SimServer:
    """The exchange simulator, usable in-process::

        async with SimServer(SimConfig.fast()) as sim:
            sim.url, sim.ws_url, sim.engine, await sim.set_faults(latency_ms=100), sim.state()

    ``upstream`` (a bitFlyer-format realtime URL) or ``replay`` (recording files or product folders,
    at ``speed`` times real time) replace the synthetic market by another market's feed
    (:mod:`bfsx.sim.upstream`); :attr:`upstream_market` is then its state, :attr:`flow` None.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        upstream: str | None = None,
        replay: Sequence[str | Path] | None = None,
        speed: float = 1.0,
    ) -> None:
        cfg = config if config is not None else SimConfig()
        if cfg.seed is None:
            cfg = cfg.model_copy(update={"seed": random.SystemRandom().randrange(1, 2**31)})
        self.config = cfg
        self.seed: int = cfg.seed if cfg.seed is not None else 0
        self.host = host
        self.port = port
        self.active_faults = Faults()
        self.engine = Engine(cfg, self.active_faults)
        self.engine.listener = self
        self.flow: SyntheticFlow | None = None
        self.upstream_market: UpstreamMarket | None = None
        self.feed: UpstreamFeed | ReplayFeed | None = None
        if upstream is not None or replay is not None:
            # the market is another one's: no synthetic flow, nothing shown until its first snapshot
            self.upstream_market = UpstreamMarket(
                self.engine, on_book=self._publish_diff, max_levels=cfg.upstream.max_levels
            )
            if upstream is not None:
                self.feed = UpstreamFeed(self.upstream_market, upstream, cfg.upstream)
            else:
                assert replay is not None
                # the last book stays shown for two diff intervals (else it could share one published
                # diff with the end's withdrawal, and no client would see it)
                self.feed = ReplayFeed(self.upstream_market, [Path(p) for p in replay], speed,
                                       last_shown_s=2 * cfg.market.diff_interval)
        else:
            self.flow = SyntheticFlow(self.engine, cfg.market, self.seed)
        self.limiter = RateLimiter(cfg.limits, api_keys=self.engine.accounts)
        self._fault_rng = random.Random(self.seed ^ 0x5EED5EED)
        self._subs: dict[str, set[_Client]] = {}
        self._clients: set[_Client] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.executions_total = 0
        self.events_dropped = 0
        self.sockets_dropped = 0
        self._public: dict[str, Handler] = {}
        self._private: dict[str, tuple[str, Handler]] = {}
        self._routes()
        self.app = web.Application(client_max_size=1 << 20)
        self.app.router.add_get(endpoints.REALTIME_PATH, self._ws_handler)
        self.app.router.add_post(paths.FAULTS, self._faults_handler)
        self.app.router.add_get(paths.FAULTS, self._faults_get)
        self.app.router.add_get(paths.STATE, self._state_handler)
        self.app.router.add_post(paths.ACCOUNT, self._account_handler)
        self.app.router.add_route("*", "/{tail:.*}", self._rest_handler)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """REST base URL (paths are ``/v1/...`` under it)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{endpoints.REALTIME_PATH}"

    async def start(self) -> None:
        """Listen and start the market clock."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        m = self.config.market
        self._tasks = [
            asyncio.create_task(self._every(m.step_seconds, self._tick), name="sim-flow"),
            asyncio.create_task(self._every(m.diff_interval, self._diffs), name="sim-diffs"),
            asyncio.create_task(self._every(m.snapshot_interval, self._snapshots), name="sim-snapshots"),
            asyncio.create_task(self._every(m.ticker_interval, self._tickers), name="sim-ticker"),
        ]
        if self.feed is not None:
            await self.feed.start()

    async def stop(self) -> None:
        """Stop the clock and the upstream feed, close every realtime connection (1001) and the listener."""
        if self.feed is not None:
            await self.feed.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.close_websockets(1001, "")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _every(self, interval: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` every ``interval`` s on a fixed schedule (catching up short lags, never
        skipping a call, so the flow's step sequence is the same however busy the machine is)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < -1.0:
                deadline = loop.time()  # far behind (suspended?): resume from now
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))
            try:
                fn()
            except Exception as e:  # a bug in one tick must not stop the market
                print(f"bfsx sim: {fn.__name__} failed: {e!r}", file=sys.stderr)

    # ------------------------------------------------------------------ test hooks
    async def set_faults(self, **kw: Any) -> dict[str, Any]:
        """Same as POST /_sim/faults; returns the faults now in force."""
        req = faults_mod.parse_request(kw)
        return await self._apply_faults(req)

    faults = set_faults  # the name in docs/ARCHITECTURE.md

    async def set_account(self, api_key: str, collateral_jpy: float) -> dict[str, Any]:
        """Same as POST /_sim/account; returns its reply. Raises ``ValueError`` with one line (a bad
        value, or :class:`~bfsx.sim.accounts.UnknownAccount` for a key that is not configured)."""
        req = accounts_mod.parse_request({"api_key": api_key, "collateral_jpy": collateral_jpy})
        return self._apply_account(req)

    def _apply_account(self, req: accounts_mod.AccountRequest) -> dict[str, Any]:
        acct = self.engine.accounts.get(req.api_key)
        if acct is None:
            raise accounts_mod.UnknownAccount(f"unknown api_key {req.api_key!r}")
        cuts = acct.loss_cuts
        self.engine.set_collateral(acct, round(Decimal(repr(req.collateral_jpy)) * SAT))
        return {
            "api_key": acct.api_key,
            "collateral": views.collateral(self.engine, acct),
            "loss_cut": acct.loss_cuts > cuts,
            "loss_cuts": acct.loss_cuts,
        }

    async def fetch_state(self) -> dict[str, Any]:
        """Same as :meth:`state` (async, like ``SimHooks.fetch_state``)."""
        return self.state()

    def state(self) -> dict[str, Any]:
        """Same JSON as GET /_sim/state."""
        st = views.state(self.engine)
        st["faults"] = self.active_faults.as_dict()
        st["seed"] = self.seed
        st["websockets"] = len(self._clients)
        st["flow_steps"] = self.flow.steps if self.flow is not None else 0
        up = self.upstream_market
        if up is not None:
            st["upstream"] = {
                "connected": up.connected,
                "known": {code: p.known for code, p in up.products.items()},
                "reasons": {code: p.reason for code, p in up.products.items() if not p.known},
                "frames": up.frames,
                "rejected": up.rejected,
                "losses": up.losses,
                "prints": up.prints,
                "fills": up.fills,
            }
        st["events_dropped"] = self.events_dropped
        st["sockets_dropped"] = self.sockets_dropped
        st["limits_refused"] = self.limiter.refused.as_dict()
        return st

    async def _apply_faults(self, req: faults_mod.FaultsRequest) -> dict[str, Any]:
        was_maintenance = self.active_faults.maintenance
        faults_mod.apply(self.active_faults, req)
        if self.active_faults.maintenance and not was_maintenance:
            await self.close_websockets(channels.MAINTENANCE_CLOSE_CODE, channels.MAINTENANCE_CLOSE_REASON)
        cw = req.close_websockets
        if cw is not None and cw is not False:
            code = 1000 if cw is True else int(cw)
            reason = channels.MAINTENANCE_CLOSE_REASON if code == channels.MAINTENANCE_CLOSE_CODE else ""
            await self.close_websockets(code, reason)
        return self.active_faults.as_dict()

    async def close_websockets(self, code: int, reason: str) -> None:
        """Close every realtime connection now with ``code`` / ``reason``."""
        clients = list(self._clients)
        for c in clients:
            self._forget(c)
        closers = [asyncio.create_task(c.ws.close(code=code, message=reason.encode())) for c in clients]
        if closers:
            await asyncio.wait(closers, timeout=2.0)

    async def _faults_handler(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read() or b"{}")
            req = faults_mod.parse_request(data)
        except (orjson.JSONDecodeError, ValueError) as e:
            return _json({"error": str(e)}, status=400)
        return _json(await self._apply_faults(req))

    async def _account_handler(self, request: web.Request) -> web.Response:
        try:
            req = accounts_mod.parse_request(orjson.loads(await request.read() or b"{}"))
            return _json(self._apply_account(req))
        except orjson.JSONDecodeError:
            return _json({"error": "body is not JSON"}, status=400)
        except accounts_mod.UnknownAccount as e:
            return _json({"error": str(e)}, status=404)
        except ValueError as e:
            return _json({"error": str(e)}, status=400)

    async def _faults_get(self, request: web.Request) -> web.Response:
        return _json(self.active_faults.as_dict())

    async def _state_handler(self, request: web.Request) -> web.Response:
        return _json(self.state())

    # ------------------------------------------------------------------ timers
    def _tick(self) -> None:
        if self.flow is not None:
            self.flow.step()
        else:
            self.engine.synthetic_filled.clear()  # only the flow reads it: keep it bounded
        self.engine.expire_due()

    def _diffs(self) -> None:
        for code in self.engine.markets:
            self._publish_diff(code)

    def _publish_diff(self, code: str) -> None:
        diff = views.take_diff(self.engine, code)
        if diff is not None:
            self._publish(channels.board(code), diff)

    def _snapshots(self) -> None:
        depth = self.config.market.snapshot_depth
        for code in self.engine.markets:
            ch = channels.board_snapshot(code)
            if self._subs.get(ch):
                self._publish(ch, views.board(self.engine, code, depth, ws=True))

    def _tickers(self) -> None:
        for code in self.engine.markets:
            ch = channels.ticker(code)
            if self._subs.get(ch):
                self._publish(ch, self._ticker(code, ws=True))

    def _ticker(self, code: str, *, ws: bool = False) -> dict[str, Any]:
        out = views.ticker(self.engine, code, ws=ws)
        if self._unknown(code):
            out["state"] = "CLOSED"  # as getboardstate says: the followed book is unknown
        return out

    # ------------------------------------------------------------------ engine listener
    def on_executions(self, product: str, rows: list[dict[str, Any]]) -> None:
        self.executions_total += len(rows)
        self._publish(channels.executions(product), rows)

    def on_child_events(self, account: Account, events: list[dict[str, Any]]) -> None:
        rate = self.active_faults.drop_private_events
        if rate > 0:
            kept = [e for e in events if self._fault_rng.random() >= rate]
            self.events_dropped += len(events) - len(kept)
            events = kept
        subs = self._subs.get(channels.CHILD_ORDER_EVENTS)
        if not events or not subs:
            return
        frame: bytes | None = None
        for c in list(subs):
            if c.account is account:
                frame = frame or self._frame(channels.CHILD_ORDER_EVENTS, events)
                if not c.send(frame):
                    self._drop_slow(c)

    @staticmethod
    def _frame(channel: str, message: Any) -> bytes:
        return orjson.dumps({"jsonrpc": "2.0", "method": "channelMessage", "params": {"channel": channel, "message": message}})

    def _publish(self, channel: str, message: Any) -> None:
        """Encode once, queue to every subscriber of ``channel``."""
        subs = self._subs.get(channel)
        if not subs:
            return
        frame = self._frame(channel, message)
        for c in list(subs):
            if not c.send(frame):
                self._drop_slow(c)

    def _drop_slow(self, c: _Client) -> None:
        self.sockets_dropped += 1
        self._forget(c)
        asyncio.get_running_loop().create_task(c.ws.close(code=1008, message=b"slow consumer"))

    def _forget(self, c: _Client) -> None:
        c.closed = True
        for ch in c.channels:
            subs = self._subs.get(ch)
            if subs is not None:
                subs.discard(c)
        c.channels.clear()
        self._clients.discard(c)
        with contextlib.suppress(asyncio.QueueFull):
            c.queue.put_nowait(None)

    # ------------------------------------------------------------------ realtime
    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=channels.PING_INTERVAL, max_msg_size=1 << 20)
        await ws.prepare(request)
        c = _Client(ws, self.config.ws_queue)
        self._clients.add(c)
        c.task = asyncio.create_task(self._writer(c))
        try:
            async for msg in ws:
                if c.closed:
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._on_text(c, msg.data)
        finally:
            self._forget(c)
            if c.task is not None:
                c.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await c.task
        return ws

    async def _writer(self, c: _Client) -> None:
        q = c.queue
        try:
            while True:
                frame = await q.get()
                # drain what is queued without a task switch per frame: send_frame only suspends
                # when the transport's buffer is over its high-water mark
                while frame is not None:
                    if c.ws.closed:
                        return
                    await c.ws.send_frame(frame, WSMsgType.TEXT)
                    if q.empty():
                        break
                    frame = q.get_nowait()
                if frame is None:
                    return
        except (ConnectionError, RuntimeError):
            return

    def _reply(self, c: _Client, data: Any) -> None:
        if not c.send(orjson.dumps(data)):
            self._drop_slow(c)

    def _on_text(self, c: _Client, text: str | bytes) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reply(c, _rpc_error(None, channels.PARSE_ERROR, "Invalid JSON"))
            return
        if isinstance(req, list):
            replies = [r for r in (self._rpc(c, one) for one in req) if r is not None]
            if replies:
                self._reply(c, replies)
            return
        reply = self._rpc(c, req)
        if reply is not None:
            self._reply(c, reply)

    def _rpc(self, c: _Client, req: Any) -> dict[str, Any] | None:
        """One JSON-RPC call; None for a notification (no ``id``)."""
        if not isinstance(req, dict):
            return _rpc_error(None, channels.INVALID_PARAMS)
        has_id = "id" in req
        rid = req.get("id")
        out = self._call(c, req.get("method"), req.get("params"))
        if not has_id:
            return None
        if isinstance(out, tuple):
            return _rpc_error(rid, out)
        return {"jsonrpc": "2.0", "id": rid, "result": out}

    def _call(self, c: _Client, method: Any, params: Any) -> bool | tuple[int, str]:
        if method in ("subscribe", "unsubscribe"):
            channel = params.get("channel") if isinstance(params, dict) else None
            if not isinstance(channel, str):
                return channels.INVALID_PARAMS
            if method == "unsubscribe":
                c.channels.discard(channel)
                subs = self._subs.get(channel)
                if subs is not None:
                    subs.discard(c)
                return True
            prefix, _product = channels.split(channel)
            if not prefix:
                return channels.INVALID_CHANNEL
            if prefix in channels.PRIVATE_CHANNELS and c.account is None:
                return channels.AUTH_REQUIRED
            if channel in c.channels:
                return channels.ALREADY_SUBSCRIBED
            c.channels.add(channel)
            if len(self._subs) < 10_000 or channel in self._subs:  # bounded even for junk product names
                self._subs.setdefault(channel, set()).add(c)
            return True
        if method == "auth":
            return self._auth(c, params)
        return channels.METHOD_NOT_FOUND

    def _auth(self, c: _Client, params: Any) -> bool | tuple[int, str]:
        if not isinstance(params, dict):
            return channels.INVALID_PARAMS
        key, ts, nonce, sig = (params.get(k) for k in ("api_key", "timestamp", "nonce", "signature"))
        if (
            not isinstance(key, str)
            or not isinstance(ts, int | float)
            or isinstance(ts, bool)
            or not isinstance(nonce, str)
            or not isinstance(sig, str)
        ):
            return channels.INVALID_PARAMS
        acct = self.engine.accounts.get(key)
        ts_int = int(ts)
        if acct is None or not 16 <= len(nonce) <= 255 or not auth.verify_ws(acct.api_secret, ts_int, nonce, sig):
            return channels.INVALID_SIGNATURE
        c.account = acct
        return True

    # ------------------------------------------------------------------ REST
    def _routes(self) -> None:
        pub = self._public
        for path in endpoints.spellings(endpoints.GET_MARKETS):
            pub[path] = self._getmarkets
            for region in endpoints.MARKET_REGIONS:
                pub[f"{path}/{region}"] = self._getmarkets
        for path in endpoints.spellings(endpoints.GET_BOARD):
            pub[path] = self._getboard
        for path in endpoints.spellings(endpoints.GET_TICKER):
            pub[path] = self._getticker
        for path in endpoints.spellings(endpoints.GET_EXECUTIONS):
            pub[path] = self._getexecutions
        pub[endpoints.GET_BOARD_STATE] = self._getboardstate
        pub[endpoints.GET_HEALTH] = self._gethealth
        pub[endpoints.GET_FUNDING_RATE] = self._getfundingrate
        priv = self._private
        priv[endpoints.GET_PERMISSIONS] = ("GET", self._getpermissions)
        priv[endpoints.GET_BALANCE] = ("GET", self._getbalance)
        priv[endpoints.GET_COLLATERAL] = ("GET", self._getcollateral)
        priv[endpoints.GET_COLLATERAL_ACCOUNTS] = ("GET", self._getcollateralaccounts)
        priv[endpoints.GET_COLLATERAL_HISTORY] = ("GET", self._getcollateralhistory)
        priv[endpoints.SEND_CHILD_ORDER] = ("POST", self._sendchildorder)
        priv[endpoints.CANCEL_CHILD_ORDER] = ("POST", self._cancelchildorder)
        priv[endpoints.CANCEL_ALL_CHILD_ORDERS] = ("POST", self._cancelallchildorders)
        priv[endpoints.GET_CHILD_ORDERS] = ("GET", self._getchildorders)
        priv[endpoints.GET_MY_EXECUTIONS] = ("GET", self._getmyexecutions)
        priv[endpoints.GET_POSITIONS] = ("GET", self._getpositions)
        priv[endpoints.GET_TRADING_COMMISSION] = ("GET", self._gettradingcommission)

    async def _rest_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/").lower() or "/"
        started = time.monotonic()
        response = await self._rest(request, path)
        latency = self.active_faults.latency_ms / 1000.0
        if latency > 0:
            # the request has already had its effect (an order is live): only the reply is late
            await asyncio.sleep(max(0.0, latency - (time.monotonic() - started)))
        return response

    def _error(self, code: ErrorCode, headers: dict[str, str], http: int | None = None, **fmt: Any) -> web.Response:
        return _json(errors.error_body(code, **fmt), status=http or code.http, headers=headers)

    async def _rest(self, request: web.Request, path: str) -> web.Response:
        public = self._public.get(path)
        private = self._private.get(path)
        if public is None and private is None:
            return web.Response(
                status=404, text="<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html"
            )
        now = time.monotonic()
        wall = time.time()
        lim = self.limiter
        headers: dict[str, str] = {}
        if path in self.active_faults.fail_paths:
            stall = self.active_faults.fail_paths_timeout_ms / 1000.0
            if stall > 0:
                await asyncio.sleep(stall)  # the client gives up first: a timeout, nothing executed
            return self._error(errors.OVERLOAD, headers, http=self.active_faults.http_error_status)
        if self.active_faults.http_error_rate > 0 and self._fault_rng.random() < self.active_faults.http_error_rate:
            status = self.active_faults.http_error_status
            code = errors.OVER_LIMIT if status == 429 else errors.OVERLOAD
            return self._error(code, headers, http=status)
        body = await request.read()
        if public is not None:
            if request.method not in ("GET", "HEAD"):
                return _json({"Message": "The requested resource does not support http method."}, status=405)
            addr = request.remote or "?"
            # public calls are not signed: the ACCESS-KEY header, when a client sends one anyway,
            # only says whose refusal this is in limits_refused
            ok = lim.hit_ip(addr, request.headers.get("ACCESS-KEY"), now)
            headers.update(limits.headers_for(lim.ip(addr).reading(now, wall)))
            if not ok:
                return self._error(errors.OVER_LIMIT, headers, http=self.config.limits.over_limit_http_status)
            return self._call_handler(public, request, body, None, headers)
        assert private is not None
        method, handler = private
        key = request.headers.get("ACCESS-KEY")
        if not key:
            return self._error(errors.KEY_REQUIRED, headers)
        acct = self.engine.accounts.get(key)
        ts = request.headers.get("ACCESS-TIMESTAMP", "")
        sig = request.headers.get("ACCESS-SIGN", "")
        if acct is None or not auth.verify_rest(acct.api_secret, ts, request.method, request.raw_path, body, sig):
            return self._error(errors.INVALID_SIGNATURE, headers)
        if request.method != method:
            return _json({"Message": "The requested resource does not support http method."}, status=405)
        k = lim.key(acct.api_key)
        ok = lim.hit_private(acct.api_key, now)
        headers.update(limits.headers_for(k.private.reading(now, wall)))
        over = self.config.limits.over_limit_http_status
        if not ok:
            return self._error(errors.OVER_LIMIT, headers, http=over)
        if path in endpoints.ORDER_PATHS:
            ok = lim.hit_orders(acct.api_key, now)
            headers.update(limits.headers_for(k.orders.reading(now, wall), order=True))
            if not ok:
                return self._error(errors.OVER_LIMIT, headers, http=over)
        return self._call_handler(handler, request, body, acct, headers)

    def _call_handler(
        self, handler: Handler, request: web.Request, body: bytes, acct: Account | None, headers: dict[str, str]
    ) -> web.Response:
        try:
            result = handler(request, request.query, body, acct)
        except EngineError as e:
            http = self.config.limits.over_limit_http_status if e.code.status == -1 else e.code.http
            return _json(e.body, status=http, headers=headers)
        if result is None:
            return web.Response(status=200, headers=headers)
        return _json(result, headers=headers)

    # --- argument helpers
    @staticmethod
    def _int(q: MultiMapping[str], name: str, default: int | None = None) -> int | None:
        v = q.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise EngineError(errors.INVALID_PARAMETER) from None

    def _count(self, q: MultiMapping[str]) -> int:
        n = self._int(q, "count", 100)
        assert n is not None
        if n <= 0:
            raise EngineError(errors.INVALID_PARAMETER)
        return min(n, _MAX_COUNT)

    def _product(self, q: MultiMapping[str] | dict[str, Any]) -> str:
        v = q.get("product_code")
        if v is not None and not isinstance(v, str):
            raise EngineError(errors.INVALID_PRODUCT)
        if v and v.startswith("[") and v.endswith("]"):
            # ccxt's fetch_positions sends a one-element list as "['FX_BTC_JPY']": take the element
            v = v.strip("[]").split(",")[0].strip().strip("'\"")
        return self.engine.market(v).spec.code

    @staticmethod
    def _body(body: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            raise EngineError(errors.INVALID_PARAMETER) from None
        if not isinstance(data, dict):
            raise EngineError(errors.INVALID_PARAMETER)
        return data

    # --- public
    def _getmarkets(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        region = request.path.rstrip("/").rsplit("/", 1)[-1].lower()
        served = self.engine.markets
        codes = [c for c in REGIONS.get(region, ()) if c in served] if region in endpoints.MARKET_REGIONS else list(served)
        return [{"product_code": c, "market_type": PRODUCTS[c].market_type} for c in codes]

    def _getboard(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        return views.board(self.engine, self._product(q))

    def _getticker(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        return self._ticker(self._product(q))

    def _getexecutions(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        return views.public_executions(
            self.engine, self._product(q), self._count(q), self._int(q, "before"), self._int(q, "after")
        )

    def _getboardstate(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        code = self._product(q)
        if self._unknown(code):
            return {"health": "STOP", "state": "CLOSED"}
        return {"health": self.engine.health(), "state": self.engine.board_state()}

    def _gethealth(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        code = self._product(q)
        return {"status": "STOP" if self._unknown(code) else self.engine.health()}

    def _unknown(self, code: str) -> bool:
        """True when following an upstream whose book for ``code`` is unknown (trading is off)."""
        return self.upstream_market is not None and not self.upstream_market.known(code)

    def _getfundingrate(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        self._product(q)
        now = int(time.time())
        settle = (now // 28_800 + 1) * 28_800 + 5 * 3600  # 05:00 / 13:00 / 21:00 UTC
        if settle - now > 28_800:
            settle -= 28_800
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(settle))
        return {"current_funding_rate": 0.0, "next_funding_rate_settledate": stamp}

    # --- private
    def _getpermissions(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        return list(PRIVATE_PATHS)

    def _getbalance(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        return views.balance(self.engine, acct)

    def _getcollateral(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        return views.collateral(self.engine, acct)

    def _getcollateralaccounts(
        self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None
    ) -> Any:
        assert acct is not None
        return views.collateral_accounts(self.engine, acct)

    def _getcollateralhistory(
        self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None
    ) -> Any:
        assert acct is not None
        return views.collateral_history(
            self.engine, acct, self._count(q), self._int(q, "before"), self._int(q, "after")
        )

    def _gettradingcommission(
        self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None
    ) -> Any:
        mkt = self.engine.markets[self._product(q)]
        return {"commission_rate": 0.0 if mkt.spec.is_fx else self.config.spot_commission_rate}

    def _getchildorders(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        return views.child_orders(
            self.engine,
            acct,
            self._product(q),
            self._count(q),
            self._int(q, "before"),
            self._int(q, "after"),
            q.get("child_order_state") or None,
            q.get("child_order_id") or None,
            q.get("child_order_acceptance_id") or None,
        )

    def _getmyexecutions(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        return views.my_executions(
            self.engine,
            acct,
            self._product(q),
            self._count(q),
            self._int(q, "before"),
            self._int(q, "after"),
            q.get("child_order_id") or None,
            q.get("child_order_acceptance_id") or None,
        )

    def _getpositions(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        code = self._product({"product_code": q.get("product_code") or "FX_BTC_JPY"})
        if not self.engine.markets[code].spec.is_fx:
            raise EngineError(errors.INVALID_PRODUCT)
        return views.positions(self.engine, acct, code)

    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        """Run an order action after the reply is produced (acceptance is not placement)."""
        loop = asyncio.get_running_loop()
        delay = self.config.order_delay_ms / 1000.0
        if delay > 0:
            loop.call_later(delay, fn, *args)
        else:
            loop.call_soon(fn, *args)

    def _sendchildorder(self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None) -> Any:
        assert acct is not None
        req = self.engine.parse_order(self._body(body))
        if self.upstream_market is not None:
            self.upstream_market.check_order(req.product)  # never fill on an unknown book
        # only a well-formed order counts in the small-order bucket: a refused body is not an order
        if not self.limiter.small_order(acct.api_key, btc(req.size)):
            raise EngineError(errors.OVER_LIMIT)
        order: Order = self.engine.accept(acct, req)
        self._later(self._place, order)
        return {"child_order_acceptance_id": order.acceptance_id}

    def _place(self, order: Order) -> None:
        self.engine.place(order)
        if self.upstream_market is not None:
            self.upstream_market.on_placed(order)  # its queue position behind the upstream's volume

    def _cancelchildorder(
        self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None
    ) -> Any:
        assert acct is not None
        data = self._body(body)
        code = self._product(data)
        acc_id, child_id = data.get("child_order_acceptance_id"), data.get("child_order_id")
        if not isinstance(acc_id, str | None) or not isinstance(child_id, str | None) or not (acc_id or child_id):
            raise EngineError(errors.INVALID_PARAMETER)
        self._later(self.engine.cancel, acct, code, acc_id, child_id)
        return None

    def _cancelallchildorders(
        self, request: web.Request, q: MultiMapping[str], body: bytes, acct: Account | None
    ) -> Any:
        assert acct is not None
        code = self._product(self._body(body))
        self._later(self.engine.cancel_all, acct, code)
        return None


# ---------------------------------------------------------------------- the `bfsx sim` command
async def _serve(
    cfg: SimConfig, host: str, port: int, quiet: bool, upstream: str | None, replay: list[Path] | None, speed: float
) -> int:
    sim = SimServer(cfg, host, port, upstream=upstream, replay=replay, speed=speed)
    try:
        await sim.start()
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"REST {sim.url}  realtime {sim.ws_url}", flush=True)
    keys = ", ".join(sim.engine.accounts)
    print(f"seed {sim.seed}  products {', '.join(sim.engine.markets)}  accounts {keys}", flush=True)
    if upstream is not None:
        print(f"market: paper trading on {upstream} (no synthetic flow)", flush=True)
    elif replay is not None:
        print(f"market: replaying {', '.join(map(str, replay))} at {speed:g}x (no synthetic flow)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    view: asyncio.Task[None] | None = None
    tty = sys.stdout.isatty()
    if not quiet:
        interval = cfg.live_interval if tty else max(10.0, cfg.live_interval)
        view = asyncio.create_task(LiveView(sim, tty).run(interval))
    try:
        await stop.wait()
    finally:
        if view is not None:
            view.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await view
            if tty:
                sys.stdout.write("\n")
        await sim.stop()
    return 0


def run_sim(
    host: str,
    port: int,
    seed: int | None,
    config: str | None,
    quiet: bool,
    *,
    upstream: str | None = None,
    replay: Sequence[str] | None = None,
    speed: float | None = None,
) -> int:
    """``bfsx sim``: serve until SIGINT/SIGTERM (exit 0). Bad config, a bad ``--upstream`` URL, a
    missing or unreadable ``--replay`` recording or a bad ``--speed`` raise ``UserError`` (exit 2)."""
    if upstream is not None and replay:
        raise UserError("--upstream and --replay cannot be used together: pick one market to follow")
    if speed is not None and not replay:
        raise UserError("--speed only applies to --replay")
    if upstream is not None:
        check_upstream_url(upstream, host, port)
    paths: list[Path] | None = None
    if replay:
        check_speed(1.0 if speed is None else speed)
        paths = check_paths(replay)
    cfg = load_sim_config(config, seed)
    return aio.run(_serve(cfg, host, port, quiet, upstream, paths, 1.0 if speed is None else speed))
