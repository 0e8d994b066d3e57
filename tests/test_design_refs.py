"""Every `§` reference in the repository resolves to a numbered heading of docs/design.md.

Code, docs, tests, configs and benchmarks cite the design as ``design §2.4`` (lists and ranges:
``design §1.1, §1.2``, ``design §1–4``). Inside docs/design.md a bare ``§2.1`` is a reference to
the page itself. The design notes the project started from are not shipped, so citing them
(``SPEC §``, ``ENV.md``, ``STYLE lesson``) is an error too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
THIS = Path(__file__).resolve()  # its examples of broken references are meant to be broken
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".txt", ".cfg", ".ini", ".sh",
                 ".ipynb", ".rst", ""}
SKIP_DIRS = {".git", ".venv", ".jax_cache", "__pycache__", "build", "dist", ".pytest_cache"}

SECT = r"(?:§|\\u00a7)"
NUM = r"\d+(?:\.\d+)*"
ONE = rf"{SECT}(?P<a>{NUM})(?:[–-](?P<b>{NUM}))?"
GROUP = re.compile(rf"design {SECT}{NUM}(?:[–-]{NUM})?(?:(?:\s*[,/]\s*|\s+and\s+){SECT}{NUM}(?:[–-]{NUM})?)*")
ANY_REF = re.compile(ONE)
ANY_SIGN = re.compile(SECT)
STALE = re.compile(r"\bSPEC\s*§|\bENV\.md\b|\bSTYLE\s+(?:§|lesson)")
HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s+\S", re.MULTILINE)


def design_sections(text: str) -> set[str]:
    """The numbers of docs/design.md's numbered headings ("## 2. Memory" -> "2", "### 2.4 ..." -> "2.4")."""
    return set(HEADING.findall(text))


def problems(text: str, sections: set[str], *, self_refs: bool = False) -> list[str]:
    """What in ``text`` does not resolve: unknown section numbers, stray `§`, stale note names."""
    out = [f"stale reference {m.group(0)!r}" for m in STALE.finditer(text)]
    covered: list[tuple[int, int]] = []
    for g in GROUP.finditer(text):
        covered.append((g.start(), g.end()))
    for m in ANY_SIGN.finditer(text):
        ref = ANY_REF.match(text, m.start())
        if ref is None:
            out.append(f"'§' without a section number at offset {m.start()}")
            continue
        if not self_refs and not any(a <= m.start() < b for a, b in covered):
            out.append(f"{ref.group(0)!r} does not say what it cites (write 'design {ref.group(0)}')")
            continue
        for num in filter(None, (ref.group("a"), ref.group("b"))):
            if num not in sections:
                out.append(f"{ref.group(0)!r}: docs/design.md has no section {num}")
    return out


def repo_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        paths = [ROOT / p for p in listed.stdout.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): walk the tree
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES and p.resolve() != THIS)


def test_design_headings_are_numbered_and_nested():
    sections = design_sections(DESIGN.read_text(encoding="utf-8"))
    assert {"1", "1.1", "2", "2.4", "3", "4", "5", "6", "7", "8"} <= sections
    for num in sections:  # "2.4" needs a "2"
        parent = num.rpartition(".")[0]
        assert not parent or parent in sections, f"docs/design.md: section {num} has no parent {parent}"


def test_every_reference_resolves():
    sections = design_sections(DESIGN.read_text(encoding="utf-8"))
    failures = []
    for path in repo_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for problem in problems(text, sections, self_refs=path == DESIGN):
            failures.append(f"{path.relative_to(ROOT)}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "text, bad",
    [
        ("see design §2.4 and design §1.1, §1.2", []),
        ("pooling (design §1–3)", []),
        ('"sampling": "design \\u00a73.2 1 FPS"', []),
        ("see design §9.1", ["no section 9.1"]),
        ("see design §1.1, §1.9", ["no section 1.9"]),
        ("as in §2.4", ["does not say what it cites"]),
        ("SPEC §1.4 says", ["stale reference", "does not say what it cites"]),
        ("(ENV.md)", ["stale reference"]),
        ("STYLE lesson 2", ["stale reference"]),
        ("§ alone", ["without a section number"]),
    ],
)
def test_checker_catches_broken_references(text, bad):
    found = problems(text, {"1", "1.1", "1.2", "2", "2.4", "3", "3.2"})
    assert len(found) == len(bad), found
    for msg, want in zip(found, bad):
        assert want in msg
