"""Paper trading on another market's feed: ``bfsx sim --upstream WS_URL`` (and, through
:mod:`bfsx.sim.replay`, ``--replay``). docs/simulator.md#paper-trading-on-a-live-feed.

:class:`UpstreamMarket` owns the simulator's public market while it follows a feed: a mirror of
each product's upstream book (a :class:`bfsx.market.book.OrderBook`, the same decoder and checks a
bot uses), the engine's synthetic orders that show it (one per upstream price level), the liquidity
users took from those levels, the queue ahead of every resting user order, and whether each
product's book is known. It is fed decoded ``lightning_*`` messages by a source (the websocket
:class:`UpstreamFeed` here, the recording reader in :mod:`bfsx.sim.replay`) and changes the engine
only through its book and its public methods.

The fill model (hftbacktest's risk-averse queue model, and a print through an order fills at most
the print's size): a resting limit order fills only from the upstream's prints. A print at the order's price first uses up the volume that was ahead of it when
it joined (reduced to the level's size whenever the upstream level shrinks); a print beyond its price
(a buy above a resting sell, a sell below a resting buy) traded through it. A print's size is shared
among the users' orders in price-time priority, never counted twice. A user order that crosses the
upstream book takes the shown levels at once, and what it took stays taken until the upstream
level goes away: the live market would not have refilled it for a second order.

Unknown is not a price: before the first good snapshot, after the upstream drops, while its board
is silent, after a garbage or crossed snapshot, or a diff that cannot be applied, the product is *unknown*: its shown levels are
withdrawn, new orders for it are refused (-204, with the reason) and resting orders stay without
fills. The next good snapshot makes it known again, with every resting order at the back of the
queue at its price (its real position during the gap cannot be known).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from sortedcontainers import SortedDict

from bfsx.bitflyer import channels, timestamps
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.errors import UserError
from bfsx.market.book import OrderBook
from bfsx.sim.book import Market
from bfsx.sim.config import UpstreamConfig
from bfsx.sim.engine import Engine
from bfsx.sim.model import BUY, SELL, SIDE_OF, EngineError, Order, to_sats

#: The refusal of an order while its product's upstream book is unknown: -204 (the client's
#: ``MarketClosedError``: wait, do not retry at once) with the simulator's reason.
UPSTREAM_UNKNOWN = ErrorCode(-204, "Market state is closed: the simulator's upstream book is unknown ({reason}).", 400)

_MAX_PRICE = 1e12  # far above any BTC/JPY price; a larger upstream number is garbage
_MAX_SIZE = 1e6  # BTC in one print: more is garbage
_MAX_ID = 2**53  # an id a JSON reader (JavaScript included) keeps exact; a larger one is replaced
_PRUNE_AT = 1024  # queue entries kept before the finished orders are swept out

BookChanged = Callable[[str], None]
Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"bfsx sim: {line}", file=sys.stderr, flush=True)


class _Product:
    """One product's upstream state: the mirror, the shown quotes, what users took, known or not."""

    __slots__ = ("board_frames", "known", "mirror", "quotes", "reason", "taken")

    def __init__(self) -> None:
        self.mirror = OrderBook()
        # side -> price -> (the synthetic order showing the level, the sats it showed)
        self.quotes: dict[int, SortedDict] = {BUY: SortedDict(), SELL: SortedDict()}
        self.taken: dict[int, dict[int, int]] = {BUY: {}, SELL: {}}  # sats users took from a level
        self.known = False
        self.reason = "no snapshot yet"
        self.board_frames = 0  # snapshots and diffs received: the feed's watchdog reads it


