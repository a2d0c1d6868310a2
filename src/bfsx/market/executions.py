"""Recent public executions (prints): bounded history, last traded price, taker buy/sell volume."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from bfsx.bitflyer.messages import Execution


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
