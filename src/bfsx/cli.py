"""``bfsx`` command line: trade, pos-server, ctl, sim, record, backtest, demo, bench.

Each subcommand imports its module lazily so ``bfsx sim`` starts fast. A user mistake exits non-zero
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bfsx.errors import UserError

__all__ = ["UserError", "main"]  # UserError re-exported for code written against bfsx.cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bfsx", description="High-speed bitFlyer Lightning bot framework.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("trade", help="run one bot: bfsx trade [TRADE_YAML] [STRATEGY_PY STRATEGY_YAML]")
    t.add_argument("files", nargs="*", metavar="FILE", help="trade.yaml and/or strategy .py + .yaml")

    ps = sub.add_parser("pos-server", help="run the position server: bfsx pos-server [TRADE_YAML]")
    ps.add_argument("config", nargs="?", default="trade.yaml", help="run config (default ./trade.yaml)")

    s = sub.add_parser("sim", help="run the bitFlyer-compatible exchange simulator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8787)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--config", default=None, help="sim.yaml: accounts, products, market, limits")
    s.add_argument("--quiet", action="store_true", help="no live market line")
    s.add_argument("--upstream", default=None, metavar="WS_URL",
                   help="paper trading: build the market from this bitFlyer-format realtime feed")
    s.add_argument("--replay", nargs="+", default=None, metavar="FILE",
                   help="paper trading on a `bfsx record` recording (files or product folders)")
    s.add_argument("--speed", type=float, default=None, metavar="X", help="--replay speed (1 = real time)")

    r = sub.add_parser("record", help="record the public feed: bfsx record [TRADE_YAML] [--products P ...] [--out DIR]")
    r.add_argument("config", nargs="?", default=None, metavar="TRADE_YAML",
                   help="run config: its ws_endpoint and product (default ./trade.yaml if present, else bitFlyer)")
    r.add_argument("--products", nargs="+", default=None, metavar="P",
                   help="product codes (default: the trade.yaml product, else FX_BTC_JPY)")
    r.add_argument("--out", default="recordings", metavar="DIR", help="folder for the recordings (default ./recordings)")
    r.add_argument("--ws-endpoint", default=None, metavar="URL", help="realtime URL (overrides trade.yaml)")
    r.add_argument("--retention-days", type=int, default=30, metavar="N", help="days of files kept (0 = all)")
    r.add_argument("--status-seconds", type=float, default=10.0, metavar="S", help="seconds between status lines")
    r.add_argument("--flush-seconds", type=float, default=1.0, metavar="S",
                   help="seconds between flushes: what a crash can lose")
    r.add_argument("--queue-mb", type=float, default=64.0, metavar="MB", help="write queue bound; beyond it frames drop")

    b = sub.add_parser("backtest", help="replay a strategy: bfsx backtest STRATEGY_PY STRATEGY_YAML "
                                        "(--data FILE_OR_DIR ... | --synthetic HOURS)")
    b.add_argument("strategy_py", metavar="STRATEGY_PY")
    b.add_argument("strategy_yaml", metavar="STRATEGY_YAML")
    b.add_argument("--data", nargs="+", default=None, metavar="FILE_OR_DIR", help="recordings (bfsx record) to replay")
    b.add_argument("--synthetic", type=float, default=None, metavar="HOURS", help="the simulator's synthetic market")
    b.add_argument("--seed", type=int, default=1, help="seed of the synthetic market (default 1)")
    b.add_argument("--latency-ms", type=float, default=None, metavar="MS",
                   help="order entry latency, and response unless given (default: the recorded feed latency; synthetic 30)")
    b.add_argument("--response-latency-ms", type=float, default=None, metavar="MS",
                   help="response latency (the REST reply and the private events; default: as --latency-ms)")
    b.add_argument("--product", default="FX_BTC_JPY", help="product code (default FX_BTC_JPY)")
    b.add_argument("--queue", default="risk_averse", help="queue model: risk_averse (default) or probabilistic")
    b.add_argument("--adverse-seconds", type=float, default=5.0, metavar="S",
                   help="the report's adverse move: mid this many seconds after each fill (default 5)")
    b.add_argument("--grid", nargs="+", default=None, metavar="KEY=V1,V2",
                   help="sweep: every combination of these parameters, in parallel processes")
    b.add_argument("--workers", type=int, default=None, metavar="N", help="processes of a sweep (default: CPUs)")
    b.add_argument("--out", default=None, metavar="DIR", help="folder for report.json and the charts")

    c = sub.add_parser("ctl", help="the kill switch: bfsx ctl [TRADE_YAML] COMMAND [MARKET] (status, pause, "
                                   "close-only, resume, flatten, freeze, unfreeze, adopt)")
    c.add_argument("words", nargs="+", metavar="WORD", help="[TRADE_YAML] COMMAND [MARKET]")

    d = sub.add_parser("demo", help="the whole system on the embedded simulator")
    d.add_argument("--minutes", type=float, default=None, help="stop after N minutes (default: until Ctrl+C)")
    d.add_argument("--out", default="demo-out", help="folder for charts and the summary")

    sub.add_parser("bench", help="run the benchmarks in bench/")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bfsx`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sim":
            from bfsx.sim.server import run_sim

            return run_sim(host=args.host, port=args.port, seed=args.seed, config=args.config, quiet=args.quiet,
                           upstream=args.upstream, replay=args.replay, speed=args.speed)
        if args.command == "trade":
            from bfsx.bot.runtime import run_trade

            return run_trade(list(args.files))
        if args.command == "pos-server":
            from bfsx.posserver.server import run_pos_server

            return run_pos_server(args.config)
        if args.command == "record":
            from bfsx.record.command import run_record

            return run_record(
                args.config, args.products, args.out, ws_endpoint=args.ws_endpoint,
                retention_days=args.retention_days, status_s=args.status_seconds,
                flush_s=args.flush_seconds, queue_mb=args.queue_mb,
            )
        if args.command == "backtest":
            from bfsx.backtest.command import run_backtest_command, settings_from_args

            settings = settings_from_args(
                args.strategy_py, args.strategy_yaml, data=args.data, synthetic=args.synthetic, seed=args.seed,
                latency_ms=args.latency_ms, product=args.product, queue=args.queue, adverse_s=args.adverse_seconds,
                response_latency_ms=args.response_latency_ms,
            )
            return run_backtest_command(settings, args.out, args.grid, workers=args.workers)
        if args.command == "ctl":
            from bfsx.posserver.ctl import run_ctl

            return run_ctl(list(args.words))
        if args.command == "demo":
            from bfsx.demo import run_demo

            return run_demo(minutes=args.minutes, out=args.out)
        if args.command == "bench":
            import runpy

            runpy.run_module("bench", run_name="__main__")
            return 0
    except UserError as e:
        print(f"bfsx {args.command}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "bfsx":
            raise
        print(f"bfsx {args.command}: missing dependency {e.name!r}: run 'make install' and use .venv/bin "
              f"(or 'pip install -e .')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
