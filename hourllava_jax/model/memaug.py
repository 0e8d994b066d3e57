"""MemAug: the memory-augmentation module (SPEC §1.5; the release's ``vision_resampler``).

``depth`` post-norm blocks, each
```
x = LN1(x + SelfAttn(x, pos_q))                  # bidirectional over the query
x = LN2(x + CrossAttn(x, memory, pos_q, pos_kv)) # memory = raw projected tokens, same every block
x = LN3(x + fc2(GELU(fc0(x))))                   # exact GELU, 4H hidden
```
Grouped-query heads, RoPE on the first half of each head (rotate-half), v not rotated, biases
everywhere. Attribute names map one-to-one onto the release's (``memaug_hf_rules``).

Padding: the release runs one unpadded sample at a time; batches here carry ``q_mask`` /
``kv_mask`` so a padded batch equals the samples run alone (padded query rows are excluded as
self-attention keys, padded memory rows as cross-attention keys; padded output rows are zeroed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.config import HourLlavaConfig, MemAugConfig
from hourllava_jax.kernels import BlockSizes, attention
from hourllava_jax.model.remat import normalize_remat, remat_call
from hourllava_jax.model.rope import apply_rope, rope_cos_sin
from hourllava_jax.model.scan import scan_layers, stack_layers
from hourllava_jax.parallel.axes import EMBED, HEADS, KV_HEADS, MLP, NORM, param_init
from hourllava_jax.parallel.mesh import MEMORY_AXIS, batch_axes


@dataclasses.dataclass(frozen=True)
class MemAugDims:
    """Everything MemAug needs: widths copied from the LLM (SPEC §1.5) plus the MemAug config."""

    hidden: int
    heads: int
    kv_heads: int
    rope_theta: float
    memaug: MemAugConfig = MemAugConfig()
    attention_impl: str = "auto"
    attention_blocks: BlockSizes | None = None

    @classmethod
    def from_config(cls, cfg: HourLlavaConfig) -> MemAugDims:
        return cls(cfg.llm.hidden_size, cfg.llm.num_attention_heads, cfg.llm.num_key_value_heads,
                   cfg.llm.rope_theta, cfg.memaug, cfg.attention_impl,
                   BlockSizes.from_config(cfg.attention_block_sizes))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.memaug.rotary_fraction)

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"MemAug: hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"MemAug: heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise ValueError(f"MemAug: rotary dim {self.rotary_dim} must be even and within head_dim {self.head_dim}")


def _linear(din: int, dout: int, axes: tuple, std: float, rngs: nnx.Rngs, dtype, param_dtype) -> nnx.Linear:
    """Linear with bias, weights N(0, std), bias 0 (SPEC §1.5 init)."""
    return nnx.Linear(din, dout, use_bias=True, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=param_init(nnx.initializers.normal(std), axes),
                      bias_init=param_init(nnx.initializers.zeros_init(), (axes[1],)), rngs=rngs)


def _layer_norm(dim: int, eps: float, rngs: nnx.Rngs, dtype, param_dtype) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                         scale_init=param_init(nnx.initializers.ones_init(), (NORM,)),
                         bias_init=param_init(nnx.initializers.zeros_init(), (NORM,)), rngs=rngs)


class SelfAttention(nnx.Module):
    """Bidirectional GQA self-attention with one fused ``Wqkv`` laid out [q | k | v]."""

    def __init__(self, dims: MemAugDims, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        h, d, std = dims.hidden, dims.head_dim, dims.memaug.init_std
        self.dims = dims
        # The fused output mixes q, k and v, so it is not split by head: replicated on that axis.
        self.Wqkv = _linear(h, (dims.heads + 2 * dims.kv_heads) * d, (EMBED, None), std, rngs, dtype, param_dtype)
        self.Wo = _linear(h, h, (HEADS, EMBED), std, rngs, dtype, param_dtype)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array | None) -> jax.Array:
        """x float[B, L, H]; cos/sin [B, L, rotary]; mask bool[B, L] (valid query rows) -> float[B, L, H]."""
        b, l, _ = x.shape
        nh, nk, d = self.dims.heads, self.dims.kv_heads, self.dims.head_dim
        qkv = self.Wqkv(x)
        q = qkv[..., : nh * d].reshape(b, l, nh, d)
        k = qkv[..., nh * d : (nh + nk) * d].reshape(b, l, nk, d)
        v = qkv[..., (nh + nk) * d :].reshape(b, l, nk, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attention(q, k, v, kv_mask=mask, impl=self.dims.attention_impl, block_sizes=self.dims.attention_blocks)
        return self.Wo(o.reshape(b, l, nh * d))


class CrossAttention(nnx.Module):
    """GQA cross-attention from the query to the memory: ``Wq``, ``Wkv`` laid out [k | v], ``Wo``."""

    def __init__(self, dims: MemAugDims, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32, mesh=None):
        h, d, std = dims.hidden, dims.head_dim, dims.memaug.init_std
        self.dims = dims
        self.mesh = mesh  # with a ``memory`` axis: keys/values split along Lk (memory-parallel)
        self.Wq = _linear(h, dims.heads * d, (EMBED, HEADS), std, rngs, dtype, param_dtype)
        self.Wkv = _linear(h, 2 * dims.kv_heads * d, (EMBED, KV_HEADS), std, rngs, dtype, param_dtype)
        self.Wo = _linear(h, h, (HEADS, EMBED), std, rngs, dtype, param_dtype)

    def __call__(self, x, memory, cos_q, sin_q, cos_k, sin_k, kv_mask):
        """x float[B, Lq, H]; memory float[B, Lk, H]; cos/sin [B, L*, rotary]; kv_mask bool[B, Lk]."""
        b, lq, _ = x.shape
        lk = memory.shape[1]
        nh, nk, d = self.dims.heads, self.dims.kv_heads, self.dims.head_dim
        q = self.Wq(x).reshape(b, lq, nh, d)
        kv = self.Wkv(memory)
        k = kv[..., : nk * d].reshape(b, lk, nk, d)
        v = kv[..., nk * d :].reshape(b, lk, nk, d)
        q, k = apply_rope(q, cos_q, sin_q), apply_rope(k, cos_k, sin_k)
        mesh, batch = self.mesh, None
        if mesh is None:
            # Under ``jax.set_mesh`` (the trainer compiles its step there) a ``memory`` axis of
            # size > 1 makes this memory-parallel, with the batch kept split as the trainer
            # splits it (``data`` x ``fsdp``) instead of gathered onto every memory shard.
            ctx = jax.sharding.get_abstract_mesh()
            if not ctx.empty and ctx.shape.get(MEMORY_AXIS, 1) > 1:
                mesh, batch = ctx, tuple(a for a in batch_axes(ctx) if ctx.shape[a] > 1) or None
        o = attention(q, k, v, kv_mask=kv_mask, impl=self.dims.attention_impl, block_sizes=self.dims.attention_blocks,
                      mesh=mesh, batch_axis=batch)
        return self.Wo(o.reshape(b, lq, nh * d))


class MemAugMLP(nnx.Module):
    """fc0: H -> 4H, exact GELU, fc2: 4H -> H (the release's ``mlp.0`` / ``mlp.2``)."""

    def __init__(self, dims: MemAugDims, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        h, f, std = dims.hidden, dims.memaug.mlp_ratio * dims.hidden, dims.memaug.init_std
        self.fc0 = _linear(h, f, (EMBED, MLP), std, rngs, dtype, param_dtype)
        self.fc2 = _linear(f, h, (MLP, EMBED), std, rngs, dtype, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc0(x), approximate=False))


class MemAugBlock(nnx.Module):
    """One post-norm block (SPEC §1.5)."""

    def __init__(self, dims: MemAugDims, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32, mesh=None):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        eps = dims.memaug.layer_norm_eps
        self.self_attn = SelfAttention(dims, **kw)
        self.cross_attn = CrossAttention(dims, **kw, mesh=mesh)
        self.mlp = MemAugMLP(dims, **kw)
        self.norm1 = _layer_norm(dims.hidden, eps, rngs, dtype, param_dtype)
        self.norm2 = _layer_norm(dims.hidden, eps, rngs, dtype, param_dtype)
        self.norm3 = _layer_norm(dims.hidden, eps, rngs, dtype, param_dtype)

    def __call__(self, x, memory, rope_q, rope_k, q_mask, kv_mask):
        x = self.norm1(x + self.self_attn(x, *rope_q, q_mask))
        x = self.norm2(x + self.cross_attn(x, memory, *rope_q, *rope_k, kv_mask))
        return self.norm3(x + self.mlp(x))


def _block_step(block, x, memory, rope_q, rope_k, q_mask, kv_mask):
    return block(x, memory, rope_q, rope_k, q_mask, kv_mask)


class MemAug(nnx.Module):
    """``depth`` MemAug blocks; ``layers`` is an ``nnx.List`` (state paths ``layers/<i>/...``), or
    with ``scan_layers`` one stack of float[depth, ...] Params run as a scanned body (model/scan.py).

    Args:
      cfg: the whole-model config (widths from its LLM) or an explicit :class:`MemAugDims`.
      dtype: compute dtype (default: ``cfg.dtype`` for a HourLlavaConfig, else float32);
      param_dtype: parameter dtype (default: ``cfg.param_dtype``, else float32).
      mesh: optional; if it has a ``memory`` axis of size > 1 the cross-attention runs
        memory-parallel (``kernels.attention(mesh=...)``: K/V split along the memory tokens).
      remat: policy name (model/remat.py) for recomputing each block in the backward pass.
      scan_layers: stack the blocks (default: ``cfg.scan_layers`` for a HourLlavaConfig, else False).
    """

    def __init__(self, cfg: HourLlavaConfig | MemAugDims, *, rngs: nnx.Rngs, dtype=None, param_dtype=None, mesh=None,
                 remat: str | bool = "none", scan_layers: bool | None = None):
        if isinstance(cfg, HourLlavaConfig):
            scan_layers = cfg.scan_layers if scan_layers is None else scan_layers
            dims = MemAugDims.from_config(cfg)
            dtype = jnp.dtype(cfg.dtype) if dtype is None else dtype
            param_dtype = jnp.dtype(cfg.param_dtype) if param_dtype is None else param_dtype
        elif isinstance(cfg, MemAugDims):
            dims = cfg
        else:
            raise TypeError(f"MemAug: cfg must be HourLlavaConfig or MemAugDims, got {type(cfg).__name__}")
        dims.validate()
        self.dims = dims
        self.dtype = jnp.dtype(jnp.float32 if dtype is None else dtype)
        param_dtype = jnp.float32 if param_dtype is None else param_dtype
        self.remat = normalize_remat(remat)
        self.scan_layers = bool(scan_layers)
        make = lambda r: MemAugBlock(dims, rngs=r, dtype=self.dtype, param_dtype=param_dtype, mesh=mesh)  # noqa: E731
        if self.scan_layers:
            self.layers = stack_layers(make, dims.memaug.depth, rngs)
        else:
            self.layers = nnx.List([make(rngs) for _ in range(dims.memaug.depth)])

    def __call__(self, x: jax.Array, memory: jax.Array, q_positions: jax.Array, kv_positions: jax.Array,
                 q_mask: jax.Array | None = None, kv_mask: jax.Array | None = None) -> jax.Array:
        """Updates the query with the memory.

        Args:
          x: float[B, Lq, H] query (text embeddings + decayed visual tokens).
          memory: float[B, Lk, H] memory repository (raw projected tokens).
          q_positions: int32[B, Lq]; kv_positions: int32[B, Lk] (RoPE ids, SPEC §1.4).
          q_mask: bool[B, Lq], False for padded query rows; kv_mask: bool[B, Lk], False for padding.
        Returns:
          float[B, Lq, H] in the compute dtype; padded query rows are 0.
        """
        h = self.dims.hidden
        if x.ndim != 3 or memory.ndim != 3 or x.shape[-1] != h or memory.shape[-1] != h:
            raise ValueError(f"MemAug: expected x[B, Lq, {h}] and memory[B, Lk, {h}], got {x.shape} and {memory.shape}")
        if x.shape[0] != memory.shape[0]:
            raise ValueError(f"MemAug: batch mismatch x{x.shape} memory{memory.shape}")
        if q_positions.shape != x.shape[:2] or kv_positions.shape != memory.shape[:2]:
            raise ValueError(f"MemAug: positions q{q_positions.shape} kv{kv_positions.shape} do not match x{x.shape[:2]} memory{memory.shape[:2]}")
        for name, m, ref in (("q_mask", q_mask, x), ("kv_mask", kv_mask, memory)):
            if m is not None and m.shape != ref.shape[:2]:
                raise ValueError(f"MemAug: {name} shape {m.shape} != {ref.shape[:2]}")
        x = x.astype(self.dtype)
        memory = memory.astype(self.dtype)
        # cos/sin once per call (fp32 angles, cast to the activation dtype), shared by all blocks.
        r, theta = self.dims.rotary_dim, self.dims.rope_theta
        rope_q = rope_cos_sin(q_positions, r, theta, self.dtype)
        rope_k = rope_cos_sin(kv_positions, r, theta, self.dtype)
        if self.scan_layers:
            x = scan_layers(self.layers, _block_step, x, memory, rope_q, rope_k, q_mask, kv_mask, remat=self.remat)
        else:
            for layer in self.layers:
                x = remat_call(self.remat, layer, _block_step, x, memory, rope_q, rope_k, q_mask, kv_mask)
        if q_mask is not None:
            x = jnp.where(q_mask[..., None], x, 0)
        return x


def memaug_hf_rules(cfg: HourLlavaConfig | MemAugDims, prefix: str = "model.vision_resampler.") -> list[tuple[str, tuple, tuple[int, int] | None]]:
    """(hf_key, nnx state path, perm) for every MemAug parameter.

    perm (1, 0) for Linear weights (torch stores (out, in), flax kernels are (in, out)); None
    for 1-D tensors. LayerNorm ``weight`` is flax's ``scale``.
    """
    dims = MemAugDims.from_config(cfg) if isinstance(cfg, HourLlavaConfig) else cfg
    linears = [("self_attn.Wqkv", ("self_attn", "Wqkv")), ("self_attn.Wo", ("self_attn", "Wo")),
               ("cross_attn.Wq", ("cross_attn", "Wq")), ("cross_attn.Wkv", ("cross_attn", "Wkv")),
               ("cross_attn.Wo", ("cross_attn", "Wo")), ("mlp.0", ("mlp", "fc0")), ("mlp.2", ("mlp", "fc2"))]
    rules = []
    for i in range(dims.memaug.depth):
        base = f"{prefix}layers.{i}."
        for hf, path in linears:
            rules.append((f"{base}{hf}.weight", ("layers", i, *path, "kernel"), (1, 0)))
            rules.append((f"{base}{hf}.bias", ("layers", i, *path, "bias"), None))
        for n in ("norm1", "norm2", "norm3"):
            rules.append((f"{base}{n}.weight", ("layers", i, n, "scale"), None))
            rules.append((f"{base}{n}.bias", ("layers", i, n, "bias"), None))
    return rules


def query_positions(text_lengths: Sequence[int], visual_positions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """RoPE ids of one sample's MemAug query (SPEC §1.4), on the host.

    The query is text segment 0, visual block 0, text segment 1, ..., text segment n. Each text
    segment continues from the running maximum id; each visual block is its memory ids shifted
    by (running maximum + 1), so a decayed token sits a constant offset ahead of its memory entry.

    Args:
      text_lengths: n+1 kept-text lengths (tokens with label -100; the whole prompt at inference).
      visual_positions: n int arrays, the memory ids of each placeholder's query tokens
        (``VideoMemory.decayed_positions``, ``ImageMemory.query_positions``, ...).
    Returns:
      positions int32[sum of all lengths]; visual_index int32[sum of visual lengths], where the
      visual tokens sit in the query (MemAug's output rows that replace the placeholders).
    """
    if len(text_lengths) != len(visual_positions) + 1:
        raise ValueError(f"query_positions: {len(text_lengths)} text segments for {len(visual_positions)} visual blocks (need n+1 for n)")
    parts, visual_index, maxp, n = [], [], -1, 0
    for i, length in enumerate(text_lengths):
        if length < 0:
            raise ValueError(f"query_positions: negative text length {length}")
        parts.append(np.arange(length, dtype=np.int64) + maxp + 1)
        maxp, n = (maxp + length if length else maxp), n + length
        if i < len(visual_positions):
            vis = np.asarray(visual_positions[i], np.int64).reshape(-1)
            if vis.size and vis.min() < 0:
                raise ValueError("query_positions: memory ids must be non-negative")
            parts.append(vis + maxp + 1)
            visual_index.append(np.arange(vis.size) + n)
            maxp, n = (max(maxp, int(parts[-1].max())) if vis.size else maxp), n + vis.size
    pos = np.concatenate(parts) if parts else np.zeros((0,), np.int64)
    vis_idx = np.concatenate(visual_index) if visual_index else np.zeros((0,), np.int64)
    return pos.astype(np.int32), vis_idx.astype(np.int32)


__all__ = ["CrossAttention", "MemAugMLP", "MemAug", "MemAugBlock", "MemAugDims", "SelfAttention", "memaug_hf_rules", "query_positions"]
