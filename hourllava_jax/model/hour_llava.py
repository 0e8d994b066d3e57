"""Hour-LLaVA: SigLIP -> projector -> memory repository -> MemAug -> Qwen2 (design §1).

The jitted forward takes a batch of padded arrays (all static shapes):

=================  ===========================  ===============================================
key                shape / dtype                meaning
=================  ===========================  ===============================================
input_ids          int32[B, L]                  conversation tokens, ``<image>`` = image_token_id
attention_mask     bool[B, L]                   False on right padding
labels             int32[B, L] (training)       -100 = not supervised (design §4)
features           float[B, U, P, C]            visual units (video frames already pooled to
                                                P = p² tokens, or image crops), before the
                                                projector; only read flattened (collate packs
                                                smaller units into P); or instead:
pixels             float[B, U, S, S, 3]         normalised video frames for the vision tower
                                                (pooled to p² tokens each); or instead:
image_pixels       float[B, U, S, S, 3]         normalised image units (anyres base + crops,
                                                or one per image), not pooled (design §1.2)
memory_src         int32[B, M]                  see :mod:`hourllava_jax.memory.layout`;
                   or int32[B, M, 4]            with ``memory_w``: anyres images (design §1.4)
memory_w           float32[B, M, 4] (optional)  tap weights: slot = sum_t w_t·projected[src_t]
memory_pos         int32[B, M]                  RoPE ids of the memory slots
decayed            int32[B, K, N]               memory slots of each placeholder's decayed
                                                tokens (-1 = padding)
=================  ===========================  ===============================================

Text-only batches carry only the first three keys and skip the visual path (the release runs a
dummy image through MemAug for DDP's sake; design §1.4).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.config.tokens import IGNORE_INDEX
from hourllava_jax.kernels import BlockSizes
from hourllava_jax.memory.gather import gather_decayed, gather_memory
from hourllava_jax.memory.resize import pool_frames
from hourllava_jax.model.memaug import MemAug
from hourllava_jax.model.projector import Projector
from hourllava_jax.model.qwen2 import Qwen2
from hourllava_jax.model.siglip import SiglipVisionTower
from hourllava_jax.model.splice import LLMInputs, build_query, splice_llm_inputs
from hourllava_jax.parallel.axes import EMBED, param_init

Batch = dict[str, jax.Array]


class HourLlava(nnx.Module):
    """The whole model. ``use_memaug=False`` (config) is the paper's ablation: decayed tokens go
    straight into the LLM and no MemAug parameters exist. ``remat``: one
    :mod:`~hourllava_jax.model.remat` policy name for every layer of SigLIP, MemAug and Qwen2
    (``True``/``False`` mean ``full``/``none``); frozen towers are not differentiated, so it
    costs them nothing. ``vision_grad_max_frames`` > 0: a sample whose video has more frames
    than this gets no gradient through the vision tower (the release encodes such videos under
    ``torch.no_grad``, ``encode_images_offload``); 0 trains through every frame."""

    def __init__(self, cfg: HourLlavaConfig, *, rngs: nnx.Rngs, dtype: Any = None, param_dtype: Any = None,
                 remat: str | bool = "none", vision_grad_max_frames: int = 0):
        cfg.validate()
        self.cfg = cfg
        self.vision_grad_max_frames = int(vision_grad_max_frames)
        self.dtype = jnp.dtype(dtype or cfg.dtype)
        pdt = jnp.dtype(param_dtype or cfg.param_dtype)
        impl = cfg.attention_impl
        blocks = BlockSizes.from_config(cfg.attention_block_sizes)
        h = cfg.llm.hidden_size
        scan = cfg.scan_layers
        self.vision_tower = SiglipVisionTower(cfg.vision, dtype=self.dtype, param_dtype=pdt, attention_impl=impl,
                                               remat=remat, attention_blocks=blocks, scan_layers=scan, rngs=rngs)
        self.projector = Projector(cfg.vision.hidden_size, h, dtype=self.dtype, param_dtype=pdt, rngs=rngs)
        # LLaVA-NeXT initialises the newline as randn(H) / sqrt(H).
        self.image_newline = nnx.Param(param_init(jax.nn.initializers.normal(h**-0.5), (EMBED,))(rngs.params(), (h,), pdt))
        self.memaug = MemAug(cfg, rngs=rngs, dtype=self.dtype, param_dtype=pdt, remat=remat, scan_layers=scan) if cfg.use_memaug else None
        self.llm = Qwen2(cfg.llm, dtype=self.dtype, param_dtype=pdt, attention_impl=impl, remat=remat,
                         attention_blocks=blocks, scan_layers=scan, rngs=rngs)

    # -- visual encoders --------------------------------------------------------------------

    def encode_frames(self, pixels: jax.Array) -> jax.Array:
        """float[N, S, S, 3] -> float[N, p², C]: SigLIP features bilinear-pooled per frame (design §1.2)."""
        return pool_frames(self.vision_tower(pixels), self.cfg.memory.pool_size)

    def encode_images(self, pixels: jax.Array) -> jax.Array:
        """float[N, S, S, 3] -> float[N, g², C]: unpooled crops (design §1.2: images are not pooled)."""
        return self.vision_tower(pixels)

    def project(self, features: jax.Array) -> jax.Array:
        """float[..., C] -> float[..., H] (mlp2x_gelu)."""
        return self.projector(features.astype(self.dtype))

    def build_memory(self, projected: jax.Array, memory_src: jax.Array, memory_w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Gathers the memory repository: projected float[B, U·P, H], memory_src int32[B, M]
        -> (memory float[B, M, H], valid bool[B, M]).

        With ``memory_w`` float32[B, M, T] (anyres images, design §1.4), ``memory_src`` is
        int32[B, M, T] and a slot is ``sum_t w_t * projected[src_t]`` over taps with src_t >= 0
        (the bilinear downscale after the projector); see :func:`~hourllava_jax.memory.gather.gather_memory`.
        """
        return gather_memory(projected, memory_src, self.image_newline[...], memory_w)

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

        def run(x):  # float[B, n, S, S, 3] -> float[B, n, P, C]
            f = enc(x.reshape((b * x.shape[1],) + x.shape[2:]))
            return f.reshape((b, x.shape[1]) + f.shape[1:])

        limit = self.vision_grad_max_frames
        if not limit or u <= limit:  # nobody can be over the limit
            return run(px)
        # A sample over the limit gets no tower gradient (the release's encode_images_offload).
        # Units from `limit` on are real only for such samples, so they are encoded without
        # gradient for everyone: the backward pass (and its saved activations) covers `limit`
        # units per sample, not u. Within the first `limit` units, a per-sample select.
        head, tail = run(px[:, :limit]), jax.lax.stop_gradient(run(px[:, limit:]))
        top = jnp.max(batch["memory_src"].reshape(b, -1), axis=1)  # memory_src = unit * P + token
        units = jnp.where(top >= 0, top // head.shape[2] + 1, 0)
        head = jnp.where((units > limit)[:, None, None, None], jax.lax.stop_gradient(head), head)
        return jnp.concatenate([head, tail], axis=1)

    def llm_inputs(self, batch: Batch, *, video: bool = True) -> LLMInputs:
        """Everything before the LLM: memory, query, MemAug, splice (design §2, §2.4)."""
        cfg = self.cfg
        ids, mask = batch["input_ids"], batch["attention_mask"].astype(bool)
        labels = batch.get("labels")
        text = self.llm.embed(jnp.where(ids == cfg.image_token_id, 0, ids))
        b, length = ids.shape
        if "decayed" not in batch:  # text-only batch
            return LLMInputs(text, labels if labels is not None else jnp.full_like(ids, IGNORE_INDEX), jnp.broadcast_to(jnp.arange(length), (b, length)), mask)
        feats = self.visual_features(batch, video=video)
        projected = self.project(feats).reshape(b, -1, cfg.llm.hidden_size)
        memory, mem_valid = self.build_memory(projected, batch["memory_src"], batch.get("memory_w"))
        mem_pos = batch["memory_pos"].astype(jnp.int32)
        decayed, dpos, dvalid = gather_decayed(memory, mem_pos, batch["decayed"])
        k, n = dvalid.shape[1:]
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


def lm_loss_terms(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row next-token cross-entropy (design §4): logits float[B, L, V] at the LLM's input
    positions, labels int32[B, L] (-100 ignored; the logit at t predicts the label at t+1) ->
    (summed cross-entropy float32[B], supervised token count float32[B])."""
    # The labels move left instead of the logits: slicing logits[:, :-1] copies the whole [B, L, V]
    # tensor (and pads its gradient back), 5.4 GB at 9k tokens x 152k vocabulary in f32.
    tgt = jnp.concatenate([labels[:, 1:], jnp.full_like(labels[:, :1], IGNORE_INDEX)], axis=1)
    valid = tgt != IGNORE_INDEX
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(valid, tgt, 0))
    return jnp.sum(jnp.where(valid, ce, 0.0), axis=-1), valid.sum(-1).astype(jnp.float32)


def lm_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy over all supervised tokens of the batch (design §4): (loss,
    number of supervised tokens). The trainer reduces :func:`lm_loss_terms` instead, as its
    ``loss_reduction`` says."""
    ce, n = lm_loss_terms(logits, labels)
    total = n.sum()
    return ce.sum() / jnp.maximum(total, 1), total.astype(jnp.int32)


def loss_fn(model: HourLlava, batch: Batch, rng: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective: ``(token-mean loss, aux)``; aux holds ``tokens`` (supervised token
    count) and the per-row ``sample_ce`` / ``sample_tokens`` float32[B] that the trainer's
    ``loss_reduction`` (``train/loss_reduction.py``) turns into the loss it differentiates."""
    del rng  # forgetting randomness is drawn on the host (layout); kept for the trainer's interface
    logits, labels = model(batch)
    ce, n = lm_loss_terms(logits, labels)
    total = n.sum()
    return ce.sum() / jnp.maximum(total, 1), {"tokens": total, "sample_ce": ce, "sample_tokens": n}
