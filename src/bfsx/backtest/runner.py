"""One backtest run: the unchanged strategy in the live :class:`~bfsx.bot.runtime.BotRuntime`, on a
virtual clock, against the simulator's engine.

Owns :class:`BacktestSettings` (what a run is given) and :func:`run_backtest` (build the clock,
the loop, the engine, the market, the transport and the runtime; run to the end of the data; build
the report). What is swapped against a live bot: the transport (``exchange.BacktestRest`` /
``BacktestRealtime`` instead of HTTP and websocket) and the clock (``bfsx.clock.install`` and
``vloop.VirtualLoop``). The order desk with its risk checks, the order tracker, the reconciler, the
journal, the position and the strategy callbacks are the live code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import SecretStr

from bfsx import clock
from bfsx.backtest.exchange import BacktestEngine, BacktestRealtime, BacktestRest, Latency, backtest_account
from bfsx.backtest.market import QueueModel, ReplayMarket, SyntheticMarket
from bfsx.backtest.report import Collector, build_report
from bfsx.backtest.vloop import VirtualLoop
from bfsx.bitflyer import channels
from bfsx.bitflyer.products import get_product
from bfsx.bitflyer.realtime import RealtimeClient
from bfsx.bitflyer.rest import RestClient
from bfsx.bitflyer.timestamps import JST
from bfsx.bot.loader import load_strategy_class
from bfsx.bot.runtime import BotRuntime
from bfsx.config import StrategyConfig, TradeConfig, load_strategy_config
from bfsx.errors import UserError
from bfsx.record.format import Frame, Record
from bfsx.record.reader import read_recordings
from bfsx.sim.config import MarketConfig, SimConfig

#: The synthetic market's first instant: a fixed date (never the wall clock: same inputs, same
#: report), a Monday 09:00 JST, away from the daily maintenance window.
SYNTHETIC_START = datetime(2026, 1, 5, 9, 0, tzinfo=JST)
DEFAULT_SYNTHETIC_LATENCY_MS = 30.0
DEFAULT_ADVERSE_S = 5.0
DEFAULT_SAMPLE_INTERVAL_S = 1.0


@dataclass
class BacktestSettings:
    """Everything one run depends on (and nothing else: no wall clock, no environment)."""

    strategy_py: Path
    strategy_yaml: Path
    data: list[Path] = field(default_factory=list)
    synthetic_hours: float | None = None
    seed: int = 1
    latency_ms: float | None = None  # order entry (and response, unless response_latency_ms); None: the feed's
    response_latency_ms: float | None = None
    product: str = "FX_BTC_JPY"
    queue: QueueModel = "risk_averse"
    adverse_s: float = DEFAULT_ADVERSE_S
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides of the yaml's (a --grid point)
    market: MarketConfig = field(default_factory=MarketConfig)


@dataclass
class BacktestResult:
    report: dict[str, Any]
    collector: Collector


def _strategy_config(settings: BacktestSettings) -> StrategyConfig:
    cfg = load_strategy_config(settings.strategy_yaml)
    # No Discord in a backtest: a chart of a replay posted as if live would mislead.
    update: dict[str, Any] = {"discord_webhook": SecretStr("")}
    if settings.parameters:
        update["parameters"] = {**cfg.parameters, **settings.parameters}
    return cfg.model_copy(update=update)


def _records(settings: BacktestSettings, product: str) -> tuple[Iterator[Record], int]:
    """The recording's records and the receive time of its first frame (ns); a one-line
    :class:`UserError` when it holds no frame, or the first ones are of another product."""
    def chain() -> Iterator[Record]:
        for path in settings.data:
            yield from read_recordings(path)

    where = ", ".join(str(p) for p in settings.data)
    records = chain()
    head: list[Record] = []
    for rec in records:
        head.append(rec)
        if type(rec) is Frame:
            if channels.split(rec.channel)[1] != product:
                raise UserError(f"--data {where}: frames of {rec.channel}, not of {product} (see --product)")
            return itertools.chain(head, records), rec.recv_ns
        if len(head) > 10_000:
            break
    raise UserError(f"no frames in {where} (give recording files or a product folder, e.g. recordings/{product})")


#: Allocations between two collections of the youngest generation while a backtest runs (Python's
#: default: 700). A backtest makes tens of thousands of short-lived objects per market minute
#: (quotes, prints, frames), and at the default the collector ran every few flow steps, each run
#: also walking the older generations now and then: ~4 % of a backtest (bench/backtest.py).
GC_YOUNG_THRESHOLD = 50_000


@contextlib.contextmanager
def _young_collections_every(allocations: int) -> Iterator[None]:
    """Collect the youngest generation every ``allocations`` allocations, then restore the thresholds."""
    saved = gc.get_threshold()
    gc.set_threshold(allocations, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def run_backtest(settings: BacktestSettings, on_progress: Callable[[float, float], None] | None = None
                 ) -> BacktestResult:
    """Run one backtest to the end of its data; returns the report (a dict) and what it measured.

    ``on_progress(done_s, total_s)`` is called at every sample (virtual seconds; total is inf for
    a replay of unknown length)."""
    spec = get_product(settings.product)
    if spec is None:
        raise UserError(f"unknown product {settings.product!r}")
    strategy_cfg = _strategy_config(settings)
    cls = load_strategy_class(settings.strategy_py)
    try:
        strategy = cls()
    except Exception as e:
        raise UserError(f"{settings.strategy_py}: {cls.__name__}() failed: {e}") from None

    replay = bool(settings.data)
    if replay:
        records, first_ns = _records(settings, spec.code)
        epoch_start_s = first_ns / 1e9
    else:
        epoch_start_s = SYNTHETIC_START.timestamp()
    vclock = clock.VirtualClock(epoch_start_s)
    with clock.install(vclock), tempfile.TemporaryDirectory(prefix="bfsx-backtest-") as tmp:
        loop = VirtualLoop(vclock)
        asyncio.set_event_loop(loop)
        try:
            sim_cfg = SimConfig(products=[spec.code], accounts=[backtest_account()], seed=settings.seed,
                                market=settings.market)
            engine = BacktestEngine(sim_cfg)
            realtime = BacktestRealtime()
            market: SyntheticMarket | ReplayMarket
            entry_ms = settings.latency_ms
            if replay:
                market = ReplayMarket(engine, spec.code, records, first_ns, realtime, settings.queue)
                feed_s = None
            else:
                entry_ms = entry_ms if entry_ms is not None else DEFAULT_SYNTHETIC_LATENCY_MS
                feed_s = entry_ms / 1000
                hours = settings.synthetic_hours or 0.0
                market = SyntheticMarket(engine, spec.code, settings.market, settings.seed, hours, realtime,
                                         feed_latency_s=feed_s)
            response_ms = settings.response_latency_ms if settings.response_latency_ms is not None else entry_ms
            latency = Latency(None if entry_ms is None else entry_ms / 1000,
                              None if response_ms is None else response_ms / 1000)
            rest = BacktestRest(engine, realtime, latency, market.feed_latency)
            rest.public_sink = market.public
            trade = TradeConfig(
                product=spec.code, bot_name="backtest", log_folder=tmp, console_output=False, status_interval=0,
                ws_silence_timeout=0,
            )
            rt = BotRuntime(trade, strategy_cfg, strategy, rest=cast(RestClient, rest),
                            realtime=cast(RealtimeClient, realtime))
            collector = Collector(settings.adverse_s, settings.sample_interval_s, market.mid,
                                  lambda xid: engine.maker_fills.pop(xid, None))
            collector.end_mono_s = market.end_mono_s
            total_s = market.end_mono_s - clock.monotonic()
            if on_progress is not None:
                collector.on_sample = lambda done: on_progress(done, total_s)

            async def main() -> None:
                market.on_end = rt.request_stop
                market.start(loop)
                collector.attach(rt, loop)
                await rt.run()

            logging.getLogger("bfsx.bot.backtest").setLevel(logging.WARNING)  # live chatter, not report
            with _young_collections_every(GC_YOUNG_THRESHOLD):
                loop.run_until_complete(main())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        end_s = vclock.time()
        model = {
            **market.model(),
            "latency": latency.describe(),
            "fees": (f"spot commission {sim_cfg.spot_commission_rate:g} of the size, in {spec.base}"
                     if not spec.is_fx else "none (Crypto CFD: no trading commission)"),
            "engine": "bfsx.sim.engine (price-time priority, bitFlyer's order lifecycle and events)",
            "collateral": "unbounded (the strategy yaml's risk limits bound the bot)",
        }
        meta = {
            "strategy": settings.strategy_py.name,
            "product": spec.code,
            "parameters": strategy_cfg.parameters,
            "data": ({"recordings": [p.name for p in settings.data]} if replay
                     else {"synthetic_hours": settings.synthetic_hours, "seed": settings.seed}),
            "reconnects": realtime.reconnects,
        }
        report = build_report(collector, rt, meta=meta, model=model, start_s=epoch_start_s, end_s=end_s)
    return BacktestResult(report, collector)
