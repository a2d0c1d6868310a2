"""The order desk: every order and cancel a bot sends goes through :class:`OrderDesk`.

Owns the pre-trade refusal gate and the order POST itself: an order is refused locally (a result
with a reason, never an exception) or its intent is journaled, then it is sent, and its outcome
goes to the :class:`~bfsx.account.orders.OrderTracker` (the one owner of order state: sent and
not yet answered, of unknown outcome, open, cancel pending). Reads the feed's connection, the
exchange health, the budget and the strategy config; writes nothing but orders, cancels, intents.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from bfsx import clock
from bfsx.account.orders import IntentState, Order, OrderIntent, OrderTracker
from bfsx.bitflyer.errors import ApiError, BitflyerError
from bfsx.bitflyer.messages import Side
from bfsx.bitflyer.rest import OrderNotPlaced
from bfsx.bitflyer.states import can_order
from bfsx.bot import resync
from bfsx.posserver.controls import FROZEN_PAUSE

if TYPE_CHECKING:
    from bfsx.account.journal import Journal
    from bfsx.account.position import Position
    from bfsx.bitflyer.budget import ApiBudget
    from bfsx.bitflyer.products import ProductSpec
    from bfsx.bitflyer.realtime import RealtimeClient
    from bfsx.bitflyer.rest import RestClient
    from bfsx.config import StrategyConfig, TradeConfig
    from bfsx.market.feed import MarketFeed
    from bfsx.market.health import HealthPoller
    from bfsx.posserver.client import PosServerClient

_SIZE_STEP = Decimal("0.00000001")


def _as_numbers(size: object, price: object) -> tuple[float, float | None] | str:
    """``(size, price)`` as floats, or why they are not numbers (a strategy passed a str, a bool...)."""
    for name, value in (("size", size), ("price", price)):
        if name == "price" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            return f"{name} must be a number, got {value!r}"
    return float(size), (None if price is None else float(price))  # type: ignore[arg-type]


class OrderDesk:
    """Sends this bot's orders and cancels. ``trade`` and ``strategy_config`` are replaced by the
    runtime on a live reload; ``stopping`` is set when the bot stops (only closing orders pass)."""

    def __init__(
        self,
        *,
        product: str,
        spec: ProductSpec,
        rest: RestClient,
        realtime: RealtimeClient,
        health: HealthPoller,
        feed: MarketFeed,
        budget: ApiBudget,
        tracker: OrderTracker,
        journal: Journal,
        position: Position,
        reconciler: resync.Reconciler,
        trade: TradeConfig,
        strategy_config: StrategyConfig,
        log: logging.Logger,
    ) -> None:
        self.product = product
        self.spec = spec
        self.rest = rest
        self.realtime = realtime
        self.health = health
        self.feed = feed
        self.budget = budget
        self.tracker = tracker
        self.journal = journal
        self.position = position
        self.reconciler = reconciler
        self.trade = trade
        self.strategy_config = strategy_config
        self.log = log
        self.posclient: PosServerClient | None = None
        self.stopping = False
        #: The mode the position server holds for this bot (``bfsx ctl``, a freeze, margin): "run",
        #: "pause" (no new order), "close-only" or "flatten" (only orders that reduce the position).
        self.control_mode = "run"
        self.control_reasons: tuple[str, ...] = ()
        self._min_size = float(spec.min_size)
        self._max_size = float(spec.max_size)
        self._sent_at: deque[float] = deque()  # send times in the last second (bounded by the rate cap)

    # ----------------------------------------------------------------- the refusal gate
    def refusal(self, side: Side, size: float, price: float | None = None, *, closing: bool = False) -> str | None:
        """Why a new order must not be sent now, or None. Cancels never come through here."""
        if self.stopping and not closing:
            return "bot is stopping"
        if closing and FROZEN_PAUSE in self.control_reasons:
            # A loss-cut or a hand flatten froze the market: the position this bot counts may be gone
            # from the exchange, and "closing" it would open the opposite one (a stop's close too).
            return "market frozen by the position server: bfsx ctl adopt / flatten / unfreeze first"
        if not size >= self._min_size:  # also NaN
            return f"size {size} below the minimum {self.spec.min_size}"
        if size > self._max_size:  # also +inf: e.g. a price passed as the size
            return f"size {size} above the maximum {self.spec.max_size}"
        if price is not None and not 0 < price < math.inf:  # e.g. best_bid read before the book existed
            return f"invalid price {price}"
        if not self.realtime.connected.is_set():
            return "realtime not connected (own fills would go unseen)"
        if not can_order(self.health.health, self.health.state, self.trade.trade_health):
            return f"exchange health {self.health.health} / {self.health.state}"
        if not closing:
            cfg = self.strategy_config
            mode = self.control_mode
            if mode == "pause":
                return f"paused by the position server ({', '.join(self.control_reasons) or 'bfsx ctl'})"
            if mode != "run" and not self.reduces(side, size):
                return f"{mode} by the position server ({', '.join(self.control_reasons) or 'bfsx ctl'})"
            if cfg.close_position and not self.reduces(side, size):
                return "close-only mode (close_position: true)"
            if cfg.in_no_trade():
                return "no-trade window"
            risk = self._risk(cfg, side, size, price)
            if risk is not None:
                return risk
        shared = self.posclient.account_budget if self.posclient is not None else None
        if shared is not None and shared.advice == "pause":
            return "account-wide API budget: pause"
        why = self.budget.order_refusal(size)
        if why is not None:
            return f"API budget: {why}"
        return None

    def _risk(self, cfg: StrategyConfig, side: Side, size: float, price: float | None) -> str | None:
        """The strategy yaml's pre-trade limits: order size, position with open orders, price band
        around the market, orders per second. Closing orders (stop, flatten) do not come here."""
        max_size = cfg.max_order_size if cfg.max_order_size is not None else self._min_size * 100
        if size > max_size:
            return f"size {size} above max_order_size {max_size:g}"
        max_pos = cfg.max_position if cfg.max_position is not None else self._min_size * 1000
        # The open orders on the side this one grows count as if filled: several resting orders
        # together must not be able to exceed the limit.
        pos = self.position.size
        grows = (pos if side == "BUY" else -pos) + self.tracker.outstanding(side) + size
        if grows > max_pos + 1e-9:
            return f"max_position {max_pos:g} (position {pos:+g} with open {side} orders)"
        ref = self.reference_price()
        if ref is None:
            return "market price unknown (no book or prints yet): nothing to check the order against"
        band = cfg.price_band
        if price is not None and abs(price - ref) > band * ref:
            return f"price {price:g} outside price_band {band:g} of the market {ref:g}"
        now = clock.monotonic()
        sent = self._sent_at
        while sent and now - sent[0] >= 1.0:
            sent.popleft()
        if len(sent) >= cfg.max_orders_per_second:
            return f"max_orders_per_second {cfg.max_orders_per_second}"
        return None

    def reference_price(self) -> float | None:
        """The market a new order is checked against: the book's mid when the strategy subscribes
        to the board (None until a snapshot after every (re)connect), else the last print or the
        ticker; None when nothing is known."""
        feed = self.feed
        if self.strategy_config.subscribe.board:
            mid = feed.book.mid_price if feed.book.ready else 0.0
            return mid or None
        return feed.executions.ltp or feed.ticker.ltp or None

    def reduces(self, side: Side, size: float) -> bool:
        """True when this order only reduces the bot's position."""
        pos = self.position.size
        return (pos > 0 and side == "SELL" and size <= pos + 1e-12) or (pos < 0 and side == "BUY" and size <= -pos + 1e-12)

    # ----------------------------------------------------------------- orders
    async def send_order(self, side: Side, size: float, price: float | None, *, closing: bool = False, **opts: Any) -> Order:
        """Refuse locally or send one child order; the result says which (never raises for a refusal
        or an exchange error)."""
        if type(size) is not float or (price is not None and type(price) is not float):
            checked = _as_numbers(size, price)  # an int, a Decimal, or a mistake (a str, None, a bool)
            if isinstance(checked, str):
                order = Order.new(self.product, side, 0.0, None)
                order.refuse(checked)
                self.log.info("order refused locally: %s %r @ %r: %s", side, size, price, checked)
                return order
            size, price = checked
        if round(size, 8) != size and math.isfinite(size):  # on the grid already: the hot path skips Decimal
            size = float(Decimal(repr(size)).quantize(_SIZE_STEP, rounding=ROUND_DOWN))
        order = Order.new(self.product, side, size, price)
        reason = self.refusal(side, size, price, closing=closing)
        if reason is not None:
            order.refuse(reason)
            self.log.info("order refused locally: %s %s @ %s: %s", side, size, price or "MARKET", reason)
            return order
        intent = OrderIntent.new(self.product, side, size, price)
        # Journaled before the POST: if the process dies before the reply is journaled, the restart
        # finds this intent OPEN and looks the order up, so the fills of an accepted order are not lost.
        self.journal.record_intent(intent)
        tracker = self.tracker
        tracker.sending()
        self._sent_at.append(clock.monotonic())
        self.reconciler.touch()
        tif = opts.get("time_in_force", "GTC")
        mte = opts.get("minute_to_expire", self.strategy_config.minute_to_expire)
        try:
            acc = await self.rest.send_child_order(
                self.product, side, size, price, time_in_force=tif, minute_to_expire=mte,
                known_ids=tracker.known_ids(),
            )
        except OrderNotPlaced as e:
            self.journal.close_intent(intent.intent_id, IntentState.NOT_PLACED)
            order.fail(f"not placed: {e}")
            self.log.warning("order not placed: %s %s @ %s: %s", side, size, price or "MARKET", e)
            return order
        except ApiError as e:
            if e.status == 0 and e.http_status >= 500:  # a gateway's error page: the order may be live
                tracker.add_intent(intent)
            else:
                self.journal.close_intent(intent.intent_id, IntentState.FAILED)
            order.fail(f"{e.status}: {e.message}")
            self.log.warning("order rejected: %s %s @ %s: %s", side, size, price or "MARKET", e.message)
            return order
        except BitflyerError as e:
            tracker.add_intent(intent)  # looked up again until its outcome is known
            order.fail(f"unknown outcome: {e}")
            self.log.error("order outcome unknown: %s %s @ %s: %s", side, size, price or "MARKET", e)
            return order
        except BaseException:
            tracker.add_intent(intent)  # cancelled mid-POST: the order may be live
            raise
        finally:
            tracker.reply_seen()
        order.acceptance_id = acc
        fills = tracker.accepted(order)
        self.reconciler.journal_and_count(fills, (order,), intent.intent_id)  # after parked events moved it on
        return order

    async def cancel_order(self, order_or_id: Order | str) -> bool:
        """Ask the exchange to cancel one order; False when the request failed."""
        acc = order_or_id if isinstance(order_or_id, str) else order_or_id.acceptance_id
        if not acc:
            return False
        if self.tracker.cancel_recently_sent(acc, resync.CANCEL_REPEAT_AFTER):
            return True  # accepted moments ago: its CANCEL event is on the way (the order audit checks)
        try:
            await self.rest.cancel_child_order(self.product, acceptance_id=acc)
        except BitflyerError as e:
            self.log.warning("cancel %s failed: %s", acc, e)
            return False
        self.tracker.cancel_accepted(acc)
        return True

    async def cancel_all(self) -> int:
        """Cancel every open order of this bot; the number of cancels accepted."""
        open_ids = [o.acceptance_id for o in self.tracker.open_orders if o.acceptance_id]
        results = await asyncio.gather(*(self.cancel_order(a) for a in open_ids))
        return sum(1 for r in results if r)

    async def close_position(self) -> Order | None:
        """A market order that flattens this bot's own position (None when already flat)."""
        pos = self.position.size
        if abs(pos) < self._min_size:
            return None
        return await self.send_order("SELL" if pos > 0 else "BUY", abs(pos), None, closing=True)

    async def send_correction(self, side: Side, size: float) -> None:
        """A drift-correcting market order (single-bot mode). Not registered in the tracker as an
        order: it moves the exchange toward the bot's own position, never the bot's position. Raises
        :class:`~bfsx.bitflyer.errors.BitflyerError` when it fails."""
        self.tracker.sending()  # an intent lookup meanwhile must know an order of this run is out
        try:
            await self.rest.send_child_order(self.product, side, size, None)
        finally:
            self.tracker.reply_seen()
