"""Warm start (``init.from``, design §3.1: each stage starts from the previous one's weights).

A fresh run's parameters come from a training workdir (orbax, read by
:class:`~hourllava_jax.train.checkpoint.CheckpointParams`) or a Hugging Face directory (read by a
loader the entry point injects: ``train/`` imports no model or converter). Either way every
tensor goes straight to its target sharding (no host copy of the model). Parameters the source
lacks keep the model's own init, source parameters the model lacks are ignored; each list is one
log line. Optimizer state, step and data position stay those of a fresh run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from flax import traverse_util

from hourllava_jax.config.base import ConfigError
from hourllava_jax.train.config import TrainConfig
from hourllava_jax.train.state import TrainState

from hourllava_jax.train.loaded_params import LoadedParams, ParamPath, Targets, check_shape, dotted  # noqa: F401


# ``loader(directory, targets, param_dtype) -> LoadedParams``; a shape mismatch raises an error
# naming the parameter and both shapes.
HFParamLoader = Callable[[str, Targets, str], LoadedParams]


def source_kind(source: str | Path) -> str:
    """``"workdir"`` (has ``checkpoints/``) or ``"hf"`` (has ``config.json``); else a ConfigError."""
    p = Path(source)
    if (p / "checkpoints").is_dir():
        return "workdir"
    if (p / "config.json").is_file():
        return "hf"
    raise ConfigError(f"init.from={source}: neither a training workdir (no checkpoints/) nor a Hugging Face "
                      "directory (no config.json)")


def _summary(paths: list[ParamPath], universe: list[ParamPath]) -> str:
    """Whole top-level modules as ``name (all N)``, the rest as dotted paths."""
    out = []
    for top in dict.fromkeys(p[0] for p in paths):
        have = [p for p in paths if p[0] == top]
        total = sum(1 for p in universe if p[0] == top)
        out += [f"{top} (all {total})"] if len(have) == total else [dotted(p) for p in have]
    return ", ".join(out)


def warm_start(cfg: TrainConfig, state: TrainState, abstract_params: Any, hf_loader: HFParamLoader | None) -> TrainState:
    """``state`` (a fresh init) with the parameters of ``cfg.init.source`` put in."""
    from hourllava_jax.train.checkpoint import CheckpointParams

    source = cfg.init.source
    targets: Targets = traverse_util.flatten_dict(abstract_params)
    if source_kind(source) == "workdir":
        loaded = CheckpointParams(source, step=cfg.init.step).restore(targets)
    else:
        if cfg.init.step is not None:
            raise ConfigError(f"init.step={cfg.init.step}: only a training workdir has steps; {source} is a Hugging Face directory")
        if hf_loader is None:
            raise ConfigError(f"init.from={source}: this entry point cannot read Hugging Face directories")
        loaded = hf_loader(source, targets, cfg.param_dtype)
    if not loaded.params:
        raise ConfigError(f"init.from={source}: none of the model's parameters is in the source")
    flat = traverse_util.flatten_dict(state.params)
    flat.update(loaded.params)
    missing = [p for p in targets if p not in loaded.params]
    if jax.process_index() == 0:
        print(f"init: {len(loaded.params)}/{len(targets)} parameters from {loaded.description}", flush=True)
        if missing:
            print(f"init: not in the source, initialised as the model does: {_summary(missing, list(targets))}", flush=True)
        if loaded.unused:
            print(f"init: in the source but not in the model, ignored: {', '.join(loaded.unused)}", flush=True)
    return dataclasses.replace(state, params=traverse_util.unflatten_dict(flat))
