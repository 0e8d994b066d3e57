"""Packaging: every console script resolves to a package ``main()`` that answers ``--help``, each
``launch/*.py`` wrapper calls one, and the two locks of constraints.txt cover the dependencies."""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
WANTED = {"hourllava-train", "hourllava-eval", "hourllava-extract", "hourllava-synth", "hourllava-demo",
          "hourllava-build-tfds", "hourllava-convert", "hourllava-answer"}


def test_every_entry_point_has_a_console_script():
    assert set(SCRIPTS) == WANTED
    for target in SCRIPTS.values():
        module, _, func = target.partition(":")
        assert func == "main" and module.startswith("hourllava_jax."), target


@pytest.mark.parametrize("name", sorted(WANTED))
def test_console_script_help(name, monkeypatch, capsys):
    """What the installed script does: ``sys.argv = [name, "--help"]; sys.exit(main())``."""
    module, _, func = SCRIPTS[name].partition(":")
    main = getattr(importlib.import_module(module), func)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def _pins(path: Path) -> dict[str, set[str]]:
    """normalised name -> the markers it is pinned under ('' = both interpreters)."""
    out: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, marker = line.partition(";")
        name, sep, _ = spec.partition("==")
        assert sep, f"{path.name}: not an exact pin: {line!r}"
        out.setdefault(re.sub(r"[-_.]+", "-", name.strip()).lower(), set()).add(marker.strip())
    return out


def test_both_locks_pin_every_dependency():
    pins = _pins(ROOT / "constraints.txt")
    deps = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in PYPROJECT["project"]["dependencies"]]
    dev = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in (ROOT / "requirements-dev.txt").read_text().splitlines()
           if d.strip() and not d.startswith(("#", "-"))]
    for dep in [*deps, *dev]:
        markers = pins.get(re.sub(r"[-_.]+", "-", dep).lower())
        assert markers, f"constraints.txt does not pin {dep}"
        if dep == "torch":  # only the 3.11 lock has it (3.12 has only the CUDA build)
            assert markers == {'python_version < "3.12"'}, markers
            continue
        both = "" in markers or {'python_version < "3.12"', 'python_version >= "3.12"'} <= markers
        assert both, f"constraints.txt pins {dep} for one interpreter only: {markers}"
    assert pins["jax"] == {'python_version < "3.12"', 'python_version >= "3.12"'}  # 0.10.2 and 0.12


def test_launch_wrappers_are_thin():
    """launch/make_synthetic.py (and the other wrappers) only call a package main()."""
    text = (ROOT / "launch" / "make_synthetic.py").read_text()
    assert "from hourllava_jax.cli.synth import main" in text
    code = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", '"""', "import", "from"))]
    assert len(code) <= 4, code


def test_requirements_txt_is_the_locked_package_install():
    """``pip install -r requirements.txt`` installs this package under the CI locks: no second list
    of dependencies that could drift from pyproject.toml."""
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines == ["-c constraints.txt", "-e ."], lines
