"""``init.from`` a Hugging Face directory: its parameters placed straight onto a training run's
shardings (the training entry point hands this to ``train/warm_start.py``).

Reuses :func:`~hourllava_jax.convert.api.load_pretrained` with a ``place`` callback, so a
checkpoint is read one tensor at a time (memory-mapped safetensors), cast, and each tensor is
put on its devices before the next is read: the host never holds more than one tensor plus the
process's own shards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hourllava_jax.convert.api import detect_architecture, load_pretrained
from hourllava_jax.convert.mapping import ConversionError, Path as ParamPath


def _dotted(path: ParamPath) -> str:
    return ".".join(str(p) for p in path)


def _put(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    # Each process copies only its addressable shards (works with several processes too).
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _scanned(paths: Mapping[ParamPath, Any]) -> bool:
    """Whether params by path are in the scanned layout: a stack's path runs ``(..., "layers",
    name, ...)``, a per-layer module's ``(..., "layers", i, ...)`` (model/scan.py)."""
    return any(a == "layers" and isinstance(b, str) for p in paths for a, b in zip(p, p[1:]))


def load_params_placed(
    source: str | Path, targets: Mapping[ParamPath, jax.ShapeDtypeStruct], *, dtype: Any
) -> tuple[dict[ParamPath, jax.Array], list[str]]:
    """The parameters of HF directory ``source`` that ``targets`` (abstract params with their
    shardings, by path) has, each cast to ``dtype`` and placed on its target's sharding; and the
    dotted paths of the source's parameters that ``targets`` lacks.

    The directory must hold an Hour-LLaVA model (``hourllava-convert compose`` output or a
    published checkpoint); a shape mismatch is an error naming the parameter and both shapes.
    The source is read in the targets' layout, per-layer or scanned stacks (``scan_layers``,
    the 3B/7B presets' default): its per-layer tensors fill the stacks slice by slice.
    """
    config = Path(source) / "config.json"
    try:
        kind = detect_architecture(json.loads(config.read_text()), str(config))
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{config}: unreadable ({e})") from None
    if kind != "hour_llava":
        raise ConversionError(f"init.from={source}: a {kind} directory; training starts from an Hour-LLaVA directory "
                              "(compose SigLIP + Qwen2 first: hourllava-convert compose)")
    loaded: dict[ParamPath, jax.Array] = {}
    unused: list[str] = []

    def place(path: ParamPath, x: np.ndarray) -> Any:
        path = tuple(path)
        target = targets.get(path)
        if target is None:
            unused.append(_dotted(path))
            return np.zeros((0,), x.dtype)  # hold nothing: the loaded model is thrown away
        if tuple(x.shape) != tuple(target.shape):
            raise ConversionError(f"init.from={source}: parameter {_dotted(path)} has shape {tuple(x.shape)} in the "
                                  f"source but {tuple(target.shape)} in the model")
        loaded[path] = _put(x.astype(target.dtype, copy=False), target.sharding)
        return loaded[path]

    load_pretrained(source, dtype=dtype, place=place, scan_layers=_scanned(targets))
    return loaded, unused
