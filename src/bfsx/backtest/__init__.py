"""``bfsx backtest``: the unchanged strategy, through the live runtime, on a virtual clock against
the simulator's matching engine (docs/backtest.md). Modules: vloop (the virtual-time loop),
exchange (the in-process transport around ``sim.engine``), market (replay / synthetic), report,
runner (one run), sweep (``--grid``), command (the CLI)."""
