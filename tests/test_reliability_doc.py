"""docs/reliability.md names, for every failure mode, the test that proves it: each must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _table_rows() -> list[str]:
    return [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "::" in line]


def test_every_named_test_exists() -> None:
    rows = _table_rows()
    assert len(rows) >= 40, "the failure-mode table is missing or was cut"
    missing = []
    for row in rows:
        named = NAMED.findall(row)
        assert named, f"a row names no test: {row}"
        for path, name in named:
            f = ROOT / path
            if not f.is_file() or not re.search(rf"^(async )?def {name}\(", f.read_text(), re.M):
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_every_kind_of_failure_has_rows() -> None:
    kinds = {row.split("|")[1].strip() for row in _table_rows()}
    assert kinds >= {"network", "exchange", "process", "disk", "clock", "bad input", "hostile peer"}


def test_linked_from_the_readme_with_a_japanese_summary() -> None:
    assert "docs/reliability.md" in (ROOT / "README.md").read_text()
    assert "## 日本語の要約" in DOC.read_text()
