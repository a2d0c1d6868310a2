"""Position: FIFO PnL against an independent reference, JST days, commission, SFD, snapshots."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from bfsx.account.orders import Fill
from bfsx.account.position import Position, jst_day, jst_day_start
from bfsx.bitflyer.timestamps import JST

T0 = datetime(2026, 9, 23, 12, 0, tzinfo=JST).timestamp()
_ids = iter(range(1, 10**9))


def fill(side: str, size: float, price: float, *, t: float = T0, commission: float = 0.0, sfd: float = 0.0,
         product: str = "FX_BTC_JPY") -> Fill:
    return Fill(exec_id=next(_ids), acceptance_id="JRF20260923-030000-000001", side=side, price=price,  # type: ignore[arg-type]
                size=size, commission=commission, sfd=sfd, time=t, product=product)


class ReferenceFifo:
    """Independent FIFO: exact fractions, lots as [side, price, remaining] (unsigned sizes)."""

    def __init__(self) -> None:
        self.lots: list[list[object]] = []
        self.realized = Fraction(0)

    def trade(self, side: str, size: float, price: float) -> None:
        q, p = Fraction(repr(size)), Fraction(repr(price))
        i = 0
        while q > 0 and i < len(self.lots):
            lot_side, lot_price, lot_q = self.lots[i]
            assert isinstance(lot_price, Fraction) and isinstance(lot_q, Fraction)
            if lot_side == side:
                break
            m = min(q, lot_q)
            self.realized += (p - lot_price) * m if lot_side == "BUY" else (lot_price - p) * m
            q -= m
            if m == lot_q:
                i += 1
            else:
                self.lots[i][2] = lot_q - m
        del self.lots[:i]
        if q > 0:
            self.lots.append([side, p, q])

    def net(self) -> Fraction:
        return sum((q if s == "BUY" else -q for s, _, q in self.lots), Fraction(0))  # type: ignore[misc]

    def cost(self) -> Fraction:
        return sum((p * q for _, p, q in self.lots), Fraction(0))  # type: ignore[operator,misc]


def test_hand_computed_fifo() -> None:
    pos = Position()
    pos.apply_fill(fill("BUY", 1.0, 100.0))
    pos.apply_fill(fill("BUY", 1.0, 110.0))
    assert pos.size == 2.0 and pos.average_price == 105.0
    realized = pos.apply_fill(fill("SELL", 1.5, 120.0))
    assert realized == 25.0  # (120-100)*1 + (120-110)*0.5
    assert pos.size == 0.5 and pos.average_price == 110.0 and pos.lots == [(Decimal("110.0"), Decimal("0.5"))]
    assert pos.unrealized(100.0) == -5.0
    # Through zero: close 0.5 long, open 1.5 short at 130.
    assert pos.apply_fill(fill("SELL", 2.0, 130.0)) == 10.0
    assert pos.size == -1.5 and pos.average_price == 130.0 and pos.unrealized(120.0) == 15.0
    assert pos.apply_fill(fill("BUY", 1.5, 125.0)) == 7.5
    assert pos.size == 0.0 and pos.average_price == 0.0 and pos.lots == [] and pos.unrealized(1e9) == 0.0
    assert pos.realized_pnl == 42.5 and pos.fills == 5


def test_decimal_inside_no_float_drift() -> None:
    pos = Position()
    for _ in range(3):
        pos.apply_fill(fill("BUY", 0.1, 100.0))
    pos.apply_fill(fill("SELL", 0.3, 100.0))
    assert pos.size == 0.0 and pos.exact_size == 0 and pos.lots == []


def test_random_sequences_match_reference() -> None:
    rng = random.Random(7)
    for _ in range(40):
        pos, ref = Position(), ReferenceFifo()
        cash = Fraction(0)
        for _ in range(rng.randint(1, 120)):
            side = rng.choice(("BUY", "SELL"))
            size = rng.randint(1, 300) / 1000
            price = float(rng.randint(9_000_000, 11_000_000))
            pos.apply_fill(fill(side, size, price))
            ref.trade(side, size, price)
            cash += (-1 if side == "BUY" else 1) * Fraction(repr(size)) * Fraction(repr(price))
            assert Fraction(pos.exact_size) == ref.net()
        mark = float(rng.randint(9_000_000, 11_000_000))
        assert pos.realized_pnl == pytest.approx(float(ref.realized), abs=1e-6)
        net = ref.net()
        if net:
            assert pos.average_price == pytest.approx(float(ref.cost() / abs(net)), rel=1e-12)
        # Independent of FIFO: realized + unrealized == cash flow + holdings marked at the price.
        total = cash + net * Fraction(repr(mark))
        assert pos.realized_pnl + pos.unrealized(mark) == pytest.approx(float(total), abs=1e-4)
        # Same lots (ours merges a lot into the previous one when the price repeats).
        merged: list[tuple[Fraction, Fraction]] = []
        for s, p, q in ref.lots:
            signed = q if s == "BUY" else -q
            if merged and merged[-1][0] == p:
                merged[-1] = (p, merged[-1][1] + signed)  # type: ignore[operator]
            else:
                merged.append((p, signed))  # type: ignore[arg-type]
        assert [(Fraction(p), Fraction(q)) for p, q in pos.lots] == merged


def test_jst_day_boundary() -> None:
    before = datetime(2026, 9, 23, 23, 59, 59, 999000, tzinfo=JST).timestamp()
    midnight = datetime(2026, 9, 24, 0, 0, tzinfo=JST).timestamp()
    assert jst_day(midnight) == jst_day(before) + 1
    assert jst_day_start(before) == datetime(2026, 9, 23, tzinfo=JST).timestamp()
    assert jst_day_start(midnight) == midnight
    pos = Position()
    pos.apply_fill(fill("BUY", 1.0, 100.0, t=before - 60))
    pos.apply_fill(fill("SELL", 0.5, 110.0, t=before))  # +5 on the 23rd
    pos.apply_fill(fill("SELL", 0.5, 90.0, t=midnight))  # -5 on the 24th
    assert pos.realized_today(before) == 5.0
    assert pos.realized_today(midnight) == -5.0
    assert pos.realized_today(midnight + 86400) == 0.0  # a new day starts at zero
    assert pos.realized_on(jst_day(before)) == 5.0 and pos.realized_pnl == 0.0
    # The day is the fill's time, not when it was applied: a late fill lands on its own day.
    pos.apply_fill(fill("BUY", 1.0, 100.0, t=midnight + 10))
    pos.apply_fill(fill("SELL", 1.0, 101.0, t=before - 1))
    assert pos.realized_today(before) == 6.0 and pos.realized_today(midnight) == -5.0


def test_daily_history_is_bounded() -> None:
    pos = Position(history_days=3)
    for day in range(10):
        pos.apply_fill(fill("BUY", 1.0, 100.0, t=T0 + day * 86400))
        pos.apply_fill(fill("SELL", 1.0, 100.0 + day, t=T0 + day * 86400))
    assert len(pos.snapshot()["daily"]) == 3
    assert pos.realized_today(T0 + 9 * 86400) == 9.0 and pos.realized_today(T0) == 0.0
    assert pos.realized_pnl == 45.0


def test_fx_commission_and_sfd() -> None:
    pos = Position()
    pos.apply_fill(fill("BUY", 1.0, 100.0, commission=0.5, sfd=-0.25))
    assert pos.size == 1.0 and pos.realized_pnl == -0.75
    assert pos.commission == 0.5 and pos.sfd == -0.25
    assert pos.apply_fill(fill("SELL", 1.0, 110.0, sfd=0.1)) == pytest.approx(10.1)
    assert pos.realized_pnl == pytest.approx(9.35)


def test_spot_commission_in_base_currency_reduces_the_position() -> None:
    pos = Position()  # inferred from the product: BTC_JPY is spot
    pos.apply_fill(fill("BUY", 0.01, 10_000_000.0, commission=0.000015, product="BTC_JPY"))
    # 0.01 bought, 0.000015 kept by the exchange: the balance moved by 0.009985.
    assert pos.exact_size == Decimal("0.009985")
    assert pos.commission == pytest.approx(150.0)  # valued at the fill price, in JPY
    assert pos.realized_pnl == pytest.approx(-150.0)
    assert pos.average_price == 10_000_000.0
    # Total PnL equals the true value change: -100,000 JPY cash + 0.009985 BTC at the mark.
    mark = 10_100_000.0
    assert pos.realized_pnl + pos.unrealized(mark) == pytest.approx(-100_000 + 0.009985 * mark)
    # Selling: the commission leaves on top of the sold size.
    pos.apply_fill(fill("SELL", 0.009, 10_200_000.0, commission=0.0000135, product="BTC_JPY"))
    assert pos.exact_size == Decimal("0.0009715")
    cash = -100_000 + 0.009 * 10_200_000
    assert pos.realized_pnl + pos.unrealized(mark) == pytest.approx(cash + 0.0009715 * mark)
    # Forced FX semantics: the commission is JPY and the size untouched.
    fx = Position(commission_in_base=False)
    fx.apply_fill(fill("BUY", 0.01, 10_000_000.0, commission=5.0, product="BTC_JPY"))
    assert fx.size == 0.01 and fx.commission == 5.0


def test_snapshot_round_trip_and_rebuild() -> None:
    pos = Position()
    fills = [fill("BUY", 0.3, 100.0), fill("BUY", 0.2, 105.0), fill("SELL", 0.4, 110.0, commission=1.0, sfd=-0.5)]
    for f in fills:
        pos.apply_fill(f)
    copy = Position()
    copy.load_snapshot(pos.snapshot())
    assert copy.snapshot() == pos.snapshot() and copy.lots == pos.lots
    assert copy.average_price == pos.average_price and copy.realized_today(T0) == pos.realized_today(T0)
    rebuilt = Position()
    rebuilt.rebuild(fills)
    assert rebuilt.snapshot() == pos.snapshot()
