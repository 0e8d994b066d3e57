"""Merge the `pip freeze` of the two CI environments into one constraints.txt with version markers.

    .venv/bin/pip freeze --exclude-editable > /tmp/py311.txt
    .venv312/bin/pip freeze --exclude-editable > /tmp/py312.txt
    python .ci/lock.py /tmp/py311.txt /tmp/py312.txt > constraints.txt

A package pinned to the same version in both is written once; otherwise each lock's pin carries a
`python_version` marker, so `pip install -c constraints.txt ...` picks the exact set of whichever
interpreter runs it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADER = """\
# Two exact locks, the environments CI tests (.ci/run): Python 3.11 with jax 0.10.2, and Python 3.12
# with the newest jax/flax. Use with either interpreter: pip install -c constraints.txt -e .
# A pin without a marker holds for both. Regenerate with .ci/lock.py (its docstring).
"""
MARK = {"311": 'python_version < "3.12"', "312": 'python_version >= "3.12"'}


def read_freeze(path: Path) -> dict[str, tuple[str, str]]:
    """normalised name -> (name as frozen, version)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-e ")):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path}: not an exact pin: {line!r}")
        out[re.sub(r"[-_.]+", "-", name).lower()] = (name, version)
    return out


def merge(a: dict[str, tuple[str, str]], b: dict[str, tuple[str, str]]) -> list[str]:
    lines = []
    for key in sorted(set(a) | set(b)):
        pa, pb = a.get(key), b.get(key)
        if pa and pb and pa[1] == pb[1]:
            lines.append(f"{pa[0]}=={pa[1]}")
            continue
        if pa:
            lines.append(f"{pa[0]}=={pa[1]}; {MARK['311']}")
        if pb:
            lines.append(f"{pb[0]}=={pb[1]}; {MARK['312']}")
    return lines


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    lines = merge(read_freeze(Path(argv[0])), read_freeze(Path(argv[1])))
    sys.stdout.write(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
