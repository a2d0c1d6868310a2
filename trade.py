"""Launcher as BFS-X users run it: ``python3 trade.py [TRADE_YAML] [STRATEGY_PY STRATEGY_YAML]``."""

import sys

from bfsx.cli import main

if __name__ == "__main__":
    sys.exit(main(["trade", *sys.argv[1:]]))
