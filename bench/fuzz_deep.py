"""The decoders' fuzz tests (``tests/fuzz``) with hypothesis's ``deep`` profile: random seeds and
many more examples than CI's fixed ones (``tests/fuzz/conftest.py``). Prints pytest's summary and
how long it took; a failure shows the minimal input and a ``@reproduce_failure`` line.

Run: ``python -m bench.fuzz_deep [--examples N] [-k EXPR]`` (or ``python -m bench`` for every bench).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=None, help="max_examples per test (the profile's by default)")
    ap.add_argument("-k", default=None, help="pytest -k expression: only these tests")
    args = ap.parse_args()
    env = {**os.environ, "BFSX_FUZZ": "deep"}
    if args.examples:
        env["BFSX_FUZZ_EXAMPLES"] = str(args.examples)
    cmd = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", "--timeout=0"]
    if args.k:
        cmd += ["-k", args.k]
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    print(f"fuzz (deep profile): exit {rc} after {time.monotonic() - started:.0f} s")
    if rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    main()
