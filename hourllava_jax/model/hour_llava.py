"""Hour-LLaVA: SigLIP -> projector -> memory repository -> MemAug -> Qwen2 (SPEC §1).

The jitted forward takes a batch of padded arrays (all static shapes):

=================  ===========================  ===============================================
key                shape / dtype                meaning
=================  ===========================  ===============================================
input_ids          int32[B, L]                  conversation tokens, ``<image>`` = image_token_id
attention_mask     bool[B, L]                   False on right padding
labels             int32[B, L] (training)       -100 = not supervised (SPEC §3)
features           float[B, U, P, C]            visual units (video frames already pooled to
                                                P = p² tokens, or image crops), before the
                                                projector; only read flattened (collate packs
                                                smaller units into P); or instead:
pixels             float[B, U, S, S, 3]         normalised video frames for the vision tower
                                                (pooled to p² tokens each); or instead:
image_pixels       float[B, U, S, S, 3]         normalised image units (anyres base + crops,
                                                or one per image), not pooled (SPEC §1.2)
memory_src         int32[B, M]                  see :mod:`hourllava_jax.model.layout`;
                   or int32[B, M, 4]            with ``memory_w``: anyres images (SPEC §1.6)
memory_w           float32[B, M, 4] (optional)  tap weights: slot = sum_t w_t·projected[src_t]
memory_pos         int32[B, M]                  RoPE ids of the memory slots
decayed            int32[B, K, N]               memory slots of each placeholder's decayed
                                                tokens (-1 = padding)
=================  ===========================  ===============================================

Text-only batches carry only the first three keys and skip the visual path (the release runs a
dummy image through MemAug for DDP's sake; SPEC §1.6).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.kernels import BlockSizes
from hourllava_jax.model.layout import NEWLINE, PAD
from hourllava_jax.model.memaug import MemAug
from hourllava_jax.model.memory import pool_frames
from hourllava_jax.model.projector import Projector
from hourllava_jax.model.qwen2 import Qwen2
from hourllava_jax.model.siglip import SiglipVisionTower
from hourllava_jax.model.splice import IGNORE, LLMInputs, build_query, splice_llm_inputs
from hourllava_jax.parallel.axes import EMBED, param_init

Batch = dict[str, jax.Array]


class HourLlava(nnx.Module):
    """The whole model. ``use_memaug=False`` (config) is the paper's ablation: decayed tokens go
    straight into the LLM and no MemAug parameters exist."""

    def __init__(self, cfg: HourLlavaConfig, *, rngs: nnx.Rngs, dtype: Any = None, param_dtype: Any = None, remat: str | bool = "none"):
        cfg.validate()
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype or cfg.dtype)
        pdt = jnp.dtype(param_dtype or cfg.param_dtype)
        impl = cfg.attention_impl
        blocks = BlockSizes.from_config(cfg.attention_block_sizes)
        h = cfg.llm.hidden_size
        scan = cfg.scan_layers
        self.vision_tower = SiglipVisionTower(cfg.vision, dtype=self.dtype, param_dtype=pdt, attention_impl=impl,
                                               attention_blocks=blocks, scan_layers=scan, rngs=rngs)
        self.projector = Projector(cfg.vision.hidden_size, h, dtype=self.dtype, param_dtype=pdt, rngs=rngs)
        # LLaVA-NeXT initialises the newline as randn(H) / sqrt(H).
        self.image_newline = nnx.Param(param_init(jax.nn.initializers.normal(h**-0.5), (EMBED,))(rngs.params(), (h,), pdt))
        self.memaug = MemAug(cfg, rngs=rngs, dtype=self.dtype, param_dtype=pdt, scan_layers=scan) if cfg.use_memaug else None
        self.llm = Qwen2(cfg.llm, dtype=self.dtype, param_dtype=pdt, attention_impl=impl, remat=remat,
                         attention_blocks=blocks, scan_layers=scan, rngs=rngs)

    # -- visual encoders --------------------------------------------------------------------

    def encode_frames(self, pixels: jax.Array) -> jax.Array:
        """float[N, S, S, 3] -> float[N, p², C]: SigLIP features bilinear-pooled per frame (SPEC §1.2)."""
        return pool_frames(self.vision_tower(pixels), self.cfg.memory.pool_size)

    def encode_images(self, pixels: jax.Array) -> jax.Array:
        """float[N, S, S, 3] -> float[N, g², C]: unpooled crops (SPEC §1.2: images are not pooled)."""
        return self.vision_tower(pixels)

    def project(self, features: jax.Array) -> jax.Array:
        """float[..., C] -> float[..., H] (mlp2x_gelu)."""
        return self.projector(features.astype(self.dtype))

    def build_memory(self, projected: jax.Array, memory_src: jax.Array, memory_w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Gathers the memory repository: projected float[B, U·P, H], memory_src int32[B, M]
        -> (memory float[B, M, H], valid bool[B, M]).

        With ``memory_w`` float32[B, M, T] (anyres images, SPEC §1.6), ``memory_src`` is
        int32[B, M, T] and a slot is ``sum_t w_t * projected[src_t]`` over taps with src_t >= 0
        (the bilinear downscale after the projector); tap 0 carries NEWLINE / PAD as usual.
        """
        if memory_w is None:  # videos: one gather, the M = 234k path
            head = memory_src
            tok = jnp.take_along_axis(projected, jnp.clip(memory_src, 0)[..., None], axis=1)
        else:
            head = memory_src[..., 0]
            tok = jnp.zeros(memory_src.shape[:2] + projected.shape[-1:], jnp.float32)
            for t in range(memory_src.shape[-1]):  # accumulate tap by tap: never a [B, M, T, H] gather
                src = memory_src[..., t]
                x = jnp.take_along_axis(projected, jnp.clip(src, 0)[..., None], axis=1).astype(jnp.float32)
                tok = tok + jnp.where(src >= 0, memory_w[..., t], 0.0)[..., None].astype(jnp.float32) * x
            tok = tok.astype(projected.dtype)
        nl = self.image_newline[...].astype(tok.dtype)
        mem = jnp.where((head == NEWLINE)[..., None], nl, tok)
        valid = head != PAD
        return jnp.where(valid[..., None], mem, 0), valid

    # -- forward -----------------------------------------------------------------------------

    def visual_features(self, batch: Batch, *, video: bool = True) -> jax.Array:
        """Pre-projector features float[B, U, P, C] from ``features`` or by running the tower on
        ``pixels`` (pooled unless ``video=False``) or ``image_pixels`` (never pooled)."""
        if "features" in batch:
            return batch["features"]
        if "image_pixels" in batch:
            px, video = batch["image_pixels"], False
        else:
            px = batch["pixels"]
        b, u = px.shape[:2]
        enc = self.encode_frames if video else self.encode_images
        f = enc(px.reshape((b * u,) + px.shape[2:]))
        return f.reshape((b, u) + f.shape[1:])

    def llm_inputs(self, batch: Batch, *, video: bool = True) -> LLMInputs:
        """Everything before the LLM: memory, query, MemAug, splice (SPEC §1.3–1.4)."""
        cfg = self.cfg
        ids, mask = batch["input_ids"], batch["attention_mask"].astype(bool)
        labels = batch.get("labels")
        text = self.llm.embed(jnp.where(ids == cfg.image_token_id, 0, ids))
        b, length = ids.shape
        if "decayed" not in batch:  # text-only batch
            return LLMInputs(text, labels if labels is not None else jnp.full_like(ids, IGNORE), jnp.broadcast_to(jnp.arange(length), (b, length)), mask)
        feats = self.visual_features(batch, video=video)
        projected = self.project(feats).reshape(b, -1, cfg.llm.hidden_size)
        memory, mem_valid = self.build_memory(projected, batch["memory_src"], batch.get("memory_w"))
        mem_pos = batch["memory_pos"].astype(jnp.int32)
        dec = batch["decayed"]
        dvalid = dec >= 0
        k, n = dec.shape[1:]
        flat = jnp.clip(dec, 0).reshape(b, k * n)
        decayed = jnp.take_along_axis(memory, flat[..., None], axis=1).reshape(b, k, n, -1)
        dpos = jnp.take_along_axis(mem_pos, flat, axis=1).reshape(b, k, n)
        if self.memaug is not None:
            q = build_query(text, ids, mask, labels, decayed, dpos, dvalid, cfg.image_token_id)
            out = self.memaug(q.embeds, memory, q.positions, mem_pos, q_mask=q.valid, kv_mask=mem_valid)
            slot = jnp.clip(q.decayed_slot, 0, out.shape[1] - 1).reshape(b, k * n)
            visual = jnp.take_along_axis(out, slot[..., None], axis=1).reshape(b, k, n, -1)
        else:
            visual = decayed
        out_len = min(cfg.max_length, length + k * n)
        return splice_llm_inputs(text, ids, mask, labels, visual, dvalid, cfg.image_token_id, out_len)

    def __call__(self, batch: Batch, *, video: bool = True) -> tuple[jax.Array, jax.Array]:
        """-> (logits float[B, Lo, V], labels int32[B, Lo] aligned with the logits' inputs)."""
        x = self.llm_inputs(batch, video=video)
        logits = self.llm(inputs_embeds=x.embeds, positions=x.positions, attention_mask=x.valid)
        return logits, x.labels


def lm_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy over supervised tokens (SPEC §3).

    logits float[B, L, V] at the LLM's input positions; labels int32[B, L] (-100 ignored): the
    logit at t predicts the label at t+1. Returns (loss, number of supervised tokens).
    """
    lg = logits[:, :-1].astype(jnp.float32)
    tgt = labels[:, 1:]
    valid = tgt != IGNORE
    ce = optax.softmax_cross_entropy_with_integer_labels(lg, jnp.where(valid, tgt, 0))
    n = valid.sum()
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(n, 1), n


def loss_fn(model: HourLlava, batch: Batch, rng: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective: ``(loss, {"tokens": supervised token count})``."""
    del rng  # forgetting randomness is drawn on the host (layout); kept for the trainer's interface
    logits, labels = model(batch)
    loss, n = lm_loss(logits, labels)
    return loss, {"tokens": n}
