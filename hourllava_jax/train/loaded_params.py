"""What an ``init.from`` source gives the trainer (``train/warm_start.py``): placed parameters,
the names it could not use, and the one shape check every source applies."""

from __future__ import annotations

import dataclasses

import jax

from hourllava_jax.config.base import ConfigError

ParamPath = tuple[str | int, ...]
Targets = dict[ParamPath, jax.ShapeDtypeStruct]  # each with its target sharding


def dotted(path: ParamPath) -> str:
    return ".".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class LoadedParams:
    """What a source gave: arrays placed on their targets' shardings, and what it could not give."""

    params: dict[ParamPath, jax.Array]  # target path -> array (target shape, dtype, sharding)
    unused: tuple[str, ...]  # source parameters with no counterpart in the model (dotted paths)
    description: str  # where they came from, for the log


def check_shape(source: str, path: ParamPath, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise ConfigError(f"init.from={source}: parameter {dotted(path)} has shape {tuple(got)} in the source "
                          f"but {tuple(want)} in the model")
