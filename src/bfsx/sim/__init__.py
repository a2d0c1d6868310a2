"""The bitFlyer-compatible exchange simulator (``bfsx sim``; docs/simulator.md).

``config`` (SimConfig), ``model`` (orders, FX lots, fills, accounts, integer units), ``book`` (price
levels, books, markets), ``engine`` (matching, order lifecycle, accounting), ``views`` (REST and
realtime answers, ``/_sim/state``), ``flow`` (seeded synthetic market), ``ratelimit``, ``faults``,
``server`` (SimServer, run_sim), ``live`` (the console line), ``paths`` (the ``/_sim`` hook paths)
and ``hooks`` (SimHooks and wire-level test clients).
"""
