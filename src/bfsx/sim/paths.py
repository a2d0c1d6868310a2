"""The simulator's own URL paths: the ``/_sim`` test hooks (docs/simulator.md#test-hooks-no-signature-needed).

bitFlyer's paths, which the simulator serves too, are in :mod:`bfsx.bitflyer.endpoints`.
"""

from __future__ import annotations

FAULTS = "/_sim/faults"
STATE = "/_sim/state"
ACCOUNT = "/_sim/account"
