"""Every ``hourllava_jax`` (and ``launch``) name a benchmark script imports exists (also the imports inside
functions, which only fail when that part runs): a module moved by a refactor must not surface
as a failed run of ``benchmarks/run_all.py`` tens of minutes in."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOTS = ("hourllava_jax", "launch")  # the package, and the wrappers some scripts once imported from
BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] in ROOTS]
    return out


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(path: Path) -> None:
    for line, module, names in _imports(path):
        mod = importlib.import_module(module)
        for name in names:
            submodule = hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
            assert hasattr(mod, name) or submodule, f"{path.name}:{line}: {module} has no {name}"
