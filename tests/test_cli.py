"""A missing third-party dependency is one line with the fix and exit 2, not a traceback (cli.main)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# aiohttp hidden: `import aiohttp` raises ModuleNotFoundError (name 'aiohttp') inside the subcommand.
HIDE_AND_RUN = "import sys; sys.modules['aiohttp'] = None; from bfsx.cli import main; sys.exit(main(sys.argv[1:]))"


def test_missing_dependency_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "trade.yaml").write_text("product: FX_BTC_JPY\n")
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_AND_RUN, "pos-server", "trade.yaml"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing dependency 'aiohttp'" in lines[0] and "make install" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
