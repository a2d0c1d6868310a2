"""Mutation testing of the safety-critical modules with mutmut (issue 13 item 4, docs/reliability.md).

    python -m bench mutation            (or: python bench/mutation.py [--budget S] [--keep DIR])

Mutates only what guards real money: ``account/drift.py``, ``posserver/protocol.py``,
``account/orders.py``, ``account/journal.py``, ``bot/desk.py`` (the refusal gate) and, in
``posserver/server.py``, only ``PosServer._check_market``, ``PosServer._correct`` and
``PosServer._reopen_gate`` (the judging and the reduce-only rule: every other function of that file is marked ``# pragma: no mutate block`` in the copy). The whole
suite is too slow per mutant, so mutmut runs only the fast, relevant files below (and, per mutant,
only the tests that reach the mutated function). Everything happens in a temporary copy of the
checkout: the work tree is never touched. mutmut is installed into the running venv when missing.

Prints mutants, killed, survived (with their names), timeouts and the time taken; the survivors
and why each is acceptable are listed in docs/reliability.md. ``--budget`` (default 3000 s) ends a
run that takes longer (the partial numbers are still printed, marked so).
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


def _only_judging(path: Path) -> None:
    """Mark every function of server.py but the judging ``# pragma: no mutate block``.

    mutmut reads the pragma only at the end of the ``def`` header (the line with the colon): a
    signature over several lines (``PosServer.__init__``) gets it on its last line, not its first
    (there, its ~190 mutants used to be generated and run)."""
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in SERVER_FUNCTIONS:
            i = max(node.body[0].lineno - 2, node.lineno - 1)  # the header's last line: the body starts on the next
            while i > node.lineno - 1 and not lines[i].rstrip().endswith(":"):
                i -= 1
            if "#" not in lines[i]:
                lines[i] += "  # pragma: no mutate block"
    path.write_text("\n".join(lines) + "\n")


def _config(tests: list[str]) -> str:
    def arr(xs: list[str]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {arr(MODULES)}\n"
        f"pytest_add_cli_args_test_selection = {arr(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "--durations=0", "-x"]\n'
    )


def prepare(work: Path, tests: list[str]) -> None:
    for d in ("src", "tests"):
        shutil.copytree(ROOT / d, work / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _config(tests))
    _only_judging(work / "src/bfsx/posserver/server.py")


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
    ap.add_argument("names", nargs="*", help="mutant name patterns, run in this order (default: all), "
                    "e.g. 'bfsx.account.drift.*'")
    args = ap.parse_args(argv)
    cmd = _mutmut()
    tests = args.tests.split(",") if args.tests else TESTS
    tmp = None
    if args.keep:
        work = args.keep
        if not (work / "pyproject.toml").exists():
            work.mkdir(parents=True, exist_ok=True)
            prepare(work, tests)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bfsx-mutation-")
        work = Path(tmp.name)
        prepare(work, tests)
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
