"""Matching engine, accounts, FX lots and spot balances of the simulator.

Everything is integer: sizes in satoshi (1e-8 BTC), prices in whole yen, money in 1e-8 yen
(``price * sats``), so accounting is exact and ``exchange position`` checks never see float dust.
The engine is synchronous and loop-agnostic: the server calls it from its one event loop and it
reports what happened through an :class:`EngineListener` (public executions per product, private
child_order_events per account), batched once per operation so a taker sweep is one frame.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from sortedcontainers import SortedDict

from bfsx.bitflyer import errors, ids, timestamps
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.products import ProductSpec, get_product
from bfsx.sim.config import AccountConfig, SimConfig
from bfsx.sim.faults import Faults

SAT = 100_000_000
BUY = 1
SELL = -1
SIDE_NAME = {BUY: "BUY", SELL: "SELL"}
SIDE_OF = {"BUY": BUY, "SELL": SELL}
MAX_MINUTE_TO_EXPIRE = 43_200
FIRST_EXEC_ID = 2_650_000_000
FIRST_PAGE_ID = 2_790_000_000


def to_sats(size: float) -> int:
    """BTC (as sent on the wire) to satoshi, rounding away float noise (0.1 + 0.2 style)."""
    return round(size * SAT)


def btc(sats: int) -> float:
    return sats / SAT


def jpy(e8: int) -> float:
    """1e-8 yen units to a JSON number (int when whole, as bitFlyer prints balances)."""
    q, r = divmod(e8, SAT)
    return float(q) if r == 0 else e8 / SAT


class EngineError(Exception):
    """A request the exchange refuses synchronously (HTTP error body)."""

    def __init__(self, code: ErrorCode, **fmt: Any) -> None:
        super().__init__(code.message.format(**fmt))
        self.code = code
        self.body = errors.error_body(code, **fmt)


# A float's binary rounding (0.1 + 0.2 -> 0.30000000000000004) is within about 1e-16 of the decimal
# the client meant; anything further from the size grid is a real extra decimal.
_FLOAT_NOISE = Decimal("1e-15")


def _number(raw: object) -> int | float:
    """A JSON number (bools are ints to Python, NaN / Infinity are not numbers on the wire), or -101."""
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise EngineError(errors.INVALID_PARAMETER)
    if isinstance(raw, float) and not math.isfinite(raw):
        raise EngineError(errors.INVALID_PARAMETER)
    return raw


def parse_size(raw: object, spec: ProductSpec, max_size: float) -> int:
    """An order size from the wire, in satoshi, or EngineError.

    -101 for anything that is not a positive finite number of at most ``max_size`` with at most
    ``spec.size_decimals`` decimals (float noise aside); -110 below the product's minimum.
    Checked in this order so that no huge or odd value ever reaches float or int arithmetic.
    """
    size = _number(raw)
    if size <= 0 or size > max_size:  # int vs float compares exactly, even for huge ints
        raise EngineError(errors.INVALID_PARAMETER)
    # repr() is the shortest text that reads back as this float: the number as the client wrote it
    exact = Decimal(repr(size)) if isinstance(size, float) else Decimal(size)
    steps = exact.scaleb(spec.size_decimals)
    whole = steps.to_integral_value(rounding=ROUND_HALF_EVEN)
    if abs(steps - whole) > steps * _FLOAT_NOISE:
        raise EngineError(errors.INVALID_PARAMETER)
    sats = int(whole.scaleb(8 - spec.size_decimals))
    if sats < int(spec.min_size.scaleb(8)):
        raise EngineError(errors.MIN_SIZE, min_size=str(spec.min_size))
    return sats


def parse_price(raw: object, max_price: float) -> int:
    """A LIMIT price from the wire, in whole yen, or EngineError: -106 when ≤ 0, -101 when not a
    finite number, above ``max_price`` or off the 1 JPY tick."""
    price = _number(raw)
    if price <= 0:
        raise EngineError(errors.PRICE_TOO_LOW)
    if price > max_price:
        raise EngineError(errors.INVALID_PARAMETER)
    if price != int(price):  # whole-yen tick on BTC/JPY (finite and bounded, so int() is safe)
        raise EngineError(errors.INVALID_PARAMETER)
    return int(price)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A sendchildorder body that passed every check that depends only on the body itself."""

    product: str
    order_type: str
    side: int
    time_in_force: str
    size: int  # satoshi
    price: int  # whole yen, 0 for MARKET
    minute_to_expire: int


class EngineListener(Protocol):
    """Where the engine reports what happened (the server broadcasts it)."""

    def on_executions(self, product: str, rows: list[dict[str, Any]]) -> None: ...

    def on_child_events(self, account: Account, events: list[dict[str, Any]]) -> None: ...


