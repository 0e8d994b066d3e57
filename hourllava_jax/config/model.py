"""Model configs: SigLIP vision tower, Qwen2 LLM, MemAug, the video/image memory rules, and the
whole Hour-LLaVA model (SPEC §1). Presets live in ``configs/model/*.yaml``.

``from_hf_config`` / ``to_hf_config`` map Hugging Face ``config.json`` dicts (Qwen2ForCausalLM,
SiglipVisionModel, LLaVA-NeXT-style Hour-LLaVA) to these classes and back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from hourllava_jax.config.base import ConfigError

Dtype = Literal["float32", "bfloat16", "float16"]
AttentionImpl = Literal["auto", "reference", "chunked", "pallas_tpu", "pallas_gpu"]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower (SPEC §1.1). so400m-patch14-384: 1152/4304/16 heads, 27 layers in the
    original model; the release keeps 26 and reads the last of them without post-layernorm."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26  # layers the tower holds (a plain SigLIP checkpoint has 27)
    # Which hidden state is the output, in HF's ``hidden_states`` indexing (0 = embeddings):
    # -1 for the release's truncated tower, -2 for a full SigLIP (= its penultimate layer).
    feature_layer: int = -1
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 384
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    # Held only so that checkpoints round-trip; never used for Hour-LLaVA features.
    has_post_layernorm: bool = True
    vision_use_head: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def num_used_layers(self) -> int:
        """Encoder layers actually run to produce the features."""
        return self.num_hidden_layers + 1 + self.feature_layer if self.feature_layer < 0 else self.feature_layer

    def validate(self) -> None:
        _require(self.hidden_size % self.num_attention_heads == 0, "vision: hidden_size must divide by num_attention_heads")
        # 384 / 14 is not whole: the stride-14 convolution ignores the last 6 pixels (27x27 grid).
        _require(self.image_size >= self.patch_size, "vision: image_size must be at least patch_size")
        _require(1 <= self.num_used_layers <= self.num_hidden_layers, f"vision: feature_layer {self.feature_layer} out of range for {self.num_hidden_layers} layers")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Qwen2 / Qwen2.5 decoder (SPEC §1, table)."""

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 32768
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] = 151645
    pad_token_id: int | None = 151643

    @property
    def kv_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else tuple(self.eos_token_id)

    def validate(self) -> None:
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "llm: num_attention_heads must be a multiple of num_key_value_heads")
        _require(self.head_dim is not None or self.hidden_size % self.num_attention_heads == 0, "llm: hidden_size must divide by num_attention_heads")
        _require(self.kv_head_dim % 2 == 0, "llm: head_dim must be even for RoPE")


@dataclasses.dataclass(frozen=True)
class MemAugConfig:
    """MemAug (SPEC §1.5). Width, heads, kv heads and rope_theta are copied from the LLM."""

    depth: int = 4
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-5
    rotary_fraction: float = 0.5  # RoPE on the first half of each head
    init_std: float = 0.02


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Video memory repository and forgetting (SPEC §1.2–1.3), images (SPEC §1.6)."""

    pool_size: int = 8  # 27x27 SigLIP grid bilinear-resized to 8x8 per frame
    min_frames: int = 128  # videos with fewer frames are repeated up to this; 0 disables
    spatial_keep_ratio: float = 0.25  # ceil(0.25 * 64) = 16 tokens per frame
    spatial_mode: Literal["random", "uniform"] = "uniform"
    temporal_mode: Literal["uniform", "random", "keyframe", "question"] = "uniform"
    temporal_ratio: int = 4  # F = min(max_decayed_frames, T // temporal_ratio)
    max_decayed_frames: int = 512
    keyframe_window: int = 9
    temporal_forgetting: bool = True  # False in stage 1 (spatial only)
    image_grid_pinpoints_max: int = 6  # anyres_max_9 pinpoints (i*384, j*384), i, j in 1..6
    image_max_crops: int = 9

    def spatial_keep(self) -> int:
        return math.ceil(self.spatial_keep_ratio * self.pool_size**2)


@dataclasses.dataclass(frozen=True)
class HourLlavaConfig:
    """The whole model: SigLIP -> projector -> memory -> MemAug -> Qwen2 (SPEC §1)."""

    vision: VisionConfig = VisionConfig()
    llm: LLMConfig = LLMConfig()
    memaug: MemAugConfig = MemAugConfig()
    memory: MemoryConfig = MemoryConfig()
    projector_type: Literal["mlp2x_gelu"] = "mlp2x_gelu"
    use_memaug: bool = True  # False: decayed tokens straight into the LLM (paper ablation)
    max_length: int = 32768
    image_token_id: int = -200  # LLaVA's placeholder id for <image> in tokenized sequences
    dtype: Dtype = "float32"  # compute dtype; parameters stay in param_dtype
    param_dtype: Dtype = "float32"
    attention_impl: AttentionImpl = "auto"
    # (block_q, block_k) tiles for chunked / Pallas attention; None: per-backend defaults
    # (hourllava_jax/kernels/blocks.py). Checked against the target's rules when traced.
    attention_block_sizes: tuple[int, int] | None = None
    # Hold each tower's layers (SigLIP, MemAug, Qwen2) as one stack of float[layers, ...] Params
    # run as a scanned body: compile time independent of depth (hourllava_jax/model/scan.py).
    # Checkpoints keep per-layer names either way.
    scan_layers: bool = False

    def validate(self) -> None:
        self.vision.validate()
        self.llm.validate()
        h, n = self.llm.hidden_size, self.llm.num_attention_heads
        _require(h % n == 0, "memaug: LLM hidden_size must divide by its heads (MemAug head_dim = H / heads)")
        d = h // n
        _require(int(d * self.memaug.rotary_fraction) % 2 == 0, f"memaug: rotary dim {d * self.memaug.rotary_fraction} must be even")


# ----------------------------------------------------------------------------------------------
# Hugging Face config.json mapping
# ----------------------------------------------------------------------------------------------


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
