"""What a test does when a real component it needs is missing (influxd, a second OS user, git).

Locally it skips, with the reason printed in the summary (``-rs``). Under ``CI=true`` it fails: CI
installs every component (``make test`` does), so a missing one there is a broken setup, not a
reason for a green run that tested less.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI) because ``reason``: a real component is not there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: a missing real component is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)
