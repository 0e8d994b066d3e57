"""The full Hour-LLaVA checkpoint layout (design §1, LLaVA-NeXT names) <-> :class:`HourLlava`.

=================================================  ======================================
HF key                                             HourLlava parameter
=================================================  ======================================
``model.vision_tower.vision_tower.vision_model.*``  ``vision_tower.*`` (26 SigLIP layers)
``model.mm_projector.{0,2}.*``                      ``projector.linear_{0,2}.*``
``model.vision_resampler.layers.{i}.*``             ``memaug.layers[i].*``
``model.image_newline``                             ``image_newline``
``model.embed_tokens`` / ``model.layers.{i}`` /     ``llm.*``
``model.norm`` / ``lm_head``
=================================================  ======================================

The release's ``config.json`` names the vision tower by hub id (``mm_vision_tower``) and holds no
MemAug section; we read depth and tower size from the tensors, and write explicit
``vision_config`` / ``hourllava`` sections so our exports are self-describing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx

from hourllava_jax.config import (
    ConfigError,
    HourLlavaConfig,
    MemAugConfig,
    MemoryConfig,
    VisionConfig,
    from_dict,
    llm_from_hf_config,
    llm_to_hf_config,
    to_dict,
    vision_from_hf_config,
    vision_to_hf_config,
)
from hourllava_jax.convert.mapping import TensorRule
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules
from hourllava_jax.convert.siglip_keys import HOURLLAVA_PREFIX, siglip_hf_rules, siglip_num_layers
from hourllava_jax.model.memaug import memaug_hf_rules
from hourllava_jax.model.projector import projector_hf_rules

RESAMPLER_PREFIX = "model.vision_resampler."
NEWLINE_KEY = "model.image_newline"
SO400M_TOWER = "google/siglip-so400m-patch14-384"


def _prefixed(rules: list, path_prefix: tuple) -> list[TensorRule]:
    out = []
    for r in rules:
        hf_key, path, perm = (r.hf_key, r.path, r.perm) if isinstance(r, TensorRule) else r
        out.append(TensorRule(hf_key, path_prefix + tuple(path), perm))
    return out


def hour_llava_hf_rules(cfg: HourLlavaConfig) -> list[TensorRule]:
    """Every HourLlava parameter's HF key, in checkpoint order."""
    rules = _prefixed(siglip_hf_rules(cfg.vision, HOURLLAVA_PREFIX), ("vision_tower",))
    rules += _prefixed(projector_hf_rules("model.mm_projector."), ("projector",))
    if cfg.use_memaug:
        rules += _prefixed(memaug_hf_rules(cfg, RESAMPLER_PREFIX), ("memaug",))
    rules.append(TensorRule(NEWLINE_KEY, ("image_newline",)))
    rules += qwen2_hf_rules(cfg.llm, prefix="model.", path_prefix=("llm",))
    return rules


def _count_layers(keys: list[str], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix) and k[len(prefix) :].split(".")[0].isdigit()}
    return max(ids) + 1 if ids else 0


def hour_llava_config_from_hf(hf: dict[str, Any], keys: list[str], shape: Callable[[str], tuple[int, ...]]) -> HourLlavaConfig:
    """Typed config of an Hour-LLaVA directory from its ``config.json`` and tensor names/shapes."""
    llm = llm_from_hf_config(hf)
    ours = hf.get("hourllava") or {}
    if "vision_config" in hf:
        vision = vision_from_hf_config(hf["vision_config"], truncated=True)
    elif SO400M_TOWER.split("/")[-1] in str(hf.get("mm_vision_tower", "")):
        vision = VisionConfig()
    else:
        raise ConfigError(f"config.json: vision tower {hf.get('mm_vision_tower')!r} is unknown and no vision_config is given")
    vision = dataclasses.replace(
        vision,
        num_hidden_layers=siglip_num_layers(keys, HOURLLAVA_PREFIX),
        has_post_layernorm=f"{HOURLLAVA_PREFIX}post_layernorm.weight" in keys,
        vision_use_head=any(k.startswith(f"{HOURLLAVA_PREFIX}head.") for k in keys),
    )
    depth = _count_layers(keys, f"{RESAMPLER_PREFIX}layers.")
    memaug = from_dict(MemAugConfig, ours.get("memaug", {}))
    memaug = dataclasses.replace(memaug, depth=depth or memaug.depth)
    memory = from_dict(MemoryConfig, ours.get("memory", {}))
    cfg = HourLlavaConfig(
        vision=vision,
        llm=llm,
        memaug=memaug,
        memory=memory,
        use_memaug=depth > 0,
        max_length=int(hf.get("tokenizer_model_max_length") or ours.get("max_length") or 32768),
        image_token_id=int(ours.get("image_token_id", -200)),
    )
    if NEWLINE_KEY in keys and shape(NEWLINE_KEY) != (llm.hidden_size,):
        raise ConfigError(f"{NEWLINE_KEY}: shape {shape(NEWLINE_KEY)} != ({llm.hidden_size},)")
    cfg.validate()
    return cfg


def hour_llava_to_hf_config(cfg: HourLlavaConfig) -> dict[str, Any]:
    """LLaVA-NeXT-style ``config.json`` plus explicit ``vision_config`` and ``hourllava`` sections."""
    hf = llm_to_hf_config(cfg.llm)
    so400m = cfg.vision == dataclasses.replace(VisionConfig(), num_hidden_layers=cfg.vision.num_hidden_layers)
    hf.update(
        architectures=["LlavaQwenForCausalLM"],
        model_type="llava_qwen",
        mm_vision_tower=SO400M_TOWER if so400m else "hourllava_jax/custom-siglip",
        mm_projector_type=cfg.projector_type,
        mm_hidden_size=cfg.vision.hidden_size,
        mm_vision_select_layer=-2,
        mm_patch_merge_type="spatial_unpad",
        image_aspect_ratio="anyres_max_9",
        tokenizer_model_max_length=cfg.max_length,
        vision_config=vision_to_hf_config(cfg.vision),
        hourllava={"memaug": to_dict(cfg.memaug), "memory": to_dict(cfg.memory), "image_token_id": cfg.image_token_id},
    )
    return hf


def build_hour_llava(cfg: HourLlavaConfig, dtype: Any, param_dtype: Any) -> nnx.Module:
    """The model, abstract (no parameter memory) until the converter fills it."""
    from hourllava_jax.model.hour_llava import HourLlava

    return nnx.eval_shape(lambda: HourLlava(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
