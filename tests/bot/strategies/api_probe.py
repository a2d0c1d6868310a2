"""Strategy-API test strategy: registers every callback kind twice, once plain and once
``async def``, and counts the calls; ``initialize`` and ``parameters_changed`` are async."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import bfsx


class MyStrategy(bfsx.Strategy):
    async def initialize(self) -> None:
        await asyncio.sleep(0)  # a real await: initialize may be a coroutine
        self.calls: Counter[str] = Counter()
        self.fills: list[Any] = []
        self.last_candles: list[Any] = []
        self.changes: list[dict[str, Any]] = []
        self.every(0.05, self.every_plain)
        self.every(0.05, self.every_async)
        self.every(1, self.every_aligned, basetime=0.5)
        self.candles(1, 10, self.candles_plain)
        self.candles(1, 10, self.candles_async)
        self.candle_store = self.candles(1, 5)  # no callback: read .candles when needed
        self.on_executions(self.executions_plain)
        self.on_executions(self.executions_async)
        self.on_board(self.board_plain)
        self.on_board(self.board_async)
        self.on_fill(self.fill_plain)
        self.on_fill(self.fill_async)

    async def parameters_changed(self) -> None:
        await asyncio.sleep(0)
        self.changes.append(dict(self.parameters))

    def every_plain(self) -> None:
        self.calls["every_plain"] += 1

    async def every_async(self) -> None:
        await asyncio.sleep(0)
        self.calls["every_async"] += 1

    def every_aligned(self) -> None:
        self.calls["every_aligned"] += 1

    def candles_plain(self, candles: list[Any]) -> None:
        self.calls["candles_plain"] += 1
        self.last_candles = candles

    async def candles_async(self, candles: list[Any]) -> None:
        self.calls["candles_async"] += 1

    def executions_plain(self, batch: list[Any]) -> None:
        self.calls["executions_plain"] += 1

    async def executions_async(self, batch: list[Any]) -> None:
        await asyncio.sleep(0)
        self.calls["executions_async"] += 1

    def board_plain(self, board: Any) -> None:
        self.calls["board_plain"] += 1

    async def board_async(self, board: Any) -> None:
        self.calls["board_async"] += 1

    def fill_plain(self, fill: Any) -> None:
        self.calls["fill_plain"] += 1
        self.fills.append(fill)

    async def fill_async(self, fill: Any) -> None:
        await asyncio.sleep(0)
        self.calls["fill_async"] += 1