class UpstreamMarket:
    """The simulator's public market while it follows an upstream feed (see the module docstring).

    ``on_book(product)`` is called after every change of a product's shown book (the server
    publishes the diff at once). Counters: ``frames`` (messages handled), ``rejected`` (messages
    or execution rows refused as malformed or crossed), ``losses`` (times a product became unknown),
    ``prints`` (upstream executions taken onto the tape), ``fills`` (user fills made by them).
    """

    def __init__(
        self, engine: Engine, on_book: BookChanged | None = None, say: Say = _stderr, *, max_levels: int = 20_000
    ) -> None:
        self.engine = engine
        self.max_levels = max_levels  # bounds the mirror: diffs alone could add levels forever
        self.on_book = on_book
        self.say = say
        self.products: dict[str, _Product] = {code: _Product() for code in engine.markets}
        self.ahead: dict[Order, int] = {}  # resting user order -> upstream sats ahead of it at its price
        self.connected = False
        self.frames = 0
        self.rejected = 0
        self.losses = 0
        self.fills = 0
        self.prints = 0

    # ------------------------------------------------------------------ state
    def known(self, product: str) -> bool:
        """True while ``product``'s upstream book is known (orders accepted, prints fill)."""
        p = self.products.get(product)
        return p is not None and p.known

    def check_order(self, product: str) -> None:
        """Raise the -204 refusal (with its reason) when ``product``'s book is unknown."""
        p = self.products.get(product)
        if p is not None and not p.known:
            raise EngineError(UPSTREAM_UNKNOWN, reason=p.reason)

    def lose(self, reason: str, product: str | None = None) -> None:
        """Make ``product`` (every product when None) unknown: its shown levels are withdrawn and
        nothing fills until the next good snapshot."""
        for code, p in self.products.items():
            if product is not None and code != product:
                continue
            p.mirror.clear()
            p.reason = reason
            if p.known:
                p.known = False
                self.losses += 1
                self.say(f"upstream {code}: {reason}: orders refused, no fills, until the next snapshot")
            self._withdraw(code, p)

    def on_connected(self) -> None:
        """The source is live (subscribed, or the replay started); books stay unknown until snapshots."""
        self.connected = True

    def on_disconnected(self, close_code: int | None) -> None:
        """The upstream socket closed: every product is unknown until its next snapshot."""
        self.connected = False
        self.lose(f"upstream disconnected (close code {close_code})")

    def on_placed(self, order: Order) -> None:
        """A user order just started resting: the upstream volume shown at its price is ahead of it."""
        if order.resting and order.account is not None:
            self.ahead[order] = self._shown(order.product, order.side, order.price)
            if len(self.ahead) > _PRUNE_AT:
                self.ahead = {o: a for o, a in self.ahead.items() if o.resting}

    # ------------------------------------------------------------------ the channels
    def handler(self, channel: str) -> Callable[[Any], None] | None:
        """The handler of one upstream channel of a simulated product, or None."""
        prefix, product = channels.split(channel)
        if product not in self.products:
            return None
        if prefix == channels.BOARD_SNAPSHOT:
            return lambda msg: self.on_snapshot(product, msg)
        if prefix == channels.BOARD:
            return lambda msg: self.on_diff(product, msg)
        if prefix == channels.EXECUTIONS:
            return lambda msg: self.on_executions(product, msg)
        return None

    def on_snapshot(self, product: str, msg: Any) -> None:
        """A ``lightning_board_snapshot_`` message: the whole book again (or unknown when bad)."""
        self.frames += 1
        p = self.products[product]
        p.board_frames += 1
        was_known = p.known
        if not p.mirror.apply_snapshot(msg):
            self._reject(product, "a malformed board snapshot")
            return
        if _crossed(msg):
            self._reject(product, "a crossed board snapshot (best bid >= best ask)")
            return
        if len(p.mirror) > self.max_levels:
            self._reject(product, f"a board snapshot of more than {self.max_levels} levels")
            return
        mkt = self.engine.markets[product]
        wanted = {BUY: dict(_sats_levels(p.mirror.bids())), SELL: dict(_sats_levels(p.mirror.asks()))}
        when = self.engine.now()
        for side in (BUY, SELL):
            for price in [q for q in p.quotes[side] if q not in wanted[side]]:
                self._set_level(mkt, p, side, price, 0, when)
            for price in [q for q in p.taken[side] if q not in wanted[side]]:
                del p.taken[side][price]  # the level went away: what users took from it is forgotten
            for price, sats in wanted[side].items():
                self._set_level(mkt, p, side, price, sats, when)
        p.known = True
        if not was_known:
            self.say(f"upstream {product}: book known ({len(wanted[BUY])} bids, {len(wanted[SELL])} asks)")
            self._requeue(product, p)
        self._changed(product)

    def on_diff(self, product: str, msg: Any) -> None:
        """A ``lightning_board_`` diff: the levels it names, then the stale ones beyond its mid."""
        self.frames += 1
        p = self.products[product]
        p.board_frames += 1
        if not p.known:
            return  # diffs before the first snapshot (or after a loss) say nothing about the rest
        if not p.mirror.apply_diff(msg):
            self._reject(product, "a malformed board diff")
            return
        mirror = p.mirror
        if mirror.best_bid and mirror.best_ask and mirror.best_bid >= mirror.best_ask:
            self._reject(product, "a board diff that crossed the book")
            return
        if len(mirror) > self.max_levels:
            self._reject(product, f"board diffs that grew the book beyond {self.max_levels} levels")
            return
        mkt = self.engine.markets[product]
        when = self.engine.now()
        sides: tuple[tuple[int, Literal["bids", "asks"]], ...] = ((BUY, "bids"), (SELL, "asks"))
        for side, key in sides:
            for level in msg[key]:
                price = _whole(level["price"])
                if price:
                    self._set_level(mkt, p, side, price, to_sats(mirror.size_at(key, level["price"])), when)
        # the mirror dropped levels beyond the diff's mid: drop their quotes too
        quotes = p.quotes[BUY]
        while quotes and (not mirror.best_bid or quotes.peekitem(-1)[0] > mirror.best_bid):
            self._set_level(mkt, p, BUY, quotes.peekitem(-1)[0], 0, when)
        quotes = p.quotes[SELL]
        while quotes and (not mirror.best_ask or quotes.peekitem(0)[0] < mirror.best_ask):
            self._set_level(mkt, p, SELL, quotes.peekitem(0)[0], 0, when)
        self._changed(product)

    def on_executions(self, product: str, msg: Any) -> None:
        """A ``lightning_executions_`` batch: each print goes out on the simulator's tape and, while
        the book is known, fills the users' resting orders it reached."""
        self.frames += 1
        if type(msg) is not list:
            self._reject(product, "")
            return
        p = self.products[product]
        engine = self.engine
        for row in msg:
            trade = _print(row)
            if trade is None:
                self.rejected += 1
                continue
            side, price, size, xid, when, stamp, buy_id, sell_id = trade
            engine.external_execution(product, side, price, size, when, buy_id, sell_id, xid, stamp)
            self.prints += 1
            if p.known and side:
                self._fill_from_print(product, -side, price, size)
        engine.flush()

    # ------------------------------------------------------------------ the fill model
    def _fill_from_print(self, product: str, maker_side: int, price: int, size: int) -> None:
        """Fill users' resting orders on ``maker_side`` that a print of ``size`` at ``price`` reached."""
        book = self.engine.markets[product].book
        levels = book.side(maker_side)
        # the maker side's prices the print reached, best for the taker first
        reached = (
            list(levels.irange(maximum=price)) if maker_side == SELL else list(levels.irange(minimum=price, reverse=True))
        )
        left = size
        when = self.engine.now()
        for level_price in reached:
            users = [o for o in levels[level_price].orders if o.account is not None]
            if not users:
                continue
            if level_price != price:  # traded through: the print's size reached these first
                for order in users:
                    if left <= 0:
                        return
                    q = min(order.remaining, left)
                    left -= q
                    self._fill(order, q, when)
                continue
            # at the print's price: the queue ahead of each order trades first
            used = 0  # of this print, what earlier users' orders at this price already took
            for order in users:
                ahead = self.ahead.get(order)
                if ahead is None:
                    ahead = self._shown(product, maker_side, level_price)
                self.ahead[order] = max(0, ahead - left)
                q = min(order.remaining, max(0, left - ahead - used))
                if q > 0:
                    used += q
                    self._fill(order, q, when)

    def _fill(self, order: Order, size: int, when: datetime) -> None:
        self.engine.fill_resting(order, size, when)
        self.fills += 1
        if not order.resting:
            self.ahead.pop(order, None)

    def _shown(self, product: str, side: int, price: int) -> int:
        """Upstream sats shown at a price now (what a new order there queues behind)."""
        entry = self.products[product].quotes[side].get(price)
        if entry is None:
            return 0
        order: Order = entry[0]
        return order.remaining if order.resting else 0

    def _requeue(self, product: str, p: _Product) -> None:
        """Back from unknown: every resting order goes to the back of the queue at its price."""
        for order in list(self.ahead):
            if order.product == product:
                if order.resting:
                    self.ahead[order] = self._shown(product, order.side, order.price)
                else:
                    del self.ahead[order]

    # ------------------------------------------------------------------ the shown levels
    def _set_level(self, mkt: Market, p: _Product, side: int, price: int, sats: int, when: datetime) -> None:
        """Show ``sats`` of upstream size at ``price`` (less what users took from it); the queue
        ahead of users' orders there shrinks with it (cancellations may have been ahead of them)."""
        book = mkt.book
        quotes, taken = p.quotes[side], p.taken[side]
        entry = quotes.get(price)
        order: Order | None = None
        if entry is not None:
            order, was = entry
            left = order.remaining if order.resting else 0
            if was > left:  # users took some since it was last shown
                taken[price] = taken.get(price, 0) + was - left
            if not order.resting:
                order = None
        if sats <= 0:
            taken.pop(price, None)
        target = max(0, sats - taken.get(price, 0))
        if target == 0:
            if order is not None:
                book.remove(order)
            quotes.pop(price, None)
        elif order is None:
            order = self.engine.new_synthetic(mkt.spec.code, side, price, target, when)
            book.add(order)
            book.side(side)[price].orders.rotate(1)  # upstream volume is ahead of the users' orders
            quotes[price] = (order, target)
        elif order.remaining != target:
            if target < order.remaining:
                book.shrink(order, order.remaining - target)
            else:  # grow in place (keeps the level's order), as Book.shrink does the other way
                grow = target - order.remaining
                order.remaining += grow
                book.side(side)[price].total += grow
                book.depth[side] += grow
                book.mark(side, price)
            quotes[price] = (order, target)
        else:
            quotes[price] = (order, target)
        lvl = book.side(side).get(price)
        if lvl is not None and self.ahead:
            for o in lvl.orders:
                if o.account is not None:
                    a = self.ahead.get(o)
                    if a is not None and a > sats:
                        self.ahead[o] = sats

    def _withdraw(self, product: str, p: _Product) -> None:
        mkt = self.engine.markets[product]
        when = self.engine.now()
        for side in (BUY, SELL):
            for price in list(p.quotes[side]):
                self._set_level(mkt, p, side, price, 0, when)
            p.taken[side].clear()
        self._changed(product)

    def _reject(self, product: str, what: str) -> None:
        self.rejected += 1
        if what:
            self.lose(f"{what} from the upstream", product)

    def _changed(self, product: str) -> None:
        if self.on_book is not None:
            self.on_book(product)


