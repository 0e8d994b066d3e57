"""Hugging Face ``config.json`` dicts <-> typed model configs, all three in one place.

* ``Qwen2ForCausalLM`` <-> :class:`~hourllava_jax.config.LLMConfig`
  (:func:`llm_from_hf_config` / :func:`llm_to_hf_config`);
* ``SiglipVisionModel`` <-> :class:`~hourllava_jax.config.VisionConfig`
  (:func:`vision_from_hf_config` / :func:`vision_to_hf_config`);
* Hour-LLaVA (LLaVA-NeXT ``LlavaQwenForCausalLM``) <-> :class:`~hourllava_jax.config.HourLlavaConfig`
  (:func:`hour_llava_config_from_hf` / :func:`hour_llava_to_hf_config`). The release's
  ``config.json`` names the vision tower by hub id (``mm_vision_tower``) and holds no MemAug
  section; depth and tower size are read from the tensors, and our exports write explicit
  ``vision_config`` / ``hourllava`` sections so they are self-describing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hourllava_jax.config import ConfigError, HourLlavaConfig, LLMConfig, MemAugConfig, MemoryConfig, VisionConfig, from_dict, to_dict
from hourllava_jax.config.tokens import IMAGE_TOKEN_ID
from hourllava_jax.convert.hour_llava_keys import NEWLINE_KEY, RESAMPLER_PREFIX
from hourllava_jax.convert.siglip_keys import HOURLLAVA_PREFIX, siglip_num_layers

SO400M_TOWER = "google/siglip-so400m-patch14-384"


def _rope_theta(hf: dict[str, Any]) -> float:
    if "rope_theta" in hf:
        return float(hf["rope_theta"])
    params = hf.get("rope_parameters") or {}
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return 10000.0


def llm_from_hf_config(hf: dict[str, Any]) -> LLMConfig:
    """Qwen2 ``config.json`` (``Qwen2ForCausalLM`` or an LLaVA-NeXT checkpoint's top level)."""
    rope = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ConfigError(f"llm: rope scaling {rope!r} is not supported (only default RoPE)")
    if hf.get("use_sliding_window"):
        raise ConfigError("llm: sliding-window attention is not supported")
    heads = hf["num_attention_heads"]
    eos = hf.get("eos_token_id", 151645)
    cfg = LLMConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") if hf.get("head_dim") not in (None, hf["hidden_size"] // heads) else None,
        rope_theta=_rope_theta(hf),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=hf.get("pad_token_id"),
    )
    cfg.validate()
    return cfg


def llm_to_hf_config(cfg: LLMConfig) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.kv_head_dim,
        "hidden_act": "silu",
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
    }


def vision_from_hf_config(hf: dict[str, Any], *, truncated: bool = False) -> VisionConfig:
    """SigLIP ``config.json`` (``SiglipVisionModel``, or the ``vision_config`` of a ``SiglipModel``).

    ``truncated`` is True for the tower inside an Hour-LLaVA checkpoint, whose last layer the
    release already deleted: its output is then the last held layer.
    """
    hf = hf.get("vision_config", hf)
    if hf.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise ConfigError(f"vision: activation {hf.get('hidden_act')!r} is not supported (SigLIP uses gelu_pytorch_tanh)")
    cfg = VisionConfig(
        hidden_size=hf.get("hidden_size", 768),
        intermediate_size=hf.get("intermediate_size", 3072),
        num_hidden_layers=hf.get("num_hidden_layers", 12),
        # Our exports record the tower's own choice; otherwise the release's rule.
        feature_layer=int(hf.get("hourllava_feature_layer", -1 if truncated else -2)),
        num_attention_heads=hf.get("num_attention_heads", 12),
        num_channels=hf.get("num_channels", 3),
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-6)),
        has_post_layernorm=True,
        vision_use_head=bool(hf.get("vision_use_head", True)) and not truncated,
    )
    cfg.validate()
    return cfg


def vision_to_hf_config(cfg: VisionConfig) -> dict[str, Any]:
    return {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_channels": cfg.num_channels,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": cfg.layer_norm_eps,
        "attention_dropout": 0.0,
        "vision_use_head": cfg.vision_use_head,
        # Not an HF field: which hidden state the tower outputs, so a truncated tower round-trips.
        "hourllava_feature_layer": cfg.feature_layer,
    }


# ------------------------------------------------------------------------------ Hour-LLaVA


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
        image_token_id=int(ours.get("image_token_id", IMAGE_TOKEN_ID)),
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


__all__ = [
    "hour_llava_config_from_hf", "hour_llava_to_hf_config", "llm_from_hf_config", "llm_to_hf_config",
    "vision_from_hf_config", "vision_to_hf_config",
]
