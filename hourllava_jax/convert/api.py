"""``load_pretrained`` / ``save_pretrained``: Hugging Face directories <-> NNX models.

Supported layouts (detected from ``config.json``):

* ``Qwen2ForCausalLM`` (Qwen2 / Qwen2.5 LLMs) -> :class:`~hourllava_jax.model.qwen2.Qwen2`
* ``SiglipVisionModel`` (keys with or without ``vision_model.``) -> :class:`~hourllava_jax.model.siglip.SiglipVisionTower`
* Hour-LLaVA (LLaVA-NeXT ``LlavaQwenForCausalLM`` layout, design §1) -> :class:`~hourllava_jax.model.hour_llava.HourLlava`

Loading builds the model abstractly (``nnx.eval_shape``: no random init, no memory), then reads
and places one tensor at a time, cast to ``dtype`` and, when ``place`` is given, put straight onto
its target sharding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.config import HourLlavaConfig, LLMConfig, VisionConfig
from hourllava_jax.convert.hf_config import (
    hour_llava_config_from_hf,
    hour_llava_to_hf_config,
    llm_from_hf_config,
    llm_to_hf_config,
    vision_from_hf_config,
    vision_to_hf_config,
)
from hourllava_jax.convert.mapping import ConversionError, Path as ParamPath, TensorRule, iter_hf_tensors, load_tensors
from hourllava_jax.convert.safetensors_io import DEFAULT_MAX_SHARD_BYTES, CheckpointReader, write_checkpoint

Placer = Callable[[ParamPath, np.ndarray], jax.Array]

_LLM_ARCHS = {"Qwen2ForCausalLM"}
_VISION_ARCHS = {"SiglipVisionModel"}
_HOUR_LLAVA_ARCHS = {"LlavaQwenForCausalLM", "HourLlavaForCausalLM"}


def detect_architecture(hf_config: dict[str, Any], source: str = "config.json") -> str:
    """``"llm"``, ``"vision"`` or ``"hour_llava"``; an error names the unknown architecture."""
    archs = set(hf_config.get("architectures") or [])
    model_type = hf_config.get("model_type", "")
    if archs & _HOUR_LLAVA_ARCHS or model_type in ("llava_qwen", "hour_llava") or "mm_vision_tower" in hf_config:
        return "hour_llava"
    if archs & _LLM_ARCHS or model_type == "qwen2":
        return "llm"
    if archs & _VISION_ARCHS or model_type == "siglip_vision_model":
        return "vision"
    raise ConversionError(
        f"{source}: unknown architecture (architectures={sorted(archs)}, model_type={model_type!r}); "
        "supported: Qwen2ForCausalLM, SiglipVisionModel, Hour-LLaVA (LlavaQwenForCausalLM)"
    )


def _vision_prefix(keys: list[str]) -> str:
    return "vision_model." if any(k.startswith("vision_model.") for k in keys) else ""


def _build_llm(cfg: LLMConfig, dtype, param_dtype):
    from hourllava_jax.model.qwen2 import Qwen2

    return nnx.eval_shape(lambda: Qwen2(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


def _build_vision(cfg: VisionConfig, dtype, param_dtype):
    from hourllava_jax.model.siglip import SiglipVisionTower

    return nnx.eval_shape(lambda: SiglipVisionTower(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


def _llm_rules(cfg: LLMConfig, prefix: str = "model.") -> list[TensorRule]:
    from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules

    return qwen2_hf_rules(cfg, prefix=prefix)


def _vision_rules(cfg: VisionConfig, prefix: str) -> list[TensorRule]:
    from hourllava_jax.convert.siglip_keys import siglip_hf_rules

    return siglip_hf_rules(cfg, prefix)


def _ignorable(key: str, tied: bool) -> bool:
    """Keys real checkpoints may carry that hold nothing to load: a tied model's duplicate
    ``lm_head.weight`` and SigLIP's non-persistent ``position_ids`` buffer of older exports."""
    return (tied and key == "lm_head.weight") or key.endswith("embeddings.position_ids")


