"""Property-based fuzzing (hypothesis) of every decoder that reads outside bytes.

One file per decoder family: ``test_protocol_fuzz.py`` (position-server UDP datagrams and TCP
frames), ``test_realtime_fuzz.py`` (JSON-RPC frame dispatch and the child-order events behind it),
``test_book_fuzz.py`` (board, executions and candles: the ``market/`` consumers of public frames),
``test_rest_fuzz.py`` (REST replies from a local server) and ``test_config_fuzz.py`` (the YAML
loaders). The properties are always the same three: no exception but the decoder's own out of it,
no state change on invalid input, and a round trip (or a naive model) for valid input.

Profiles, picked by the environment variable ``BFSX_FUZZ``:

* ``ci`` (the default): derandomized (the examples are a function of the test alone), a small
  ``max_examples``, no example database and no deadline, so ``pytest tests/fuzz`` gives the same
  verdict on every machine and runs in well under 40 s on one core.
* ``deep``: random seeds and many more examples (3,000 per test, or ``BFSX_FUZZ_EXAMPLES``), for a
  longer hunt; ``make bench`` runs it (``bench/fuzz_deep.py``), or by hand::

      BFSX_FUZZ=deep .venv/bin/pytest tests/fuzz -q -p no:cacheprovider --timeout=0

  A failure prints the minimal example and a ``@reproduce_failure`` line; add the input as an
  ``@example`` of the property it broke, so CI keeps trying it.

A known bug in a module this folder may not fix is an ``xfail(strict=True)`` test naming the
exact input (it turns into a failure once fixed, so the marker is removed then).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci", derandomize=True, max_examples=50, deadline=None, database=None, print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile(
    "deep", max_examples=int(os.environ.get("BFSX_FUZZ_EXAMPLES") or 3_000), deadline=None, database=None,
    print_blob=True, suppress_health_check=_SUPPRESS,
)
settings.load_profile(os.environ.get("BFSX_FUZZ", "ci") or "ci")
