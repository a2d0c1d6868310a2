"""What the simulated exchange is made of: orders, FX lots, fills and accounts, the integer units
they are kept in (satoshi, whole yen, 1e-8 yen) and the checks of an order body on its own.

Owns :class:`Order` (a resting or in-flight order and its getchildorders row), :class:`Lot`,
:class:`Fill`, :class:`CollateralChange` (a getcollateralhistory row), :class:`Account` (balances,
collateral and its history, lots, its orders and fills), the unit helpers (:func:`to_sats`,
:func:`btc`, :func:`jpy`), :class:`EngineError` (a synchronous refusal with its error body) and
:func:`parse_size` / :func:`parse_price` / :class:`OrderRequest`. Holds no exchange-wide state:
the engine (:mod:`bfsx.sim.engine`) changes these objects.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from bfsx.bitflyer import errors, timestamps
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.products import ProductSpec
from bfsx.sim.config import AccountConfig

SAT = 100_000_000
BUY = 1
SELL = -1
SIDE_NAME = {BUY: "BUY", SELL: "SELL"}
SIDE_OF = {"BUY": BUY, "SELL": SELL}


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


@dataclass(slots=True, frozen=True)
class CollateralChange:
    """One getcollateralhistory row: ``change`` and the collateral after it (``amount``), 1e-8 yen."""

    change_id: int
    change: int
    amount: int
    reason: str
    when: datetime

    def row(self) -> dict[str, Any]:
        """/v1/me/getcollateralhistory row."""
        return {
            "id": self.change_id,
            "currency_code": "JPY",
            "change": jpy(self.change),
            "amount": jpy(self.amount),
            "reason_code": self.reason,
            "date": timestamps.rest_ms(self.when),
        }


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

    def __init__(self, cfg: AccountConfig, history: int, collateral_history: int = 10_000) -> None:
        self.api_key = cfg.api_key
        self.api_secret = cfg.api_secret
        self.jpy = round(cfg.jpy * SAT)  # 1e-8 yen
        self.btc = to_sats(cfg.btc)
        self.collateral = round((cfg.jpy if cfg.collateral is None else cfg.collateral) * SAT)
        self.lots: dict[str, deque[Lot]] = {}
        self.collateral_changes: deque[CollateralChange] = deque(maxlen=collateral_history)  # oldest first
        self.loss_cuts = 0  # loss-cut rounds the exchange ran on this account
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
