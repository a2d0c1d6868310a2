"""The package's import graph: every arrow points down, nothing imports the CLI, no circles.

Walks every module of ``src/bfsx`` with :mod:`ast`: imports at module level *and* inside functions
(a lazy import is still an arrow). Imports under ``if TYPE_CHECKING:`` are left out: they never run,
they only name types for the checker. Floors, lowest first (docs/ARCHITECTURE.md draws them)::

    errors, aio, net, logs  →  bitflyer  →  market, account, reporting, config
      →  bot, posserver, sim, record  →  demo  →  cli

A module may import its own floor or lower. ``bitflyer`` is stricter: the wire layer imports only
itself and the floor under it, so the client and the simulator can share it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "bfsx"

FLOORS: dict[str, int] = {
    "errors": 0, "aio": 0, "net": 0, "logs": 0, "clock": 0,
    "bitflyer": 1,
    "market": 2, "account": 2, "reporting": 2, "config": 2,
    "bot": 3, "posserver": 3, "sim": 3, "record": 3,
    "demo": 4, "backtest": 4,
    "cli": 5,
}
ROOT_FLOOR = 6  # bfsx/__init__.py: the public names a strategy imports (re-exports only)
OPTIONAL_REPORTING = ("matplotlib", "PIL", "influxdb")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> Iterator[tuple[str, int]]:
    """(imported bfsx module, line) for every import that runs, at any depth."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from bfsx.bot import resync` imports the module bfsx.bot.resync
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            yield from ((s, node.lineno) for s in subs) if subs else [(target, node.lineno)]
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for target, line in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            if target in MODULES and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_FLOOR
    return FLOORS[parts[1]]


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(SRC.parent)}:{line}"


def test_every_module_has_a_floor() -> None:
    unknown = sorted({m.split(".")[1] for m in MODULES if "." in m} - set(FLOORS))
    assert not unknown, f"new top-level modules need a floor in this test and in docs/ARCHITECTURE.md: {unknown}"


def test_no_module_imports_the_cli() -> None:
    bad = [f"{_where(m, line)} imports bfsx.cli" for m, edges in GRAPH.items() for t, line in edges.items()
           if t == "bfsx.cli"]
    assert not bad, "\n".join(bad)


def test_every_import_points_down() -> None:
    bad = [
        f"{_where(m, line)}: {m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
        for m, edges in GRAPH.items() for t, line in edges.items()
        if t != "bfsx" and _floor(t) > _floor(m)
    ]
    assert not bad, "\n".join(bad)


def test_the_wire_layer_imports_nothing_above_it() -> None:
    bad = [
        f"{_where(m, line)}: {m} imports {t}"
        for m, edges in GRAPH.items() if m.startswith("bfsx.bitflyer")
        for t, line in edges.items() if not t.startswith("bfsx.bitflyer") and _floor(t) > 0
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circle() -> None:
    # Depth-first search with colours; report the first circle found, as a path of modules.
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        path.append(m)
        for t in sorted(GRAPH[m]):
            if colour.get(t) == 1:
                return [*path[path.index(t):], t]
            if t not in colour and (found := visit(t)) is not None:
                return found
        path.pop()
        colour[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in colour and (circle := visit(m)) is not None:
            pytest.fail("import circle: " + " -> ".join(circle))


def test_the_walker_sees_lazy_imports_and_skips_type_checking_blocks() -> None:
    # The rules above are only as good as the walk: check it on known edges of this package.
    assert "bfsx.bot.runtime" in GRAPH["bfsx.cli"]  # imported inside main()
    assert "bfsx.reporting.discord" in GRAPH["bfsx.bot.runtime"]  # imported inside __init__
    assert "bfsx.bot.runtime" not in GRAPH["bfsx.bot.strategy"]  # under `if TYPE_CHECKING:` only
    assert "bfsx.bot.resync" in GRAPH["bfsx.bot.desk"]  # `from bfsx.bot import resync`


def test_a_bot_without_charts_loads_no_reporting_library() -> None:
    """matplotlib, pillow and influxdb cost a bot ~40 MB and a second at start: only a configured
    reporter may load them (lazily)."""
    code = (
        "import sys\n"
        "import bfsx, bfsx.bot.runtime, bfsx.bot.desk, bfsx.bot.resync, bfsx.posserver.client, bfsx.config\n"
        f"print(' '.join(m for m in {OPTIONAL_REPORTING!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "", f"imported at bot start: {out.stdout.strip()}"
