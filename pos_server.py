"""Launcher as BFS-X users run it: ``python3 pos_server.py ...`` (same as ``bfsx pos-server ...``)."""

import sys
from pathlib import Path

try:
    import bfsx.cli
except ImportError:
    # Run from a checkout without installing: use the source tree, if its dependencies are there.
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    try:
        import bfsx.cli
    except ImportError as e:
        sys.exit(f"{Path(sys.argv[0]).name}: {e}; run 'make install' and use .venv/bin/python (or activate .venv)")

if __name__ == "__main__":
    sys.exit(bfsx.cli.main(["pos-server", *sys.argv[1:]]))
