"""Recent public executions (prints): bounded history, last traded price, taker buy/sell volume."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from bfsx.bitflyer.messages import Execution
from bfsx.market.candles import epoch_second, taker_volumes

_INF = math.inf
_SIDES = frozenset(("BUY", "SELL", ""))  # an unhashable side raises TypeError: caught
_last_minute = ""  # the minute of the last exec_date found valid, parsed once
_NO_STAMP = object()  # equal to no exec_date (None included: a None date must still be checked)


def _stamp_ok(stamp: object) -> bool:
    """A real date in the wire shape (the candles parse it): ``YYYY-MM-DDTHH:MM:SS[.digits][Z]``."""
    global _last_minute
    if type(stamp) is not str:
        return False
    if stamp[:16] != _last_minute:
        try:
            epoch_second(stamp)  # the date and time exist
        except (ValueError, IndexError):
            return False
        _last_minute = stamp[:16]
    if stamp[16:17] != ":" or not stamp[17:19].isdecimal():
        return False
    tail = stamp[19:]
    # a fraction the candles would misread (".1e9" is 10^8 seconds) is no fraction
    return not tail or tail == "Z" or (tail[0] == "." and tail[1:].rstrip("Z").isdecimal())


def _print_ok(e: Execution) -> bool:
    try:
        return (0 < e["price"] < _INF and 0 < e["size"] < _INF and e["side"] in _SIDES
                and type(e["id"]) is int and _stamp_ok(e["exec_date"]))
    except (TypeError, KeyError):
        return False


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

    def apply(self, batch: Sequence[Execution]) -> Sequence[Execution]:
        """Add one ``lightning_executions_`` message (a list of prints, ids increasing) and return
        the prints taken: the message itself, or without its malformed prints (a price or size that
        is not a finite number > 0, a side other than BUY / SELL / "", an id that is not an integer,
        an ``exec_date`` that is not a real date in the wire shape), which change nothing."""
        if not isinstance(batch, list):
            return []
        buy = sell = volume = 0.0
        last_stamp: object = _NO_STAMP
        good = False
        try:
            for e in batch:  # the totals' own loop checks each print: one pass on the hot path
                size = e["size"]
                if not (0 < size < _INF and 0 < e["price"] < _INF and type(e["id"]) is int):
                    break
                stamp = e["exec_date"]
                if stamp != last_stamp:
                    if not _stamp_ok(stamp):
                        break
                    last_stamp = stamp
                volume += size
                side = e["side"]
                if side == "BUY":
                    buy += size
                elif side == "SELL":
                    sell += size
                elif side != "":
                    break
            else:
                good = True
        except (TypeError, KeyError):
            pass
        if not good:
            batch = [e for e in batch if _print_ok(e)]
            buy, sell, volume = taker_volumes(batch)
        if not batch:
            return batch
        self.prints.extend(batch)
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
        return batch

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