# ---------------------------------------------------------------------- decoding helpers
def _whole(price: Any) -> int:
    """A wire price as whole yen (the book's checks ran first: a finite number >= 0)."""
    return round(float(price))


def _sats_levels(levels: Sequence[tuple[float, float]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for price, size in levels:
        p, s = _whole(price), to_sats(size)
        if p > 0 and s > 0:
            out.append((p, s))
    return out


def _crossed(msg: Any) -> bool:
    """True when a (well-formed) snapshot's best bid is at or above its best ask."""
    bids = [lv["price"] for lv in msg["bids"] if lv["price"] > 0 and lv["size"] > 0]
    asks = [lv["price"] for lv in msg["asks"] if lv["price"] > 0 and lv["size"] > 0]
    return bool(bids and asks and max(bids) >= min(asks))


def _number(v: Any, limit: float) -> float | None:
    if (type(v) is int or type(v) is float) and math.isfinite(v) and 0 < v < limit:
        return float(v)
    return None


def _print(row: Any) -> tuple[int, int, int, int, datetime, str, str, str] | None:
    """One upstream execution row as (taker side, price, sats, id, time, its stamp when it parsed,
    buy id, sell id), or None."""
    if type(row) is not dict:
        return None
    side_name = row.get("side")
    # "" is an Itayose print (no taker side); anything else but BUY / SELL is garbage
    side = (0 if side_name == "" else SIDE_OF.get(side_name)) if type(side_name) is str else None
    price = _number(row.get("price"), _MAX_PRICE)
    size = _number(row.get("size"), _MAX_SIZE)
    if side is None or price is None or size is None:
        return None
    sats, whole = to_sats(size), _whole(price)
    if sats <= 0 or whole <= 0:
        return None
    xid = row.get("id")
    stamp = row.get("exec_date")
    when: datetime | None = None
    if type(stamp) is str and len(stamp) <= 40:
        try:
            when = timestamps.parse(stamp)
        except ValueError:
            when = None
    buy, sell = row.get("buy_child_order_acceptance_id"), row.get("sell_child_order_acceptance_id")
    return (
        side,
        whole,
        sats,
        xid if type(xid) is int and 0 < xid < _MAX_ID else 0,
        when or timestamps.now(),
        stamp if when is not None and type(stamp) is str else "",
        buy if type(buy) is str else "",
        sell if type(sell) is str else "",
    )


# ---------------------------------------------------------------------- the websocket source
_SELF_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})


