"""Mutation testing of the safety-critical modules with mutmut (issue 13 item 4, docs/reliability.md).

    python -m bench mutation            (or: python bench/mutation.py [--budget S] [--keep DIR])

Mutates only what guards real money: ``account/drift.py``, ``posserver/protocol.py``,
``account/orders.py``, ``account/journal.py``, ``bot/desk.py`` (the refusal gate) and, in
``posserver/server.py``, only ``PosServer._check_market``, ``PosServer._correct`` and
``PosServer._reopen_gate`` (the judging and the reduce-only rule: every other function of that file is marked ``# pragma: no mutate block`` in the copy). The whole
suite is too slow per mutant, so mutmut runs only the fast, relevant files below (and, per mutant,
only the tests that reach the mutated function). Everything happens in a temporary copy of the
checkout: the work tree is never touched. mutmut is installed into the running venv when missing.

``--modules PATH,...`` replaces that list for one run (paths from the checkout's root) and
``--functions NAME,...`` names the functions mutated in ``posserver/server.py`` and
``posserver/lease_desk.py`` (a bare name, or ``Class.method`` for one method; default: the judging
above in server.py, all of lease_desk.py). A listed file of those two gets the pragma on every
other function; the other modules are always mutated whole. E.g. run F:

    python bench/mutation.py --modules "$MODULES" --functions "$FUNCTIONS" --tests <selection>
    # MODULES=src/bfsx/posserver/controls.py,src/bfsx/posserver/lease_desk.py,src/bfsx/posserver/server.py
    # FUNCTIONS=LeaseDesk.gate,LeaseDesk._settled,PosServer._self_trade,PosServer._settle_gate,PosServer._consume_orphans

Prints mutants, killed, survived (with their names), timeouts and the time taken; the survivors
and why each is acceptable are listed in docs/mutation-survivors.md (summary: docs/reliability.md).
``--budget`` (default 3000 s) ends a run that takes longer (the partial numbers are still printed,
marked so).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = [
    "src/bfsx/account/drift.py",
    "src/bfsx/posserver/protocol.py",
    "src/bfsx/account/orders.py",
    "src/bfsx/account/journal.py",
    "src/bfsx/bot/desk.py",
    "src/bfsx/posserver/server.py",
]
#: In server.py only the judging is mutated.
SERVER_FUNCTIONS = {"_check_market", "_correct", "_reopen_gate"}
#: The files that ``--functions`` restricts to the named functions (server.py: always restricted).
RESTRICTABLE = ["src/bfsx/posserver/server.py", "src/bfsx/posserver/lease_desk.py"]
TESTS = [
    "tests/account",
    "tests/bot/test_safety_rules.py",
    "tests/bot/test_strategy_api.py",
    "tests/posserver/test_protocol.py",
    "tests/posserver/test_safety_rules.py",
]


def _mutmut() -> list[str]:
    try:
        import mutmut  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mutmut>=3,<4"], check=True)
    return [str(Path(sys.executable).with_name("mutmut"))]


def _only_judging(path: Path, functions: set[str]) -> None:
    """Mark every function of ``path`` not named in ``functions`` ``# pragma: no mutate block``.

    A name is a function's own (``_correct``: every function so named) or ``Class.method`` (only
    that method). mutmut reads the pragma only at the end of the ``def`` header (the line with the
    colon): a signature over several lines (``PosServer.__init__``) gets it on its last line, not
    its first (there, its ~190 mutants used to be generated and run)."""
    lines = path.read_text().splitlines()

    def walk(body: list[ast.stmt], owner: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                walk(node.body, node.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name not in functions and f"{owner}.{node.name}" not in functions:
                    i = max(node.body[0].lineno - 2, node.lineno - 1)  # the header's last line
                    while i > node.lineno - 1 and not lines[i].rstrip().endswith(":"):
                        i -= 1
                    if "#" not in lines[i]:
                        lines[i] += "  # pragma: no mutate block"
                walk(node.body, owner)  # a nested def is marked too (a block pragma covers it anyway)

    walk(ast.parse("\n".join(lines)).body, "")
    path.write_text("\n".join(lines) + "\n")


def _config(tests: list[str], modules: list[str]) -> str:
    def arr(xs: list[str]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {arr(modules)}\n"
        f"pytest_add_cli_args_test_selection = {arr(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "--durations=0", "-x"]\n'
    )


def prepare(work: Path, tests: list[str], modules: list[str] | None = None,
            functions: set[str] | None = None) -> None:
    """Copy the checkout into ``work`` with mutmut's config; ``functions`` (default: the judging)
    restricts server.py, and lease_desk.py when it is given."""
    for d in ("src", "tests"):
        shutil.copytree(ROOT / d, work / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _config(tests, modules or MODULES))
    for rel in RESTRICTABLE if functions is not None else RESTRICTABLE[:1]:
        _only_judging(work / rel, SERVER_FUNCTIONS if functions is None else functions)


def results(cmd: list[str], work: Path) -> dict[str, str]:
    out = subprocess.run([*cmd, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status.strip()
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=3000.0, help="seconds at most for the run")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--tests", help="comma-separated test paths instead of the default selection")
    ap.add_argument("--modules", help="comma-separated module paths to mutate instead of MODULES")
    ap.add_argument("--functions", help="comma-separated functions (name or Class.method) mutated in "
                    "posserver/server.py and posserver/lease_desk.py (default: the judging in server.py)")
    ap.add_argument("names", nargs="*", help="mutant name patterns, run in this order (default: all), "
                    "e.g. 'bfsx.account.drift.*'")
    args = ap.parse_args(argv)
    cmd = _mutmut()
    tests = args.tests.split(",") if args.tests else TESTS
    modules = args.modules.split(",") if args.modules else None
    functions = set(args.functions.split(",")) if args.functions else None
    tmp = None
    if args.keep:
        work = args.keep
        if not (work / "pyproject.toml").exists():
            work.mkdir(parents=True, exist_ok=True)
            prepare(work, tests, modules, functions)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bfsx-mutation-")
        work = Path(tmp.name)
        prepare(work, tests, modules, functions)
    started = time.monotonic()
    ended = "complete"
    for names in [[n] for n in args.names] or [[]]:
        left = args.budget - (time.monotonic() - started)
        try:
            subprocess.run([*cmd, "run", "--max-children", str(args.max_children), *names], cwd=work,
                           timeout=max(left, 1.0), stdout=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            ended = f"STOPPED after the {args.budget:.0f} s budget (partial)"
            break
    took = time.monotonic() - started
    found = results(cmd, work)
    if args.names:  # only what was asked for: the other modules' mutants were never meant to run
        found = {n: st for n, st in found.items() if any(fnmatch.fnmatchcase(n, pat) for pat in args.names)}
    counts = Counter(found.values())
    if ended == "complete" and counts.get("not checked"):
        ended = "INCOMPLETE (mutmut ended early)"
    by_module: dict[str, Counter[str]] = {}
    for name, status in found.items():
        by_module.setdefault(name.split(".x")[0].split("__mutmut_")[0].rsplit(".", 1)[0], Counter())[status] += 1
    print(f"mutation run {ended}: {len(found)} mutants in {took:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for mod, c in sorted(by_module.items()):
        print(f"  {mod}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    for name, status in sorted(found.items()):
        if status not in ("killed",):
            print(f"  {status}: {name}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