def load_pretrained(
    path: str | Path,
    dtype: Any = jnp.float32,
    *,
    compute_dtype: Any = None,
    place: Placer | None = None,
    strict: bool = True,
    scan_layers: bool | None = None,
) -> tuple[Any, nnx.Module]:
    """Loads an HF directory. Returns ``(config, model)``.

    ``dtype`` is the parameter dtype (tensors are cast to it; None keeps the checkpoint's
    floating dtype, read from its first tensor); ``compute_dtype`` the activation
    dtype (default: ``dtype``). ``place(path, array)`` places each parameter (e.g. with its
    sharding; see ``hourllava_jax.parallel``); default: the default device. ``scan_layers``
    (Hour-LLaVA directories): build the model with its layers as scanned stacks (True) or one
    module per layer (False); None keeps the config's default. The checkpoint's per-layer
    names serve both layouts.
    """
    with CheckpointReader(path) as reader:
        param_dtype = jnp.dtype(dtype) if dtype is not None else reader.dtype(reader.keys()[0])
        compute = jnp.dtype(compute_dtype) if compute_dtype is not None else param_dtype
        hf = reader.config()
        kind = detect_architecture(hf, str(Path(path) / "config.json"))
        keys = reader.keys()
        if kind == "llm":
            cfg: Any = llm_from_hf_config(hf)
            model = _build_llm(cfg, compute, param_dtype)
            rules = _llm_rules(cfg)
        elif kind == "vision":
            cfg = vision_from_hf_config(hf)
            prefix = _vision_prefix(keys)
            cfg = dataclasses.replace(cfg, has_post_layernorm=f"{prefix}post_layernorm.weight" in reader)
            model = _build_vision(cfg, compute, param_dtype)
            rules = _vision_rules(cfg, prefix)
        else:
            from hourllava_jax.convert.hour_llava_keys import build_hour_llava, hour_llava_hf_rules

            cfg = hour_llava_config_from_hf(hf, keys, reader.shape)
            if scan_layers is not None:
                cfg = dataclasses.replace(cfg, scan_layers=scan_layers)
            model = build_hour_llava(cfg, compute, param_dtype)
            rules = hour_llava_hf_rules(cfg)
        tied = getattr(getattr(cfg, "llm", cfg), "tie_word_embeddings", False)
        keys = [k for k in keys if not _ignorable(k, tied)]
        load_tensors(model, reader.get, keys, rules, dtype=param_dtype, strict=strict, place=place, source=str(path))
    return cfg, model


def _hf_config_and_rules(model: nnx.Module, config: Any) -> tuple[dict[str, Any], list[TensorRule]]:
    if isinstance(config, LLMConfig):
        return llm_to_hf_config(config), _llm_rules(config)
    if isinstance(config, VisionConfig):
        # Saved as transformers does for a SiglipVisionModel: keys under ``vision_model.``.
        return vision_to_hf_config(config), _vision_rules(config, "vision_model.")
    if isinstance(config, HourLlavaConfig):
        from hourllava_jax.convert.hour_llava_keys import hour_llava_hf_rules

        return hour_llava_to_hf_config(config), hour_llava_hf_rules(config)
    raise ConversionError(f"save_pretrained: unsupported config type {type(config).__name__}")


def save_pretrained(
    model: nnx.Module,
    config: Any,
    path: str | Path,
    *,
    dtype: Any = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    read: Callable[[ParamPath], np.ndarray] | None = None,
) -> Path:
    """Writes ``model`` in the Hugging Face layout (safetensors, sharded past ``max_shard_bytes``).

    Tensors keep their parameter dtype unless ``dtype`` is given. ``read(path)`` supplies each
    parameter instead of ``model``, which may then be abstract (``nnx.eval_shape``): export
    streams a training checkpoint this way, one tensor at a time. Atomic: on any failure nothing
    is left at ``path``.
    """
    hf_config, rules = _hf_config_and_rules(model, config)
    cast = np.dtype(jnp.dtype(dtype)) if dtype is not None else None
    tensors = ((k, v.astype(cast) if cast is not None else v) for k, v in iter_hf_tensors(model, rules, read=read))
    return write_checkpoint(path, tensors, hf_config, max_shard_bytes=max_shard_bytes, overwrite=overwrite)
