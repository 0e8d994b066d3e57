"""Benchmark readers: one module per benchmark, each with `load(root) -> (items, problems)`.

`load(name, root)` dispatches by benchmark name; `NAMES` lists them. Imports are explicit (no
string lookups), and none of the readers imports JAX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from hourllava_jax.eval.tasks import lvbench, longvideobench, mlvu, needle, tempcompass, videomme
from hourllava_jax.eval.items import EvalItem, Problem

Loader = Callable[[Path], tuple[list[EvalItem], list[Problem]]]

LOADERS: dict[str, Loader] = {
    "videomme": videomme.load,
    "videomme_sub": functools.partial(videomme.load, subtitles=True),
    "longvideobench": longvideobench.load,
    "mlvu": mlvu.load,
    "lvbench": lvbench.load,
    "tempcompass": tempcompass.load,
    "needle": needle.load,
}
NAMES = tuple(LOADERS)


def load(name: str, root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Items and problems of benchmark `name` (one of NAMES) under `root`."""
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(NAMES)}")
    return LOADERS[name](Path(root))
