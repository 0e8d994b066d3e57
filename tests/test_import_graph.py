"""The package's import graph (docs/model.md, "Layout"): every import of every module under
``hourllava_jax/``, including imports inside functions, parsed from the source. It must have no
cycle, no layer may import one above it, and no module may import its own package's init."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "hourllava_jax"
ROOT = Path(__file__).resolve().parents[1] / PKG

# Entry points and the layers that use the model; none of the lower layers may import them.
UPPER = {"data", "train", "infer", "eval", "convert", "launch", "cli", "demo"}
FORBIDDEN = {
    "config": UPPER | {"model", "memory", "kernels"},
    "parallel": UPPER | {"model", "memory"},
    "kernels": UPPER | {"model", "memory"},
    "memory": UPPER | {"model", "kernels"},  # the memory stage sits under model/, beside config/
    "model": UPPER,
    "train": {"model", "memory", "data", "convert", "launch", "cli", "demo"},  # model, loss and data are injected
}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports explicitly, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # ``from a import b`` imports module a.b when it exists, else a name of a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules and t.startswith(PKG + "."):  # ``import a.b.c`` of a name
                t = t.rsplit(".", 1)[0]
            if t in modules:
                found.add(t)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_imports_inside_functions():
    g = _graph()
    # hour_llava_keys.build_hour_llava imports the model inside the function
    assert f"{PKG}.model.hour_llava" in g[f"{PKG}.convert.hour_llava_keys"]
    assert f"{PKG}.kernels.attention" in g[f"{PKG}.kernels"]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_layer_imports_a_layer_above_it():
    bad = [f"{a} imports {b}" for a, deps in _graph().items() for b in sorted(deps)
           if _layer(b) in FORBIDDEN.get(_layer(a), set())]
    assert bad == []


def test_nothing_imports_launch_and_no_module_imports_its_own_package_init():
    g = _graph()
    modules = _modules()
    bad = []
    for a, deps in g.items():
        own = a if modules[a].name == "__init__.py" else a.rsplit(".", 1)[0]
        bad += [f"{a} imports its package init {own}" for b in deps if b == own and b != a and own != PKG]
        bad += [f"{a} imports {b}" for b in deps if _layer(b) == "launch"]
    source = "\n".join(p.read_text() for p in modules.values())
    assert "import launch" not in source and "from launch" not in source
    assert bad == []


def test_the_cycle_and_layer_checks_can_fail():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _layer(f"{PKG}.model.x") == "model" and "data" in FORBIDDEN["model"]
