"""Executions: bounded history, ltp, taker volumes."""

from __future__ import annotations

from typing import Any

import pytest

from bfsx.market import Executions


def prints(start_id: int, sides: str, price: float = 100.0) -> list[dict[str, Any]]:
    side_of = {"B": "BUY", "S": "SELL", "-": ""}
    return [{"id": start_id + i, "side": side_of[c], "price": price + i, "size": 0.1 * (i + 1),
             "exec_date": "2026-09-23T03:31:27.0873222Z"} for i, c in enumerate(sides)]


def test_ltp_volumes_and_last_id() -> None:
    ex = Executions(maxlen=100)
    assert ex.ltp == 0.0 and ex.last_id == 0 and len(ex) == 0
    ex.apply(prints(10, "BBS"))
    assert ex.ltp == 102.0 and ex.last_id == 12
    assert ex.batch_buy_volume == pytest.approx(0.3) and ex.batch_sell_volume == pytest.approx(0.3)
    ex.apply(prints(13, "S-", price=200.0))  # an Itayose print counts only toward the total
    assert ex.ltp == 201.0 and ex.last_id == 14
    assert ex.batch_buy_volume == 0.0 and ex.batch_sell_volume == pytest.approx(0.1)
    assert ex.batch_volume == pytest.approx(0.3)
    assert ex.buy_volume == pytest.approx(0.3) and ex.sell_volume == pytest.approx(0.4)
    assert ex.volume == pytest.approx(0.9) and ex.count == 5
    ex.apply([])  # an empty message changes nothing
    assert ex.count == 5 and ex.ltp == 201.0


def test_history_is_bounded() -> None:
    ex = Executions(maxlen=1000)
    for i in range(500):
        ex.apply(prints(i * 7, "BSBSBSB"))
    assert len(ex) == 1000 and ex.maxlen == 1000 and ex.count == 3500
    assert ex.prints[0]["id"] == 3500 - 1000 and ex.prints[-1]["id"] == 3499
    assert [e["id"] for e in ex.recent(3)] == [3497, 3498, 3499]
    assert len(ex.recent(5000)) == 1000


def test_bad_maxlen() -> None:
    with pytest.raises(ValueError):
        Executions(maxlen=0)


def test_a_print_without_a_date_is_dropped_even_first_in_its_batch() -> None:
    # The date check is skipped for a print with the same date as the one before it; a first print
    # dated None once matched the loop's "no date yet" and reached the candles, which raised.
    ex = Executions()
    good = prints(2, "S")[0]
    taken = ex.apply([{**prints(1, "B")[0], "exec_date": None}, good])
    assert list(taken) == [good] and ex.count == 1 and ex.buy_volume == 0.0
