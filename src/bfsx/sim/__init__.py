"""The bitFlyer-compatible exchange simulator (``bfsx sim``; docs/simulator.md).

``config`` (SimConfig), ``engine`` (matching, accounts, FX lots, spot balances), ``flow`` (seeded
synthetic market), ``ratelimit``, ``faults``, ``server`` (SimServer, run_sim, free_port) and
``hooks`` (SimHooks and wire-level test clients).
"""
