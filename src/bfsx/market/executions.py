"""Recent public executions (prints): bounded history, last traded price, taker buy/sell volume."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from bfsx.bitflyer.messages import Execution
from bfsx.market.candles import epoch_second

_INF = math.inf
_SIDES = ("BUY", "SELL", "")
_last_stamp = ""  # the last exec_date found valid: the prints of one taker order share it


def _stamp_ok(stamp: object) -> bool:
    """A real date in the wire shape (the candles parse it): ``YYYY-MM-DDTHH:MM:SS[.digits][Z]``."""
    global _last_stamp
    if stamp == _last_stamp:
        return True
    if type(stamp) is not str:
        return False
    try:
        epoch_second(stamp)  # cached per minute
    except (ValueError, IndexError):
        return False
    tail = stamp[19:]
    if tail not in ("", "Z") and not (tail[0] == "." and tail[1:].rstrip("Z").isdecimal()):
        return False  # a fraction the candles would misread (".1e9" is 10^8 seconds)
    _last_stamp = stamp
    return True


def _print_ok(e: Execution) -> bool:
    try:
        return (0 < e["price"] < _INF and 0 < e["size"] < _INF and e["side"] in _SIDES
                and type(e["id"]) is int and _stamp_ok(e["exec_date"]))
    except (TypeError, KeyError):
        return False


def valid_prints(batch: object) -> list[Execution]:
    """The prints of a ``lightning_executions_`` message that have a finite price and size > 0, a
    side of BUY / SELL / "" (Itayose), an integer id and a real ``exec_date``: the message itself
    when all do (no copy), a filtered list otherwise, [] for a message that is not a list."""
    if type(batch) is not list:
        return []
    for e in batch:
        if not _print_ok(e):
            return [e for e in batch if _print_ok(e)]
    return batch


class Executions:
    """The last ``maxlen`` prints of one product, plus running totals.

    ``side`` on a print is the taker (aggressor) side; Itayose prints have ``side == ""`` and count
    only toward :attr:`volume`, not toward buy or sell volume.
    """

    __slots__ = ("batch_buy_volume", "batch_sell_volume", "batch_volume", "buy_volume", "count", "last_id", "ltp",
                 "prints", "sell_volume", "volume")

    def __init__(self, maxlen: int = 10_000) -> None:
        if maxlen <= 0:
            raise ValueError("Executions: maxlen must be > 0")
        #: The most recent prints, oldest first (bounded).
        self.prints: deque[Execution] = deque(maxlen=maxlen)
        #: Last traded price; 0.0 before the first print.
        self.ltp = 0.0
        #: Id of the newest print seen; 0 before the first.
        self.last_id = 0
        #: Cumulative taker volumes and print count since start.
        self.buy_volume = 0.0
        self.sell_volume = 0.0
        self.volume = 0.0
        self.count = 0
        #: Taker buy / sell and total volume of the last batch only.
        self.batch_buy_volume = 0.0
        self.batch_sell_volume = 0.0
        self.batch_volume = 0.0

    def apply(self, batch: Sequence[Execution]) -> None:
        """Add one ``lightning_executions_`` message (a list of prints, ids increasing)."""
        if not batch:
            return
        self.prints.extend(batch)
        buy = sell = volume = 0.0
        for e in batch:
            size = e["size"]
            volume += size
            side = e["side"]
            if side == "BUY":
                buy += size
            elif side == "SELL":
                sell += size
        last = batch[-1]
        self.ltp = last["price"]
        self.last_id = last["id"]
        self.batch_buy_volume = buy
        self.batch_sell_volume = sell
        self.batch_volume = volume
        self.buy_volume += buy
        self.sell_volume += sell
        self.volume += volume
        self.count += len(batch)

    def recent(self, n: int) -> list[Execution]:
        """The newest ``n`` prints, oldest first."""
        prints = self.prints
        if n >= len(prints):
            return list(prints)
        return [prints[i] for i in range(len(prints) - n, len(prints))]

    def __len__(self) -> int:
        return len(self.prints)

    @property
    def maxlen(self) -> int:
        m = self.prints.maxlen
        assert m is not None
        return m
