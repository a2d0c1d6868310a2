"""This bot's position from its own fills: FIFO lots, average price, realized / unrealized PnL.

Decimal inside (``Decimal(repr(float))`` of the wire values, so 0.1 stays 0.1), floats out.

Accounting rules (documented here because PnL figures are only comparable when the rules are):

* **FIFO**: a fill first closes the oldest opposite lots; each matched piece realizes
  ``(fill price - lot price) x matched size`` (signed, so shorts work the same way); any remainder
  opens a new lot at the fill price.
* **Commission in quote currency** (FX / CFD: JPY, usually 0) is a realized cost.
* **Commission in base currency** (spot: bitFlyer charges BTC, e.g. 0.000015 BTC on a 0.01 BTC
  fill) is coins that leave the account. It is booked as those coins *sold at the fill price*
  through the same FIFO (so the position shrinks by exactly the commission and equals what the
  exchange balance moved by), and the proceeds of that sale are the fee: a realized cost of
  ``commission x fill price``. Total PnL (realized + unrealized) then equals the account's true
  value change, and average prices are not distorted by a zero-priced lot.
  ``commission`` totals are therefore always in quote currency.
* **SFD** is added to realized PnL as reported (signed: negative = paid, positive = granted).
* **Day**: a realization belongs to the JST day (00:00 JST boundary) of its fill's exchange time;
  :meth:`Position.realized_today` is that day's sum, net of commission and SFD.

``base_position`` (coins held outside the bots) is not here: the runtime subtracts it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from bfsx import clock
from bfsx.account.orders import Fill
from bfsx.bitflyer.products import get_product

SNAPSHOT_KEY = "position_snapshot"
"""Journal kv key under which :meth:`Journal.compact` stores :meth:`Position.snapshot` (JSON)."""

_ZERO = Decimal(0)
_JST_OFFSET = 9 * 3600
_DAY = 86400


def jst_day(ts: float) -> int:
    """The JST calendar day of epoch time ``ts``, as a day number (days since 1970-01-01 JST)."""
    return int((ts + _JST_OFFSET) // _DAY)


def jst_day_start(ts: float) -> float:
    """Epoch time of 00:00 JST of the day containing ``ts``."""
    return jst_day(ts) * _DAY - _JST_OFFSET


def _dec(x: float) -> Decimal:
    return Decimal(repr(x)) if x else _ZERO


class Position:
    """FIFO position of one bot on one product. ``commission_in_base``: None infers it per fill
    from the product (spot → base currency), True / False force it."""

    def __init__(self, *, commission_in_base: bool | None = None, history_days: int = 31) -> None:
        self.commission_in_base = commission_in_base
        self.history_days = max(1, history_days)
        self._lots: deque[tuple[Decimal, Decimal]] = deque()
        self._reset()

    def _reset(self) -> None:
        self._lots.clear()
        self._size = _ZERO  # signed sum of lot sizes
        self._cost = _ZERO  # signed sum of lot price x lot size
        self._realized = _ZERO
        self._commission = _ZERO
        self._sfd = _ZERO
        self._daily: dict[int, Decimal] = {}
        self.fills = 0
        """Fills applied (including those folded into a loaded snapshot)."""

    # ------------------------------------------------------------------ updates
    def apply_fill(self, fill: Fill) -> float:
        """Apply one fill; returns what it realized (net of its commission and SFD)."""
        price = _dec(fill.price)
        qty = _dec(fill.size)
        pnl = self._trade(price, qty if fill.side == "BUY" else -qty)
        commission = _dec(fill.commission)
        if commission:
            if self._base_commission(fill):
                pnl += self._trade(price, -commission)
                fee = commission * price
            else:
                fee = commission
            pnl -= fee
            self._commission += fee
        sfd = _dec(fill.sfd)
        if sfd:
            pnl += sfd
            self._sfd += sfd
        self._realized += pnl
        day = jst_day(fill.time)
        if day in self._daily:
            self._daily[day] += pnl
        else:
            self._daily[day] = pnl
            if len(self._daily) > self.history_days:
                for old in sorted(self._daily)[: len(self._daily) - self.history_days]:
                    del self._daily[old]
        self.fills += 1
        return float(pnl)

    def _base_commission(self, fill: Fill) -> bool:
        if self.commission_in_base is not None:
            return self.commission_in_base
        spec = get_product(fill.product) if fill.product else None
        return spec is not None and not spec.is_fx

    def _trade(self, price: Decimal, qty: Decimal) -> Decimal:
        """Move the position by signed ``qty`` at ``price``; returns the realized trade PnL."""
        pnl = _ZERO
        lots = self._lots
        while qty and lots and (lots[0][1] > 0) != (qty > 0):
            lot_price, lot_size = lots[0]
            if abs(qty) >= abs(lot_size):
                matched = lot_size
                lots.popleft()
            else:
                matched = -qty
                lots[0] = (lot_price, lot_size + qty)
            qty += matched
            pnl += (price - lot_price) * matched
            self._size -= matched
            self._cost -= lot_price * matched
        if qty:
            if lots and lots[-1][0] == price:
                lots[-1] = (price, lots[-1][1] + qty)  # same price: one lot, not many
            else:
                lots.append((price, qty))
            self._size += qty
            self._cost += price * qty
        return pnl

    def rebuild(self, fills: Iterable[Fill], kv: Mapping[str, str] | None = None) -> None:
        """Start over from a journal: its compaction snapshot (``kv[SNAPSHOT_KEY]``, if any), then
        its fills replayed in journal order."""
        self._reset()
        if kv and kv.get(SNAPSHOT_KEY):
            self.load_snapshot(orjson.loads(kv[SNAPSHOT_KEY]))
        for fill in fills:
            self.apply_fill(fill)

    # ------------------------------------------------------------------ reads (floats out)
    @property
    def size(self) -> float:
        """Signed position (buy > 0)."""
        return float(self._size)

    @property
    def exact_size(self) -> Decimal:
        """Signed position as a Decimal (for drift checks: no float rounding)."""
        return self._size

    @property
    def average_price(self) -> float:
        """Size-weighted price of the open lots; 0 when flat."""
        return float(self._cost / self._size) if self._size else 0.0

    @property
    def realized_pnl(self) -> float:
        """All realized PnL since the journal began (net of commission and SFD)."""
        return float(self._realized)

    @property
    def commission(self) -> float:
        """Total commission paid, in quote currency (spot base-currency fees valued at fill price)."""
        return float(self._commission)

    @property
    def sfd(self) -> float:
        """Total SFD, signed as reported (negative = paid)."""
        return float(self._sfd)

    @property
    def lots(self) -> list[tuple[Decimal, Decimal]]:
        """Open lots, oldest first: ``(price, signed size)``."""
        return list(self._lots)

    def realized_today(self, now: float | None = None) -> float:
        """Realized PnL of the current JST day (of ``now``, default the clock)."""
        return float(self._daily.get(jst_day(clock.time() if now is None else now), _ZERO))

    def realized_on(self, day: int) -> float:
        """Realized PnL of JST day number ``day`` (see :func:`jst_day`), if still kept."""
        return float(self._daily.get(day, _ZERO))

    def unrealized(self, price: float) -> float:
        """PnL of the open lots marked at ``price``."""
        return float(_dec(price) * self._size - self._cost)

    # ------------------------------------------------------------------ snapshot (journal compaction)
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: lots, totals, per-day realized, fill count (Decimals as strings)."""
        return {
            "lots": [[str(p), str(s)] for p, s in self._lots],
            "realized": str(self._realized),
            "commission": str(self._commission),
            "sfd": str(self._sfd),
            "daily": {str(d): str(v) for d, v in self._daily.items()},
            "fills": self.fills,
        }

    def load_snapshot(self, data: Mapping[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot`."""
        self._reset()
        for p, s in data.get("lots", ()):
            price, size = Decimal(p), Decimal(s)
            self._lots.append((price, size))
            self._size += size
            self._cost += price * size
        self._realized = Decimal(data.get("realized", "0"))
        self._commission = Decimal(data.get("commission", "0"))
        self._sfd = Decimal(data.get("sfd", "0"))
        self._daily = {int(d): Decimal(v) for d, v in data.get("daily", {}).items()}
        self.fills = int(data.get("fills", 0))

    def __repr__(self) -> str:
        return (
            f"Position(size={self._size}, average_price={self.average_price:.2f}, "
            f"realized={self._realized}, lots={len(self._lots)})"
        )
