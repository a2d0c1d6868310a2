#!/usr/bin/env python3
"""Position server launcher, as BFS-X users run it: ``python3 pos_server.py [mytrade.yaml]``."""

import sys

import bfsx.cli

if __name__ == "__main__":
    sys.exit(bfsx.cli.main(["pos-server", *sys.argv[1:]]))
