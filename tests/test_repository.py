"""The repository stands on its own: no file cites documents that are not part of it, and every
relative link or ``docs/…md#anchor`` reference in it leads to a file (and heading) that exists.

Walks the files git knows (tracked, plus untracked ones not ignored, so a new file is checked
before its first commit), skipping binary files and ``docs/charts/``. Every failure names the file
and the line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

from real_components import missing

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = ("docs/charts/",)

# Citations of documents that live outside this repository. Spelled in pieces so that this file,
# which is scanned too, does not match itself.
_SPEC = "SP" + "EC"
FORBIDDEN = [
    (re.compile(_SPEC + r" ?§"), "cites a section of the external spec"),
    (re.compile(_SPEC + r"\.md"), "cites the external spec"),
    (re.compile(_SPEC + r" (?:\d|invariant|done-when)"), "cites the external spec"),
    (re.compile("bitflyer" + r"-api\.md"), "cites the external bitFlyer notes (use docs/bitflyer.md)"),
    (re.compile(r"\.\./" + "shared"), "points outside the repository"),
    (re.compile("shared/" + _SPEC), "points outside the repository"),
]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_MD_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# ``docs/config.md#safety`` or ``README.md`` written as plain text (docstrings, comments, prose),
# relative to the repository root. Not preceded by a path character, so ``../docs/x.md`` and
# ``docs/charts/README.md`` are read once, as a whole.
_TEXT_REF = re.compile(r"(?<![\w./-])((?:docs/[\w./-]*?|)[\w.-]+\.md)(?:#([\w-]+))?")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, lower case, every character
    but letters, digits, ``_``, ``-`` and spaces dropped, spaces turned into ``-``."""
    text = _MD_LINK_TEXT.sub(r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _listed_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        missing("not a git checkout (git ls-files failed)")
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if not n.startswith(SKIP_DIRS) and (ROOT / n).is_file()]


@cache
def _text_files() -> dict[str, list[str]]:
    """``{path: lines}`` of every listed text file."""
    files: dict[str, list[str]] = {}
    for name in _listed_files():
        data = (ROOT / name).read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            files[name] = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            continue
    return files


def _prose_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Markdown lines outside fenced code blocks, with inline code removed."""
    fenced = False
    for no, line in enumerate(lines, 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield no, _INLINE_CODE.sub("", line)


@cache
def _anchors(path: Path) -> frozenset[str]:
    """The anchors of a markdown file: heading slugs (repeats get ``-1``, ``-2``…) and HTML anchors."""
    lines = path.read_text(encoding="utf-8").splitlines()
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    fenced = False
    for line in lines:
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        anchors.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
    return frozenset(anchors)


def _check_target(source: str, no: int, target: Path, anchor: str, shown: str) -> str | None:
    """A failure line, or None when ``target`` (and ``anchor`` in it, if any) exists."""
    try:
        rel = target.resolve().relative_to(ROOT)
    except ValueError:
        return f"{source}:{no}: {shown}: leads outside the repository"
    if not target.exists():
        return f"{source}:{no}: {shown}: {rel.as_posix()} does not exist"
    if anchor and target.suffix == ".md" and target.is_file() and anchor not in _anchors(target.resolve()):
        return f"{source}:{no}: {shown}: no heading with anchor #{anchor} in {rel.as_posix()}"
    return None


def _is_doc(name: str) -> bool:
    return name == "README.md" or (name.startswith("docs/") and name.endswith(".md"))


def test_slug_follows_github() -> None:
    assert slug("Rate limits") == "rate-limits"
    forms = "Command-line forms (`bfsx trade` / `python3 trade.py`)"
    assert slug(forms) == "command-line-forms-bfsx-trade--python3-tradepy"
    assert slug("4. Receiver checks (in this order)") == "4-receiver-checks-in-this-order"
    assert slug("`no_trade` windows") == "no_trade-windows"
    assert slug("日本語クイックスタート") == "日本語クイックスタート"
    assert slug("API 制限") == "api-制限"
    assert slug("See [the page](x.md)") == "see-the-page"


def test_no_citation_outside_the_repository() -> None:
    failures = []
    for name, lines in _text_files().items():
        for no, line in enumerate(lines, 1):
            for pattern, why in FORBIDDEN:
                m = pattern.search(line)
                if m:
                    failures.append(f"{name}:{no}: {why}: {m.group(0)!r}")
    assert not failures, "\n".join(failures)


def test_markdown_links_resolve() -> None:
    """Every relative link in README.md and docs/ leads to an existing file, and an ``#anchor``
    to an existing heading of that markdown file."""
    failures = []
    for name, lines in _text_files().items():
        if not _is_doc(name):
            continue
        here = (ROOT / name).parent
        for no, line in _prose_lines(lines):
            targets = _LINK.findall(line)
            ref = _REF_DEF.match(line)
            if ref:
                targets.append(ref.group(1))
            for raw in targets:
                if _SCHEME.match(raw) or raw.startswith("//"):
                    continue  # an absolute URL
                path, _, anchor = raw.partition("#")
                target = here / unquote(path) if path else ROOT / name
                failure = _check_target(name, no, target, unquote(anchor), f"link ({raw})")
                if failure:
                    failures.append(failure)
    assert not failures, "\n".join(failures)


def test_text_references_to_docs_resolve() -> None:
    """``docs/<page>.md#<anchor>`` and ``README.md#<anchor>`` written in docstrings, comments or
    prose (relative to the repository root) name an existing file and heading."""
    failures = []
    for name, lines in _text_files().items():
        for no, line in enumerate(lines, 1):
            for m in _TEXT_REF.finditer(line):
                path, anchor = m.group(1), m.group(2) or ""
                if not (path.startswith("docs/") or path == "README.md"):
                    continue
                failure = _check_target(name, no, ROOT / path, anchor, m.group(0))
                if failure:
                    failures.append(failure)
    assert not failures, "\n".join(failures)