@dataclass(slots=True, eq=False)
class Order:
    """A resting or in-flight order; ``account is None`` marks synthetic liquidity."""

    serial: int  # time priority and tie-break
    product: str
    side: int
    price: int  # 0 for MARKET
    size: int
    remaining: int
    account: Account | None
    acceptance_id: str
    child_order_id: str = ""
    order_type: str = "LIMIT"
    time_in_force: str = "GTC"
    accepted_at: datetime | None = None
    expire_at: float = math.inf  # engine clock (monotonic seconds)
    expire_date: str = ""
    state: str = "ACTIVE"
    executed: int = 0
    notional: int = 0  # sum of price * sats, for average_price
    commission: int = 0  # sats
    cancel_size: int = 0
    page_id: int = 0
    resting: bool = False

    def row(self) -> dict[str, Any]:
        """getchildorders row."""
        avg = self.notional / self.executed if self.executed else 0.0
        return {
            "id": self.page_id if self.state != "ACTIVE" else 0,
            "child_order_id": self.child_order_id,
            "product_code": self.product,
            "side": SIDE_NAME[self.side],
            "child_order_type": self.order_type,
            "price": float(self.price),
            "average_price": float(round(avg)) if avg == round(avg) else avg,
            "size": btc(self.size),
            "child_order_state": self.state,
            "expire_date": self.expire_date,
            "child_order_date": timestamps.rest_seconds(self.accepted_at) if self.accepted_at else "",
            "child_order_acceptance_id": self.acceptance_id,
            "outstanding_size": btc(self.remaining if self.state == "ACTIVE" else 0),
            "cancel_size": btc(self.cancel_size),
            "executed_size": btc(self.executed),
            "total_commission": btc(self.commission),
            "time_in_force": self.time_in_force,
        }


@dataclass(slots=True)
class Lot:
    """One open FX lot (a getpositions row)."""

    side: int
    price: int
    size: int
    opened: datetime


@dataclass(slots=True)
class Fill:
    exec_id: int
    order: Order
    side: int
    price: int
    size: int
    commission: int
    when: datetime

    def row(self) -> dict[str, Any]:
        """/v1/me/getexecutions row."""
        return {
            "id": self.exec_id,
            "child_order_id": self.order.child_order_id,
            "side": SIDE_NAME[self.side],
            "price": self.price,
            "size": btc(self.size),
            "commission": btc(self.commission),
            "exec_date": timestamps.rest_ms(self.when),
            "child_order_acceptance_id": self.order.acceptance_id,
        }


class Account:
    """Balances (spot), collateral and lots (FX), orders and fills of one API key."""

    def __init__(self, cfg: AccountConfig, history: int) -> None:
        self.api_key = cfg.api_key
        self.api_secret = cfg.api_secret
        self.jpy = round(cfg.jpy * SAT)  # 1e-8 yen
        self.btc = to_sats(cfg.btc)
        self.collateral = round((cfg.jpy if cfg.collateral is None else cfg.collateral) * SAT)
        self.lots: dict[str, deque[Lot]] = {}
        self.active: dict[str, Order] = {}  # acceptance id -> order, insertion (time) ordered
        self.finished: deque[Order] = deque(maxlen=history)  # in page-id order
        self.fills: deque[Fill] = deque(maxlen=history)
        self._by_acceptance: dict[str, Order] = {}  # every order still known (active or in `finished`)
        self._by_child: dict[str, Order] = {}

    def __repr__(self) -> str:  # never print the secret
        return f"Account({self.api_key!r})"

    def track(self, order: Order) -> None:
        """Index a placed order for lookups by either id."""
        self._by_acceptance[order.acceptance_id] = order
        self._by_child[order.child_order_id] = order

    def retire(self, order: Order) -> None:
        """Move a finished order to the bounded history (forgetting the oldest one)."""
        self.active.pop(order.acceptance_id, None)
        if self.finished.maxlen is not None and len(self.finished) == self.finished.maxlen:
            old = self.finished[0]
            self._by_acceptance.pop(old.acceptance_id, None)
            self._by_child.pop(old.child_order_id, None)
        self.finished.append(order)
        self.track(order)

    def find(self, acceptance_id: str | None, child_order_id: str | None) -> Order | None:
        if acceptance_id:
            return self._by_acceptance.get(acceptance_id)
        if child_order_id:
            return self._by_child.get(child_order_id)
        return None

    def net(self, product: str) -> int:
        return sum(lot.side * lot.size for lot in self.lots.get(product, ()))


class Level:
    """FIFO queue of orders at one price."""

    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: deque[Order] = deque()
        self.total = 0


