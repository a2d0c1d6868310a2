"""Matching engine of the simulator: order lifecycle, matching and accounting.

Everything is integer: sizes in satoshi (1e-8 BTC), prices in whole yen, money in 1e-8 yen
(``price * sats``), so accounting is exact and ``exchange position`` checks never see float dust.
The engine is synchronous and loop-agnostic: the server calls it from its one event loop and it
reports what happened through an :class:`EngineListener` (public executions per product, private
child_order_events per account), batched once per operation so a taker sweep is one frame.

Owns the markets (:mod:`bfsx.sim.book`), the accounts (:mod:`bfsx.sim.model`), the id and serial
counters, the expiry heap, the batched output and the CFD margin rules (keep rate, loss-cut; see
:meth:`Engine.check_margin`). Answers to REST and realtime requests are shaped from this state by
:mod:`bfsx.sim.views`.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from bfsx.bitflyer import errors, ids, timestamps
from bfsx.bitflyer.collateral import CLEARING_COLL
from bfsx.bitflyer.errors import ErrorCode
from bfsx.bitflyer.products import get_product
from bfsx.sim.book import Book, Market, OrderRate
from bfsx.sim.config import SimConfig
from bfsx.sim.faults import Faults
from bfsx.sim.model import (
    BUY,
    SAT,
    SELL,
    SIDE_NAME,
    SIDE_OF,
    Account,
    CollateralChange,
    EngineError,
    Fill,
    Lot,
    Order,
    OrderRequest,
    btc,
    parse_price,
    parse_size,
)

MAX_MINUTE_TO_EXPIRE = 43_200
FIRST_EXEC_ID = 2_650_000_000
FIRST_PAGE_ID = 2_790_000_000
FIRST_COLLATERAL_ID = 41_000_000

#: getcollateralhistory reason codes. CLEARING_COLL (realised CFD PnL) is bitFlyer's; the two
#: others are the simulator's own names for a change made with ``POST /_sim/account``.
CLEARING = CLEARING_COLL
DEPOSIT = "DEPOSIT"
WITHDRAWAL = "WITHDRAWAL"


class EngineListener(Protocol):
    """Where the engine reports what happened (the server broadcasts it)."""

    def on_executions(self, product: str, rows: list[dict[str, Any]]) -> None: ...

    def on_child_events(self, account: Account, events: list[dict[str, Any]]) -> None: ...


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
        self.accounts: dict[str, Account] = {
            a.api_key: Account(a, config.account_history, config.margin.history) for a in config.accounts
        }
        self.commission_e8 = round(config.spot_commission_rate * SAT)
        self.last_exec_id = FIRST_EXEC_ID
        self._serial = 0
        self._child_serial = 0
        self._page_id = FIRST_PAGE_ID
        self._expiry: list[tuple[float, int, Order]] = []
        self.synthetic_filled: list[Order] = []  # drained by the flow every step
        self.user_flow: dict[str, int] = {}  # product -> signed sats users took since the last step
        # the stale-deletion fault's generator (read by views.take_diff), not the flow's
        self.diff_rng = random.Random((config.seed or 0) ^ 0xD1FF)
        self._pub: dict[str, list[dict[str, Any]]] = {}
        self._priv: dict[Account, list[dict[str, Any]]] = {}
        self.order_rate = OrderRate()
        self._collateral_id = FIRST_COLLATERAL_ID
        self._margin_dirty = False  # a CFD price or collateral moved since the last margin check
        self._cutting = False  # a loss-cut is placing its orders (no nested margin check)
        started = self.now()
        for acct in self.accounts.values():
            opening, acct.collateral = acct.collateral, 0
            if opening:  # the configured collateral is the first deposit, so the history sums to it
                self.change_collateral(acct, opening, DEPOSIT, started)

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
        """Run the margin check if a CFD price or a collateral moved, then hand the batched public
        executions and private events to the listener."""
        if self._margin_dirty and not self._cutting:
            self.check_margin()
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

    # ------------------------------------------------------------------ trades made elsewhere (sim.upstream)
    def external_execution(
        self,
        product: str,
        side: int,
        price: int,
        size: int,
        when: datetime,
        buy_acceptance_id: str,
        sell_acceptance_id: str,
        exec_id: int = 0,
        exec_date: str = "",
    ) -> int:
        """Record a trade another market printed (``bfsx sim --upstream``): public history, last
        price, volume and the batched public executions; no account changes. ``exec_id`` is kept
        when it is above every id given out so far, else the next id is used, so ids stay unique
        and rising however the upstream's ids and the users' fills interleave; ``exec_date``, when
        given, is the realtime row's stamp as the upstream wrote it (7 digits kept). Returns the id."""
        mkt = self.markets[product]
        xid = exec_id if exec_id > self.last_exec_id else self.last_exec_id + 1
        self.last_exec_id = xid
        mkt.history.append((xid, side, price, size, when, buy_acceptance_id, sell_acceptance_id))
        mkt.ltp = price
        mkt.volume += size
        if mkt.spec.is_fx:
            self._margin_dirty = True  # the mark moved
        self._pub.setdefault(product, []).append(
            {
                "id": xid,
                "side": SIDE_NAME.get(side, ""),
                "price": float(price),
                "size": btc(size),
                "exec_date": exec_date or timestamps.ws(when),
                "buy_child_order_acceptance_id": buy_acceptance_id,
                "sell_child_order_acceptance_id": sell_acceptance_id,
            }
        )
        return xid

    def fill_resting(self, order: Order, size: int, when: datetime) -> None:
        """Fill ``size`` of a user's resting ``order`` at its own price against a taker that traded
        elsewhere (an upstream print reached it): the book shrinks, the account and the public and
        private batches change as for any maker fill. The caller flushes."""
        mkt = self.markets[order.product]
        book = mkt.book
        size = min(size, order.remaining)
        if size <= 0 or not order.resting:
            return
        book.shrink(order, size)
        if order.remaining == 0:
            book.remove(order)
        taker = self.new_synthetic(order.product, -order.side, order.price, size, when)
        taker.remaining = 0
        self._trade(mkt, taker, order, order.price, size, when)

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
        keys: Iterable[int] = opp.prices() if side == BUY else reversed(opp.prices())
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
        if mkt.spec.is_fx:
            self._margin_dirty = True  # the mark may have moved, and every CFD account's open PnL with it
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
        realised = 0
        while left and lots and lots[0].side != side:
            lot = lots[0]
            q = min(lot.size, left)
            realised += (price - lot.price) * q * lot.side
            lot.size -= q
            left -= q
            if lot.size == 0:
                lots.popleft()
        if realised:  # one history row per fill that realised a profit or a loss
            self.change_collateral(acct, realised, CLEARING, when)
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
            if after * ref / self.config.margin.leverage > self.equity(account):
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

    # ------------------------------------------------------------------ accounting
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
        """Σ lot price × size / leverage (1e-8 yen): the CFD positions at their opening prices."""
        return round(
            sum(lot.price * lot.size for lots in account.lots.values() for lot in lots) / self.config.margin.leverage
        )

    def equity(self, account: Account) -> int:
        """Collateral + open PnL (1e-8 yen)."""
        return account.collateral + self.open_pnl(account)

    def keep_rate(self, account: Account) -> float:
        """(collateral + open PnL) / required collateral; 0.0 without a CFD position."""
        req = self.require_collateral(account)
        return self.equity(account) / req if req else 0.0

    def margin_call_amount(self, account: Account) -> int:
        """What a deposit must add (1e-8 yen) to bring the keep rate back to ``margin_call_ratio``;
        0 when it is not below it."""
        req = self.require_collateral(account)
        if not req:
            return 0
        return max(0, math.ceil(req * self.config.margin.margin_call_ratio) - self.equity(account))

    def change_collateral(self, account: Account, change: int, reason: str, when: datetime) -> None:
        """Add ``change`` (1e-8 yen) to the collateral and record it as a getcollateralhistory row."""
        account.collateral += change
        self._collateral_id += 1
        account.collateral_changes.append(CollateralChange(self._collateral_id, change, account.collateral, reason, when))
        self._margin_dirty = True

    def set_collateral(self, account: Account, amount: int) -> None:
        """``POST /_sim/account``: set the collateral to ``amount`` (1e-8 yen) as one deposit or
        withdrawal, then run the margin check at once (a withdrawal may loss-cut the account)."""
        change = amount - account.collateral
        if change:
            self.change_collateral(account, change, DEPOSIT if change > 0 else WITHDRAWAL, self.now())
        self._margin_dirty = True
        self.flush()

    # ------------------------------------------------------------------ margin: keep rate and loss-cut
    # When to check. On bitFlyer the keep rate follows every price move; here open PnL only moves when
    # the CFD market trades (the mark is the last trade price) or a collateral changes, and both already
    # end in flush(). So flush() checks when one of them happened since the last check: exact (no
    # window in which an account sits below the ratio while the market keeps trading, no dependence
    # on the timer schedule in tests) and cheap (only accounts holding CFD lots, a sum over their
    # lots, at most once per operation). A timer at the ticker interval would cost the same per
    # tick but react up to ``ticker_interval`` late and make "the loss-cut happened" timing-bound.
    def check_margin(self) -> int:
        """Loss-cut every account whose keep rate is below ``loss_cut_ratio``; returns how many."""
        self._margin_dirty = False
        if not self.is_open():
            return 0  # nothing trades in maintenance; the first trade after it checks again
        ratio = self.config.margin.loss_cut_ratio
        cut = 0
        for acct in self.accounts.values():
            if not any(acct.lots.values()):
                continue
            req = self.require_collateral(acct)
            if req and self.equity(acct) < ratio * req:
                self.loss_cut(acct)
                cut += 1
        return cut

    def loss_cut(self, account: Account) -> None:
        """Close every CFD position of ``account`` at market with the exchange's own orders: its open
        CFD orders are cancelled first (they could re-open it), then one MARKET order per product
        for the whole net position goes through the normal matching path, so the account's
        child_order_events carry CANCEL, ORDER and EXECUTION for orders no bot placed. What the
        book cannot fill expires; the next check cuts again if the keep rate is still below."""
        account.loss_cuts += 1
        self._cutting = True
        try:
            when = self.now()
            for order in [o for o in account.active.values() if self.markets[o.product].spec.is_fx]:
                self._cancel(order, when)
            for code in list(account.lots):
                net = account.net(code)
                if net:
                    self.place(self._exchange_order(account, code, SELL if net > 0 else BUY, abs(net), when))
        finally:
            self._cutting = False

    def _exchange_order(self, account: Account, product: str, side: int, size: int, when: datetime) -> Order:
        """A MARKET order the exchange places on ``account``'s behalf (accepted at once, no checks)."""
        serial = self._next_serial()
        self._child_serial += 1
        expire_after = MAX_MINUTE_TO_EXPIRE * self.config.minute_seconds
        return Order(
            serial,
            product,
            side,
            0,
            size,
            size,
            account,
            ids.acceptance_id(when, serial),
            child_order_id=ids.child_order_id(when, self._child_serial, self.markets[product].spec.is_fx),
            order_type="MARKET",
            accepted_at=when,
            expire_at=self.clock() + expire_after,
            expire_date=timestamps.rest_seconds(when + timedelta(seconds=expire_after)),
        )
