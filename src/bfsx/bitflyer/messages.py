"""Payload shapes of the REST replies and realtime messages (docs/bitflyer.md).

TypedDicts cost nothing at run time: the hot path works on the dicts orjson returns, and these
types document and check what it reads. Numbers arrive as JSON numbers (int or float).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
ChildOrderState = Literal["ACTIVE", "COMPLETED", "CANCELED", "EXPIRED", "REJECTED"]
EventType = Literal["ORDER", "ORDER_FAILED", "CANCEL", "CANCEL_FAILED", "EXECUTION", "EXPIRE"]


class PriceLevel(TypedDict):
    price: float
    size: float


class Board(TypedDict):
    """getboard, lightning_board_snapshot_ and lightning_board_ (diff) payloads."""

    mid_price: float
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class Execution(TypedDict):
    """One public execution (REST getexecutions row and lightning_executions_ element)."""

    id: int
    side: str  # "BUY" / "SELL" taker side, "" during Itayose
    price: float
    size: float
    exec_date: str
    buy_child_order_acceptance_id: str
    sell_child_order_acceptance_id: str


class Ticker(TypedDict):
    product_code: str
    state: str
    timestamp: str
    tick_id: int
    best_bid: float
    best_ask: float
    best_bid_size: float
    best_ask_size: float
    total_bid_depth: float
    total_ask_depth: float
    market_bid_size: float
    market_ask_size: float
    ltp: float
    volume: float
    volume_by_product: float
    preopen_end: NotRequired[str | None]
    circuit_break_end: NotRequired[str | None]


class BoardState(TypedDict):
    health: str
    state: str
    data: NotRequired[dict[str, float]]


class ChildOrderEvent(TypedDict):
    """One element of a child_order_events message."""

    product_code: str
    child_order_id: str
    child_order_acceptance_id: str
    event_date: str
    event_type: EventType
    child_order_type: NotRequired[OrderType]
    expire_date: NotRequired[str]
    side: NotRequired[Side]
    price: NotRequired[float]
    size: NotRequired[float]
    reason: NotRequired[str]
    exec_id: NotRequired[int]
    commission: NotRequired[float]
    sfd: NotRequired[float]
    outstanding_size: NotRequired[float]


class SendChildOrder(TypedDict):
    """sendchildorder request body."""

    product_code: str
    child_order_type: OrderType
    side: Side
    size: float
    price: NotRequired[float]
    minute_to_expire: NotRequired[int]
    time_in_force: NotRequired[TimeInForce]


class ChildOrder(TypedDict):
    """getchildorders row. ACTIVE rows have ``id`` 0 and ``average_price`` 0."""

    id: int
    child_order_id: str
    product_code: str
    side: Side
    child_order_type: OrderType
    price: float
    average_price: float
    size: float
    child_order_state: ChildOrderState
    expire_date: str
    child_order_date: str
    child_order_acceptance_id: str
    outstanding_size: float
    cancel_size: float
    executed_size: float
    total_commission: float
    time_in_force: TimeInForce


class PrivateExecution(TypedDict):
    """/v1/me/getexecutions row."""

    id: int
    child_order_id: str
    side: Side
    price: float
    size: float
    commission: float
    exec_date: str
    child_order_acceptance_id: str


class PositionRow(TypedDict):
    """getpositions row: one open FX lot."""

    product_code: str
    side: Side
    price: float
    size: float
    commission: float
    swap_point_accumulate: float
    require_collateral: float
    open_date: str
    leverage: float
    pnl: float
    sfd: float


class Balance(TypedDict):
    currency_code: str
    amount: float
    available: float


class Collateral(TypedDict):
    collateral: float
    open_position_pnl: float
    require_collateral: float
    keep_rate: float
    margin_call_amount: NotRequired[float]
    margin_call_due_date: NotRequired[str | None]


class CollateralChange(TypedDict):
    """getcollateralhistory row: one change of the collateral, newest first."""

    id: int
    currency_code: str
    change: float  # JPY, + deposit / profit, - withdrawal / loss
    amount: float  # the collateral after this change
    reason_code: str  # e.g. CLEARING_COLL (realised CFD PnL)
    date: str
