"""Run every benchmark in bench/ in turn: ``python -m bench [NAME ...]`` (``make bench``).

Each module ``bench/<name>.py`` (other than this one and ``__init__``) is imported and its
``main()`` called with default settings; results are printed as each finishes. A failing bench is
reported and the others still run; the exit status is non-zero if any failed. ``BFSX_BENCH_SUITE=1``
is set for them: a long bench (``chaos``, 30 min alone) then defaults to a short run.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in ("__main__", "__init__"))


def main(argv: list[str] | None = None) -> int:
    names = discover()
    wanted = list(sys.argv[1:] if argv is None else argv)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown bench {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    failed: list[str] = []
    os.environ.setdefault("BFSX_BENCH_SUITE", "1")  # long benches (chaos) take a short default run here
    for name in wanted or names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.monotonic()
        saved_argv = sys.argv
        sys.argv = [f"bench/{name}.py"]  # each bench parses its own (empty) command line: defaults
        try:
            module = importlib.import_module(f"bench.{name}")
            module.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        finally:
            sys.argv = saved_argv
        print(f"=== bench {name}: {'FAILED' if name in failed else 'done'} in {time.monotonic() - started:.1f} s",
              flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