class Book:
    """Bids and asks as price -> Level, with the set of prices changed since the last diff."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.dirty_bids: set[int] = set()
        self.dirty_asks: set[int] = set()
        self.depth = {BUY: 0, SELL: 0}

    def side(self, side: int) -> SortedDict:
        return self.bids if side == BUY else self.asks

    def touch(self, side: int) -> int | None:
        """Best price on ``side`` (BUY = best bid)."""
        m = self.side(side)
        if not m:
            return None
        price: int = m.peekitem(-1 if side == BUY else 0)[0]
        return price

    def mark(self, side: int, price: int) -> None:
        (self.dirty_bids if side == BUY else self.dirty_asks).add(price)

    def add(self, order: Order) -> None:
        m = self.side(order.side)
        lvl = m.get(order.price)
        if lvl is None:
            lvl = m[order.price] = Level()
        lvl.orders.append(order)
        lvl.total += order.remaining
        self.depth[order.side] += order.remaining
        order.resting = True
        self.mark(order.side, order.price)

    def remove(self, order: Order) -> None:
        m = self.side(order.side)
        lvl: Level = m[order.price]
        lvl.orders.remove(order)
        lvl.total -= order.remaining
        self.depth[order.side] -= order.remaining
        order.resting = False
        if not lvl.orders:
            del m[order.price]
        self.mark(order.side, order.price)

    def shrink(self, order: Order, by: int) -> None:
        """Reduce a resting order in place (keeps its queue position)."""
        lvl: Level = self.side(order.side)[order.price]
        order.remaining -= by
        lvl.total -= by
        self.depth[order.side] -= by
        self.mark(order.side, order.price)

    def mid(self) -> float | None:
        b, a = self.touch(BUY), self.touch(SELL)
        if b is not None and a is not None:
            return (a + b) / 2
        one = b if a is None else a
        return None if one is None else float(one)

    def levels(self, side: int, depth: int | None = None) -> Iterator[tuple[int, int]]:
        m = self.side(side)
        keys: Iterable[int] = reversed(m.keys()) if side == BUY else m.keys()
        for n, price in enumerate(keys):
            if depth is not None and n >= depth:
                return
            yield price, m[price].total


@dataclass(slots=True)
class Market:
    """Per-product state: the book, last trade, public history and ticker counters."""

    spec: ProductSpec
    book: Book
    history: deque[tuple[int, int, int, int, datetime, str, str]]
    ltp: int = 0
    volume: int = 0
    tick_id: int = 0
    fair_mid: float = 0.0  # the synthetic flow's latent price
    extra: dict[str, Any] = field(default_factory=dict)


def _mid_json(mid: float | None) -> float:
    if mid is None:
        return 0.0
    return float(mid) if mid != int(mid) else float(int(mid))


class OrderRate:
    """Orders accepted per whole second, for the natural health: two counters, no per-order memory."""

    __slots__ = ("_current", "_previous", "_second")

    def __init__(self) -> None:
        self._second = 0
        self._current = 0
        self._previous = 0

    def hit(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._previous = self._current if second == self._second + 1 else 0
            self._current = 0
            self._second = second
        self._current += 1

    def last_second(self, now: float) -> int:
        """Orders in the last whole second before ``now``."""
        second = int(now)
        if second == self._second:
            return self._previous
        return self._current if second == self._second + 1 else 0


class Engine:
    """The exchange: books, accounts, order lifecycle, accounting.

    ``clock`` gives engine time (monotonic seconds) for expiry; ``wallclock`` the UTC datetime
    stamped on ids and events.
    """

    def __init__(self, config: SimConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults if faults is not None else Faults()
        self.listener: EngineListener | None = None
        self.clock = time.monotonic
        self.markets: dict[str, Market] = {}
        for code in config.products:
            spec = get_product(code)
            assert spec is not None  # validated by SimConfig
            self.markets[spec.code] = Market(spec, Book(), deque(maxlen=config.history))
        self.accounts: dict[str, Account] = {a.api_key: Account(a, config.account_history) for a in config.accounts}
        self.commission_e8 = round(config.spot_commission_rate * SAT)
        self.last_exec_id = FIRST_EXEC_ID
        self._serial = 0
        self._child_serial = 0
        self._page_id = FIRST_PAGE_ID
        self._expiry: list[tuple[float, int, Order]] = []
        self.synthetic_filled: list[Order] = []  # drained by the flow every step
        self.user_flow: dict[str, int] = {}  # product -> signed sats users took since the last step
        self._diff_rng = random.Random((config.seed or 0) ^ 0xD1FF)  # not the flow's generator
        self._pub: dict[str, list[dict[str, Any]]] = {}
        self._priv: dict[Account, list[dict[str, Any]]] = {}
        self.order_rate = OrderRate()

    # ------------------------------------------------------------------ helpers
    def now(self) -> datetime:
        return timestamps.now()

    def market(self, product: str | None, default: str = "BTC_JPY") -> Market:
        """The market for a (case-insensitive) product code, or -100."""
        code = (product or default).upper()
        m = self.markets.get(code)
        if m is None:
            raise EngineError(errors.INVALID_PRODUCT)
        return m

    def is_open(self) -> bool:
        return not self.faults.maintenance

    def board_state(self) -> str:
        return "CLOSED" if self.faults.maintenance else "RUNNING"

    def health(self) -> str:
        """The forced health if any; STOP in maintenance; else natural: from the orders accepted in
        the last whole second against ``busy_order_rates`` (never NO ORDER or STOP by itself)."""
        if self.faults.health is not None:
            return self.faults.health
        if self.faults.maintenance:
            return "STOP"
        rate = self.order_rate.last_second(self.clock())
        busy, very, super_ = self.config.busy_order_rates
        if rate < busy:
            return "NORMAL"
        return "BUSY" if rate < very else "VERY BUSY" if rate < super_ else "SUPER BUSY"

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def new_synthetic(self, product: str, side: int, price: int, size: int, when: datetime) -> Order:
        # the acceptance id is only built if the order ever trades (most synthetic quotes never do)
        return Order(self._next_serial(), product, side, price, size, size, None, "", accepted_at=when)

    # ------------------------------------------------------------------ output batching
    def _emit_private(self, account: Account, event: dict[str, Any]) -> None:
        self._priv.setdefault(account, []).append(event)

    def flush(self) -> None:
        """Hand the batched public executions and private events to the listener."""
        pub, priv = self._pub, self._priv
        self._pub, self._priv = {}, {}
        if self.listener is None:
            return
        for product, rows in pub.items():
            self.listener.on_executions(product, rows)
        for account, events in priv.items():
            self.listener.on_child_events(account, events)

    def _event(self, order: Order, event_type: str, when: datetime, **extra: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "product_code": order.product,
            "child_order_id": order.child_order_id,
            "child_order_acceptance_id": order.acceptance_id,
            "event_date": timestamps.ws(when),
            "event_type": event_type,
        }
        ev.update(extra)
        return ev

    # ------------------------------------------------------------------ matching
    def match(self, taker: Order, limit: int | None, when: datetime) -> None:
        """Fill ``taker`` against the opposite side in price-time priority, up to ``limit``."""
        mkt = self.markets[taker.product]
        book = mkt.book
        opp_side = -taker.side
        opp = book.side(opp_side)
        idx = 0 if taker.side == BUY else -1
        while taker.remaining and opp:
            price, lvl = opp.peekitem(idx)
            if limit is not None and (price > limit if taker.side == BUY else price < limit):
                break
            while taker.remaining and lvl.orders:
                maker: Order = lvl.orders[0]
                q = min(maker.remaining, taker.remaining)
                maker.remaining -= q
                lvl.total -= q
                book.depth[opp_side] -= q
                taker.remaining -= q
                if maker.remaining == 0:
                    lvl.orders.popleft()
                    maker.resting = False
                    if maker.account is None:
                        self.synthetic_filled.append(maker)
                self._trade(mkt, taker, maker, price, q, when)
            book.mark(opp_side, price)
            if not lvl.orders:
                del opp[price]

    def fillable(self, side: int, product: str, limit: int | None, size: int) -> int:
        """How much of ``size`` the opposite side could fill now, up to ``limit``."""
        book = self.markets[product].book
        got = 0
        for price, total in book.levels(-side):
            if limit is not None and (price > limit if side == BUY else price < limit):
                break
            got += total
            if got >= size:
                return size
        return got

    def would_self_trade(self, account: Account, product: str, side: int, limit: int | None, size: int) -> bool:
        """True when filling this order would reach one of the account's own resting orders."""
        if not any(o.product == product and o.side == -side and o.resting for o in account.active.values()):
            return False
        book = self.markets[product].book
        opp = book.side(-side)
        keys: Iterable[int] = opp.keys() if side == BUY else reversed(opp.keys())
        left = size
        for price in keys:
            if limit is not None and (price > limit if side == BUY else price < limit):
                return False
            for o in opp[price].orders:
                if o.account is account:
                    return True
                left -= o.remaining
                if left <= 0:
                    return False
        return False

    def _trade(self, mkt: Market, taker: Order, maker: Order, price: int, size: int, when: datetime) -> None:
        self.last_exec_id += 1
        xid = self.last_exec_id
        buy, sell = (taker, maker) if taker.side == BUY else (maker, taker)
        for o in (buy, sell):
            if not o.acceptance_id:
                o.acceptance_id = ids.acceptance_id(o.accepted_at or when, o.serial)
        mkt.history.append((xid, taker.side, price, size, when, buy.acceptance_id, sell.acceptance_id))
        mkt.ltp = price
        mkt.volume += size
        self._pub.setdefault(mkt.spec.code, []).append(
            {
                "id": xid,
                "side": SIDE_NAME[taker.side],
                "price": float(price),
                "size": btc(size),
                "exec_date": timestamps.ws(when),
                "buy_child_order_acceptance_id": buy.acceptance_id,
                "sell_child_order_acceptance_id": sell.acceptance_id,
            }
        )
        for o in (taker, maker):
            if o.account is not None:
                self._fill(mkt, o, xid, price, size, when)

    def _fill(self, mkt: Market, order: Order, xid: int, price: int, size: int, when: datetime) -> None:
        acct = order.account
        assert acct is not None
        commission = 0
        if mkt.spec.is_fx:
            self._fx_fill(acct, mkt.spec.code, order.side, price, size, when)
        else:
            commission = (size * self.commission_e8 + SAT // 2) // SAT
            if order.side == BUY:
                acct.jpy -= price * size
                acct.btc += size - commission
            else:
                acct.jpy += price * size
                acct.btc -= size + commission
        order.executed += size
        order.notional += price * size
        order.commission += commission
        acct.fills.append(Fill(xid, order, order.side, price, size, commission, when))
        self._emit_private(
            acct,
            self._event(
                order,
                "EXECUTION",
                when,
                exec_id=xid,
                side=SIDE_NAME[order.side],
                price=float(price),
                size=btc(size),
                commission=btc(commission),
                sfd=0.0,
                outstanding_size=btc(order.remaining),
            ),
        )
        if order.remaining == 0:
            self._finish(order, "COMPLETED")

    def _fx_fill(self, acct: Account, product: str, side: int, price: int, size: int, when: datetime) -> None:
        """FIFO netting: close opposite lots first (realised PnL to collateral), open the rest."""
        lots = acct.lots.setdefault(product, deque())
        left = size
        while left and lots and lots[0].side != side:
            lot = lots[0]
            q = min(lot.size, left)
            acct.collateral += (price - lot.price) * q * lot.side
            lot.size -= q
            left -= q
            if lot.size == 0:
                lots.popleft()
        if left:
            lots.append(Lot(side, price, left, when))

    def _finish(self, order: Order, state: str) -> None:
        order.state = state
        self._page_id += 1
        order.page_id = self._page_id
        acct = order.account
        if acct is not None:
            acct.retire(order)

    # ------------------------------------------------------------------ user orders
    def parse_order(self, body: Any) -> OrderRequest:
        """Check a sendchildorder body on its own (types, product, size, price, expiry); no state
        is read or changed, so a refused body leaves no trace. Raises EngineError."""
        if not isinstance(body, dict):
            raise EngineError(errors.INVALID_PARAMETER)
        mkt = self.market(body.get("product_code") if isinstance(body.get("product_code"), str) else "\0")
        order_type = str(body.get("child_order_type", "")).upper()
        side = SIDE_OF.get(str(body.get("side", "")).upper())
        tif = str(body.get("time_in_force") or "GTC").upper()
        if order_type not in ("LIMIT", "MARKET") or side is None or tif not in ("GTC", "IOC", "FOK"):
            raise EngineError(errors.INVALID_PARAMETER)
        size = parse_size(body.get("size"), mkt.spec, self.config.max_order_size)
        price = parse_price(body.get("price"), self.config.max_order_price) if order_type == "LIMIT" else 0
        mte = body.get("minute_to_expire", MAX_MINUTE_TO_EXPIRE)
        if mte is None:
            mte = MAX_MINUTE_TO_EXPIRE
        if not isinstance(mte, int) or isinstance(mte, bool) or not 1 <= mte <= MAX_MINUTE_TO_EXPIRE:
            raise EngineError(errors.INVALID_PARAMETER)
        return OrderRequest(mkt.spec.code, order_type, side, tif, size, price, mte)

    def accept(self, account: Account, body: dict[str, Any] | OrderRequest) -> Order:
        """Validate a sendchildorder body (or take one :meth:`parse_order` already checked) against
        the market and the account; return the accepted (not yet placed) order or raise EngineError."""
        req = body if isinstance(body, OrderRequest) else self.parse_order(body)
        mkt = self.markets[req.product]
        order_type, side, tif, size, price, mte = (
            req.order_type, req.side, req.time_in_force, req.size, req.price, req.minute_to_expire
        )
        if not self.is_open():
            raise EngineError(errors.MARKET_CLOSED)
        if self.health() in ("NO ORDER", "STOP"):
            raise EngineError(errors.OVERLOAD)
        if self.would_self_trade(account, mkt.spec.code, side, price or None, size):
            raise EngineError(errors.SELF_TRADE)
        if self.config.funds_failure == "http":
            reason = self.funds_problem(account, mkt, side, price or None, size)
            if reason is not None:
                raise EngineError(reason)
        when = self.now()
        serial = self._next_serial()
        self._child_serial += 1
        self.order_rate.hit(self.clock())
        expire_after = mte * self.config.minute_seconds
        return Order(
            serial,
            mkt.spec.code,
            side,
            price,
            size,
            size,
            account,
            ids.acceptance_id(when, serial),
            child_order_id=ids.child_order_id(when, self._child_serial, mkt.spec.is_fx),
            order_type=order_type,
            time_in_force=tif,
            accepted_at=when,
            expire_at=self.clock() + expire_after,
            expire_date=timestamps.rest_seconds(when + timedelta(seconds=expire_after)),
        )

    def funds_problem(self, account: Account, mkt: Market, side: int, limit: int | None, size: int) -> ErrorCode | None:
        """Why this order cannot be afforded (-200 spot funds, -205 FX margin), or None."""
        book = mkt.book
        ref: int = limit if limit is not None else (book.touch(-side) or int(mkt.fair_mid) or mkt.ltp)
        if mkt.spec.is_fx:
            code = mkt.spec.code
            net = account.net(code)
            open_buy = sum(o.remaining for o in account.active.values() if o.product == code and o.side == BUY)
            open_sell = sum(o.remaining for o in account.active.values() if o.product == code and o.side == SELL)
            before = max(max(0, net + open_buy), max(0, -net + open_sell))
            after = max(
                max(0, net + open_buy + (size if side == BUY else 0)),
                max(0, -net + open_sell + (size if side == SELL else 0)),
            )
            if after <= before:
                return None  # reduces or keeps exposure: no extra margin needed
            equity = account.collateral + self.open_pnl(account)
            if after * ref / self.config.fx_leverage > equity:
                return errors.MARGIN_INSUFFICIENT
            return None
        if side == BUY:
            cost = ref * size if limit is not None else self._market_cost(mkt, size)
            if cost > self.available_jpy(account):
                return errors.INSUFFICIENT_FUNDS
        else:
            need = size + (size * self.commission_e8 + SAT // 2) // SAT
            if need > self.available_btc(account):
                return errors.INSUFFICIENT_FUNDS
        return None

    def _market_cost(self, mkt: Market, size: int) -> int:
        cost, left = 0, size
        for price, total in mkt.book.levels(SELL):
            q = min(total, left)
            cost += price * q
            left -= q
            if not left:
                break
        return cost + left * (mkt.ltp or int(mkt.fair_mid))

    def available_jpy(self, account: Account) -> int:
        locked = sum(
            o.price * o.remaining
            for o in account.active.values()
            if o.side == BUY and not self.markets[o.product].spec.is_fx
        )
        return account.jpy - locked

    def available_btc(self, account: Account) -> int:
        locked = sum(
            o.remaining + (o.remaining * self.commission_e8 + SAT // 2) // SAT
            for o in account.active.values()
            if o.side == SELL and not self.markets[o.product].spec.is_fx
        )
        return account.btc - locked

    def place(self, order: Order) -> None:
        """Place an accepted order: ORDER (or ORDER_FAILED), matching, rest / EXPIRE; then flush."""
        acct = order.account
        assert acct is not None
        when = self.now()
        mkt = self.markets[order.product]
        limit = order.price or None
        failure: str | None = None
        if not self.is_open():
            failure = errors.MARKET_CLOSED.message
        elif self.would_self_trade(acct, order.product, order.side, limit, order.size):
            failure = errors.SELF_TRADE.message
        else:
            problem = self.funds_problem(acct, mkt, order.side, limit, order.size)
            if problem is not None:
                failure = problem.message
        if failure is not None:
            self._finish(order, "REJECTED")
            self._emit_private(acct, self._event(order, "ORDER_FAILED", when, reason=failure))
            self.flush()
            return
        acct.active[order.acceptance_id] = order
        acct.track(order)
        self._emit_private(
            acct,
            self._event(
                order,
                "ORDER",
                when,
                child_order_type=order.order_type,
                side=SIDE_NAME[order.side],
                price=float(order.price),
                size=btc(order.size),
                expire_date=order.expire_date,
            ),
        )
        if order.time_in_force == "FOK" and self.fillable(order.side, order.product, limit, order.size) < order.size:
            self._expire(order, when)
        else:
            before = order.remaining
            self.match(order, limit, when)
            taken = before - order.remaining
            if taken:  # the flow moves the fair mid by the user's taking volume (price impact)
                self.user_flow[order.product] = self.user_flow.get(order.product, 0) + order.side * taken
            if order.remaining:
                if order.order_type == "MARKET" or order.time_in_force != "GTC":
                    self._expire(order, when)
                else:
                    mkt.book.add(order)
                    self._schedule_expiry(order)
        self.flush()

    def _schedule_expiry(self, order: Order) -> None:
        heap = self._expiry
        heapq.heappush(heap, (order.expire_at, order.serial, order))
        if len(heap) > 1024 and len(heap) > 4 * sum(len(a.active) for a in self.accounts.values()):
            # finished orders linger until their (30-day) expiry time: drop them so the heap stays bounded
            self._expiry = [e for e in heap if e[2].state == "ACTIVE"]
            heapq.heapify(self._expiry)

    def _expire(self, order: Order, when: datetime) -> None:
        if order.resting:
            self.markets[order.product].book.remove(order)
        order.cancel_size = order.remaining
        self._finish(order, "EXPIRED")
        assert order.account is not None
        self._emit_private(order.account, self._event(order, "EXPIRE", when))

    def expire_due(self, now: float | None = None) -> int:
        """Expire resting orders whose minute_to_expire has passed; returns how many."""
        t = self.clock() if now is None else now
        n = 0
        when: datetime | None = None
        while self._expiry and self._expiry[0][0] <= t:
            _, _, order = heapq.heappop(self._expiry)
            if order.state != "ACTIVE":
                continue
            when = when or self.now()
            self._expire(order, when)
            n += 1
        if n:
            self.flush()
        return n

    def cancel(self, account: Account, product: str, acceptance_id: str | None, child_order_id: str | None) -> None:
        """cancelchildorder: CANCEL for a live order, CANCEL_FAILED for a finished one, nothing if unknown."""
        order = account.find(acceptance_id, child_order_id)
        if order is None or order.product != product.upper():
            return
        when = self.now()
        if order.state == "ACTIVE":
            self._cancel(order, when)
        else:
            self._emit_private(account, self._event(order, "CANCEL_FAILED", when))
        self.flush()

    def _cancel(self, order: Order, when: datetime) -> None:
        if order.resting:
            self.markets[order.product].book.remove(order)
        order.cancel_size = order.remaining
        self._finish(order, "CANCELED")
        assert order.account is not None
        self._emit_private(order.account, self._event(order, "CANCEL", when))

    def cancel_all(self, account: Account, product: str) -> None:
        code = product.upper()
        when = self.now()
        for order in [o for o in account.active.values() if o.product == code]:
            self._cancel(order, when)
        self.flush()

    # ------------------------------------------------------------------ views
    def open_pnl(self, account: Account, product: str | None = None) -> int:
        total = 0
        for code, lots in account.lots.items():
            if product is not None and code != product:
                continue
            mkt = self.markets[code]
            mark = mkt.ltp or int(mkt.fair_mid)
            total += sum((mark - lot.price) * lot.size * lot.side for lot in lots)
        return total

    def require_collateral(self, account: Account) -> int:
        return round(
            sum(lot.price * lot.size for lots in account.lots.values() for lot in lots) / self.config.fx_leverage
        )

    def board(self, product: str, depth: int | None = None, *, ws: bool = False) -> dict[str, Any]:
        """getboard / snapshot payload (``ws`` prints prices as floats, like the realtime feed)."""
        book = self.markets[product].book
        conv: Any = float if ws else int
        return {
            "mid_price": _mid_json(book.mid()) if ws else _rest_mid(book.mid()),
            "bids": [{"price": conv(p), "size": btc(s)} for p, s in book.levels(BUY, depth)],
            "asks": [{"price": conv(p), "size": btc(s)} for p, s in book.levels(SELL, depth)],
        }

    def take_diff(self, product: str) -> dict[str, Any] | None:
        """The levels changed since the last call (size = new total, 0 = gone), or None."""
        book = self.markets[product].book
        if not book.dirty_bids and not book.dirty_asks:
            return None
        stale = self.config.market.stale_deletions
        bids = [{"price": float(p), "size": btc(_total(book.bids, p))} for p in sorted(book.dirty_bids, reverse=True)]
        asks = [{"price": float(p), "size": btc(_total(book.asks, p))} for p in sorted(book.dirty_asks)]
        if stale > 0:  # a missed deletion leaves a stale level until the next snapshot
            bids = [x for x in bids if x["size"] or self._diff_rng.random() >= stale]
            asks = [x for x in asks if x["size"] or self._diff_rng.random() >= stale]
        book.dirty_bids.clear()
        book.dirty_asks.clear()
        return {"mid_price": _mid_json(book.mid()), "bids": bids, "asks": asks}

    def ticker(self, product: str, *, ws: bool = False) -> dict[str, Any]:
        mkt = self.markets[product]
        book = mkt.book
        mkt.tick_id += 1
        bb, ba = book.touch(BUY), book.touch(SELL)
        when = self.now()
        out: dict[str, Any] = {
            "product_code": product,
            "state": self.board_state(),
            "timestamp": timestamps.ws(when) if ws else timestamps.rest_ms(when),
            "tick_id": mkt.tick_id,
            "best_bid": float(bb or 0),
            "best_ask": float(ba or 0),
            "best_bid_size": btc(book.bids[bb].total) if bb is not None else 0.0,
            "best_ask_size": btc(book.asks[ba].total) if ba is not None else 0.0,
            "total_bid_depth": btc(book.depth[BUY]),
            "total_ask_depth": btc(book.depth[SELL]),
            "market_bid_size": 0.0,
            "market_ask_size": 0.0,
            "ltp": float(mkt.ltp),
            "volume": btc(mkt.volume),
            "volume_by_product": btc(mkt.volume),
        }
        if ws:
            out["preopen_end"] = None
            out["circuit_break_end"] = None
        return out

    def public_executions(
        self, product: str, count: int = 100, before: int | None = None, after: int | None = None
    ) -> list[dict[str, Any]]:
        """getexecutions rows, newest first, ids in (after, before)."""
        out: list[dict[str, Any]] = []
        for xid, side, price, size, when, b, s in reversed(self.markets[product].history):
            if before is not None and xid >= before:
                continue
            if after is not None and xid <= after:
                break
            out.append(
                {
                    "id": xid,
                    "side": SIDE_NAME[side],
                    "price": price,
                    "size": btc(size),
                    "exec_date": timestamps.rest_ms(when),
                    "buy_child_order_acceptance_id": b,
                    "sell_child_order_acceptance_id": s,
                }
            )
            if len(out) >= count:
                break
        return out

    def child_orders(
        self,
        account: Account,
        product: str,
        count: int = 100,
        before: int | None = None,
        after: int | None = None,
        state: str | None = None,
        child_order_id: str | None = None,
        acceptance_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """getchildorders rows, newest first. ACTIVE rows (id 0) come first and are left out
        when paging by ``before``/``after`` (their id is not assigned yet)."""
        paging = before is not None or after is not None
        rows: list[dict[str, Any]] = []
        actives = [] if paging else sorted(account.active.values(), key=lambda o: -o.serial)
        for o in itertools.chain(actives, reversed(account.finished)):
            if o.product != product:
                continue
            if state and o.state != state.upper():
                continue
            if child_order_id and o.child_order_id != child_order_id:
                continue
            if acceptance_id and o.acceptance_id != acceptance_id:
                continue
            if before is not None and o.page_id >= before:
                continue
            if after is not None and o.page_id <= after:
                continue
            rows.append(o.row())
            if len(rows) >= count:
                break
        return rows

    def my_executions(
        self,
        account: Account,
        product: str,
        count: int = 100,
        before: int | None = None,
        after: int | None = None,
        child_order_id: str | None = None,
        acceptance_id: str | None = None,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for f in reversed(account.fills):
            if f.order.product != product:
                continue
            if before is not None and f.exec_id >= before:
                continue
            if after is not None and f.exec_id <= after:
                break
            if child_order_id and f.order.child_order_id != child_order_id:
                continue
            if acceptance_id and f.order.acceptance_id != acceptance_id:
                continue
            rows.append(f.row())
            if len(rows) >= count:
                break
        return rows

    def positions(self, account: Account, product: str) -> list[dict[str, Any]]:
        mkt = self.markets[product]
        mark = mkt.ltp or int(mkt.fair_mid)
        lev = self.config.fx_leverage
        return [
            {
                "product_code": product,
                "side": SIDE_NAME[lot.side],
                "price": lot.price,
                "size": btc(lot.size),
                "commission": 0,
                "swap_point_accumulate": 0,
                "require_collateral": jpy(round(lot.price * lot.size / lev)),
                "open_date": timestamps.rest_ms(lot.opened),
                "leverage": int(lev) if lev == int(lev) else lev,
                "pnl": jpy((mark - lot.price) * lot.size * lot.side),
                "sfd": 0,
            }
            for lot in account.lots.get(product, ())
        ]

    def balance(self, account: Account) -> list[dict[str, Any]]:
        return [
            {"currency_code": "JPY", "amount": jpy(account.jpy), "available": jpy(self.available_jpy(account))},
            {"currency_code": "BTC", "amount": btc(account.btc), "available": btc(self.available_btc(account))},
        ]

    def collateral(self, account: Account) -> dict[str, Any]:
        pnl = self.open_pnl(account)
        req = self.require_collateral(account)
        keep = (account.collateral + pnl) / req if req else 0.0
        return {
            "collateral": jpy(account.collateral),
            "open_position_pnl": jpy(pnl),
            "require_collateral": jpy(req),
            "keep_rate": round(keep, 4),
            "margin_call_amount": 0,
            "margin_call_due_date": None,
        }

    def collateral_accounts(self, account: Account) -> list[dict[str, Any]]:
        return [{"currency_code": "JPY", "amount": jpy(account.collateral)}, {"currency_code": "BTC", "amount": 0.0}]

    def state(self) -> dict[str, Any]:
        """GET /_sim/state: markets, accounts (balances, collateral, open orders, positions)."""
        accounts: dict[str, Any] = {}
        for key, acct in self.accounts.items():
            positions: dict[str, Any] = {}
            for code, mkt in self.markets.items():
                if mkt.spec.is_fx:
                    positions[code] = {"net": btc(acct.net(code)), "lots": self.positions(acct, code)}
                else:
                    positions[code] = {"net": btc(acct.btc), "lots": []}
            accounts[key] = {
                "balances": {b["currency_code"]: b for b in self.balance(acct)},
                "collateral": self.collateral(acct),
                "open_orders": [o.row() for o in acct.active.values()],
                "positions": positions,
                "executions": len(acct.fills),
            }
        markets = {}
        for code, mkt in self.markets.items():
            book = mkt.book
            markets[code] = {
                "best_bid": book.touch(BUY),
                "best_ask": book.touch(SELL),
                "mid_price": book.mid(),
                "fair_mid": mkt.fair_mid,
                "ltp": mkt.ltp,
                "volume": btc(mkt.volume),
                "levels": [len(book.bids), len(book.asks)],
            }
        return {
            "last_execution_id": self.last_exec_id,
            "board_state": self.board_state(),
            "health": self.health(),
            "markets": markets,
            "accounts": accounts,
        }


def _total(m: SortedDict, price: int) -> int:
    lvl: Level | None = m.get(price)
    return lvl.total if lvl is not None else 0


def _rest_mid(mid: float | None) -> float | int:
    if mid is None:
        return 0
    return int(mid) if mid == int(mid) else mid
