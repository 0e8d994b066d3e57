"""Model configs: SigLIP vision tower, Qwen2 LLM, MemAug, the video/image memory rules, and the
whole Hour-LLaVA model (design §1). Presets live in ``configs/model/*.yaml``; the mappings from
and to Hugging Face ``config.json`` dicts are in :mod:`hourllava_jax.convert.hf_config`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from hourllava_jax.config.base import ConfigError
from hourllava_jax.config.tokens import IMAGE_TOKEN_ID

Dtype = Literal["float32", "bfloat16", "float16"]
AttentionImpl = Literal["auto", "reference", "chunked", "pallas_tpu", "pallas_gpu"]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower (design §1.1). so400m-patch14-384: 1152/4304/16 heads, 27 layers in the
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
    """Qwen2 / Qwen2.5 decoder (design §1, table)."""

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
    # None is valid for transformers (a config.json with "eos_token_id": null): then the chat
    # template's end token <|im_end|>, resolved from the tokenizer, ends a turn (infer/pipeline.py).
    eos_token_id: int | tuple[int, ...] | None = 151645
    pad_token_id: int | None = 151643

    @property
    def kv_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """The configured end ids; empty when ``eos_token_id`` is None."""
        if self.eos_token_id is None:
            return ()
        return (self.eos_token_id,) if isinstance(self.eos_token_id, int) else tuple(self.eos_token_id)

    def validate(self) -> None:
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "llm: num_attention_heads must be a multiple of num_key_value_heads")
        _require(self.head_dim is not None or self.hidden_size % self.num_attention_heads == 0, "llm: hidden_size must divide by num_attention_heads")
        _require(self.kv_head_dim % 2 == 0, "llm: head_dim must be even for RoPE")


@dataclasses.dataclass(frozen=True)
class MemAugConfig:
    """MemAug (design §1.3). Width, heads, kv heads and rope_theta are copied from the LLM."""

    depth: int = 4
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-5
    rotary_fraction: float = 0.5  # RoPE on the first half of each head
    init_std: float = 0.02


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Video memory repository and forgetting (design §1.2, §2), images (design §1.4)."""

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

    def validate(self) -> None:
        # 'question' picks frames by their similarity to the question's embeddings, which exist
        # only inside the jitted forward; the batched path plans frames on the host before it.
        _require(not (self.temporal_forgetting and self.temporal_mode == "question"),
                 "memory.temporal_mode: 'question' is not supported by the batched model (frames are chosen on "
                 "the host, before the question is embedded); use 'uniform', 'random' or 'keyframe' "
                 "(the single-sample spec hourllava_jax.memory.reference.build_video_memory implements it)")


@dataclasses.dataclass(frozen=True)
class HourLlavaConfig:
    """The whole model: SigLIP -> projector -> memory -> MemAug -> Qwen2 (design §1)."""

    vision: VisionConfig = VisionConfig()
    llm: LLMConfig = LLMConfig()
    memaug: MemAugConfig = MemAugConfig()
    memory: MemoryConfig = MemoryConfig()
    projector_type: Literal["mlp2x_gelu"] = "mlp2x_gelu"
    use_memaug: bool = True  # False: decayed tokens straight into the LLM (paper ablation)
    max_length: int = 32768
    image_token_id: int = IMAGE_TOKEN_ID  # LLaVA's placeholder id for <image> in tokenized sequences
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
        self.memory.validate()
        h, n = self.llm.hidden_size, self.llm.num_attention_heads
        _require(h % n == 0, "memaug: LLM hidden_size must divide by its heads (MemAug head_dim = H / heads)")
        d = h // n
        _require(int(d * self.memaug.rotary_fraction) % 2 == 0, f"memaug: rotary dim {d * self.memaug.rotary_fraction} must be even")
