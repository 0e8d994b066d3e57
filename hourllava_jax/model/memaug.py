"""MemAug: the memory-augmentation module (design §1.3; the release's ``vision_resampler``).

``depth`` post-norm blocks, each
```
x = LN1(x + SelfAttn(x, pos_q))                  # bidirectional over the query
x = LN2(x + CrossAttn(x, memory, pos_q, pos_kv)) # memory = raw projected tokens, same every block
x = LN3(x + fc2(GELU(fc0(x))))                   # exact GELU, 4H hidden
```
Grouped-query heads, RoPE on the first half of each head (rotate-half), v not rotated, biases
everywhere. Attribute names map one-to-one onto the release's
(:func:`hourllava_jax.convert.memaug_keys.memaug_hf_rules`).

Padding: the release runs one unpadded sample at a time; batches here carry ``q_mask`` /
``kv_mask`` so a padded batch equals the samples run alone (padded query rows are excluded as
self-attention keys, padded memory rows as cross-attention keys; padded output rows are zeroed).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from hourllava_jax.config import HourLlavaConfig, MemAugConfig
from hourllava_jax.kernels import BlockSizes, attention
from hourllava_jax.model.dense import Dense
from hourllava_jax.model.remat import normalize_remat, remat_call
from hourllava_jax.model.rope import apply_rope, rope_cos_sin
from hourllava_jax.model.scan import scan_layers, stack_layers
from hourllava_jax.parallel.axes import EMBED, HEADS, KV_HEADS, MLP, NORM, param_init
from hourllava_jax.parallel.mesh import MEMORY_AXIS, batch_axes


@dataclasses.dataclass(frozen=True)
class MemAugDims:
    """Everything MemAug needs: widths copied from the LLM (design §1.3) plus the MemAug config."""

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


def _linear(din: int, dout: int, axes: tuple, std: float, rngs: nnx.Rngs, dtype, param_dtype) -> Dense:
    """Linear with bias, weights N(0, std), bias 0 (design §1.3 init)."""
    return Dense(din, dout, use_bias=True, dtype=dtype, param_dtype=param_dtype,
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
    """One post-norm block (design §1.3)."""

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
      remat: a :mod:`~hourllava_jax.model.remat` policy name applied to each block in training.
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
          q_positions: int32[B, Lq]; kv_positions: int32[B, Lk] (RoPE ids, design §2.4).
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


__all__ = ["CrossAttention", "MemAugMLP", "MemAug", "MemAugBlock", "MemAugDims", "SelfAttention"]