def check_upstream_url(url: str, host: str = "", port: int = 0) -> str:
    """``url`` if it is a ws:// or wss:// URL with a host that is not this simulator itself
    (``host``:``port``, which would feed its own prints back forever), else a one-line UserError."""
    try:
        parts = urlsplit(url)
        url_port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise UserError(f"--upstream: {url!r} is not a URL") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UserError(f"--upstream: {url!r} is not a ws:// or wss:// URL (e.g. wss://ws.lightstream.bitflyer.com/json-rpc)")
    name = parts.hostname.lower()
    if url_port == port and (name == host.lower() or (name in _SELF_HOSTS and host in _SELF_HOSTS)):
        raise UserError(f"--upstream: {url!r} is this simulator itself (port {port}): follow another endpoint")
    return url


class UpstreamFeed:
    """Follows ``ws_url`` (any bitFlyer-format realtime endpoint) for every product of ``market``:
    board snapshots, board diffs and executions through one :class:`RealtimeClient`, which reconnects
    with back-off. The socket only ever subscribes public channels: no user order, key or
    signature goes upstream."""

    def __init__(self, market: UpstreamMarket, ws_url: str, cfg: UpstreamConfig) -> None:
        self.market = market
        self.ws_url = ws_url
        self.silence_s = cfg.silence_s
        self._watchdog: asyncio.Task[None] | None = None
        self.client = RealtimeClient(
            ws_url,
            backoff=(cfg.backoff_s, max(cfg.backoff_s, cfg.backoff_max_s)),
            connect_timeout=cfg.connect_timeout_s,
            reply_timeout=cfg.connect_timeout_s,
            max_msg_size=cfg.max_frame_bytes,
        )
        for code in market.products:
            for channel in (channels.board_snapshot(code), channels.board(code), channels.executions(code)):
                handler = market.handler(channel)
                assert handler is not None
                self.client.subscribe(channel, handler)
        self.client.on_connect(self._connected)
        self.client.on_disconnect(market.on_disconnected)

    def _connected(self, reconnected: bool) -> None:
        self.market.on_connected()
        self.market.say(f"upstream {'reconnected' if reconnected else 'connected'}: {self.ws_url}")

    async def start(self) -> None:
        await self.client.start()
        if self.silence_s > 0:
            self._watchdog = asyncio.create_task(self._watch(), name="sim-upstream-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        await self.client.close()

    async def _watch(self) -> None:
        """Per product, no board message for ``silence_s`` makes it unknown (a product the upstream
        does not serve never disturbs the others); no message at all on the socket reconnects."""
        seen = {code: -1 for code in self.market.products}
        frames = -1
        while True:
            await asyncio.sleep(self.silence_s)
            for code, p in self.market.products.items():
                if p.board_frames == seen[code] and p.known:
                    self.market.lose(f"no board message from the upstream for {self.silence_s:g} s", code)
                seen[code] = p.board_frames
            if self.client.frames == frames and self.client.connected.is_set():
                self.market.say(f"upstream silent for {self.silence_s:g} s: reconnecting")
                await self.client.reconnect()
            frames = self.client.frames
