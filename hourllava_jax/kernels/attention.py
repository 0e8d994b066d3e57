"""The single attention entry point used by SigLIP, Qwen2 and both MemAug attentions.

Layout: q float[B, Lq, H, D]; k, v float[B, Lk, K, D]; H % K == 0 (grouped-query heads, K/V are
never repeated in memory). ``impl`` picks the implementation; ``auto`` chooses per backend
(TPU -> pallas_tpu, GPU -> pallas_gpu, CPU -> chunked). A ``mesh`` with a ``memory`` axis of size
> 1 shards the keys/values over that axis (memory_parallel.py). See docs/kernels.md.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from hourllava_jax.kernels.blocks import BlockSizeError, BlockSizes, resolve
from hourllava_jax.kernels.chunked import chunked_attention
from hourllava_jax.kernels.masks import MaskSpec, normalize_mask
from hourllava_jax.kernels.memory_parallel import combine_partials, memory_parallel_attention
from hourllava_jax.kernels.reference import attention_reference

Impl = Literal["auto", "reference", "chunked", "pallas_tpu", "pallas_gpu"]
IMPLS = ("auto", "reference", "chunked", "pallas_tpu", "pallas_gpu")


class AttentionInputError(ValueError):
    """Shapes, dtypes or options that no attention implementation accepts."""


def _check(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise AttentionInputError(f"attention expects [B, L, heads, D] arrays, got q{q.shape} k{k.shape} v{v.shape}")
    if 0 in q.shape or 0 in k.shape:
        raise AttentionInputError(f"attention needs non-empty inputs, got q{q.shape} k{k.shape}")
    if k.shape != v.shape:
        raise AttentionInputError(f"k{k.shape} and v{v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise AttentionInputError(f"batch/head_dim mismatch: q{q.shape} vs k{k.shape}")
    if q.shape[2] % k.shape[2]:
        raise AttentionInputError(f"{q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise AttentionInputError(f"attention needs floating-point inputs, got {q.dtype}")


def _check_mask(mask: MaskSpec, b: int, lq: int, lk: int) -> None:
    def shape_ok(x, want):
        return x is None or (tuple(jnp.shape(x)) == want or tuple(jnp.shape(x)) == (1,) + want[1:])

    if not shape_ok(mask.kv_mask, (b, lk)):
        raise AttentionInputError(f"kv_mask must be bool[{b}, {lk}], got shape {jnp.shape(mask.kv_mask)}")
    if mask.kv_mask is not None and jnp.asarray(mask.kv_mask).dtype != jnp.bool_:
        raise AttentionInputError(f"kv_mask must be bool, got {jnp.asarray(mask.kv_mask).dtype}")
    if (mask.q_segment_ids is None) != (mask.kv_segment_ids is None):
        raise AttentionInputError("q_segment_ids and kv_segment_ids must be given together")
    if not shape_ok(mask.q_segment_ids, (b, lq)) or not shape_ok(mask.kv_segment_ids, (b, lk)):
        raise AttentionInputError(
            f"segment ids must be int[{b}, {lq}] / int[{b}, {lk}], got {jnp.shape(mask.q_segment_ids)} / {jnp.shape(mask.kv_segment_ids)}"
        )
    off = jnp.shape(mask.q_offset)
    if off not in ((), (1,), (b,)):
        raise AttentionInputError(f"q_offset must be an int or int[{b}], got shape {off}")


def default_impl(backend: str | None = None) -> str:
    """What ``auto`` resolves to: our Pallas kernel on TPU/GPU, the chunked XLA path on CPU."""
    backend = backend or jax.default_backend()
    return {"tpu": "pallas_tpu", "gpu": "pallas_gpu", "cuda": "pallas_gpu", "rocm": "pallas_gpu"}.get(backend, "chunked")


def _memory_axis_size(mesh, axis: str) -> int:
    return 0 if mesh is None or axis not in mesh.axis_names else mesh.shape[axis]


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = False,
    q_offset: jax.Array | int = 0,
    kv_mask: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    scale: float | None = None,
    impl: Impl = "auto",
    block_sizes: BlockSizes | None = None,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
    memory_axis: str = "memory",
    batch_axis: str | tuple[str, ...] | None = None,
    interpret: bool | None = None,
) -> jax.Array:
    """Multi-head (grouped-query) attention; returns float[B, Lq, H, D] in q's dtype.

    causal: key j visible to query i iff j <= i + q_offset (q_offset: int or int32[B]).
    kv_mask: bool[B, Lk], False marks padding keys. Segment ids restrict attention to equal ids
    (the id -2**31 is reserved for padding). Query rows that see no key return 0 (zero grads).
    block_sizes: tiles for chunked/pallas (None: per-backend defaults, blocks.DEFAULTS).
    mesh: if it has a ``memory_axis`` of size > 1, k/v are split along Lk over that axis and the
      per-shard results are combined exactly (log-sum-exp) -- the memory-parallel path;
      batch_axis (e.g. "data") then also splits the batch. Without such a mesh both are ignored.
    interpret: run Pallas kernels in interpret mode (None: when the backend is not the kernel's).
    """
    _check(q, k, v)
    if impl not in IMPLS:
        raise AttentionInputError(f"attention impl {impl!r} is unknown; choose one of {IMPLS}")
    b, lq, _, d = q.shape
    lk = k.shape[1]
    scale = d**-0.5 if scale is None else float(scale)
    mask = MaskSpec(causal=causal, q_offset=q_offset, kv_mask=kv_mask, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
    _check_mask(mask, b, lq, lk)
    impl = default_impl() if impl == "auto" else impl

    if _memory_axis_size(mesh, memory_axis) > 1:
        return memory_parallel_attention(
            q, k, v, mesh=mesh, axis=memory_axis, causal=causal, q_offset=q_offset, kv_mask=kv_mask,
            q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids, scale=scale, impl=impl,
            block_sizes=block_sizes, interpret=interpret, batch_axis=batch_axis,
        )  # fmt: skip
    if impl == "reference":
        return attention_reference(q, k, v, mask, scale)
    attn, opts = build(impl, lq, lk, causal=causal, scale=scale, block_sizes=block_sizes, interpret=interpret)
    q_off, q_ids, kv_ids = normalize_mask(mask, b, lq, lk)
    return attn(q, k, v, q_off, q_ids, kv_ids, opts)


def build(impl: str, lq: int, lk: int, *, causal: bool, scale: float, block_sizes: BlockSizes | None, interpret: bool | None):
    """(differentiable attn, its static opts) for a non-reference impl at these lengths."""
    try:
        block_q, block_k, blocks = resolve(impl, block_sizes, lq, lk)
    except BlockSizeError as e:
        raise AttentionInputError(str(e)) from e
    opts = {"scale": scale, "causal": causal, "block_q": block_q, "block_k": block_k}
    if impl == "chunked":
        return chunked_attention, tuple(sorted(opts.items()))
    if impl == "pallas_tpu":
        from hourllava_jax.kernels.pallas_tpu import pallas_tpu_attention as attn

        interpret = jax.default_backend() != "tpu" if interpret is None else interpret
    else:
        from hourllava_jax.kernels.pallas_gpu import pallas_gpu_attention as attn

        interpret = jax.default_backend() != "gpu" if interpret is None else interpret
        opts.update(num_warps=blocks.num_warps, num_stages=blocks.num_stages)
    opts["interpret"] = bool(interpret)
    return attn, tuple(sorted(opts.items()))


__all__ = [
    "AttentionInputError",
    "BlockSizeError",
    "BlockSizes",
    "Impl",
    "MaskSpec",
    "attention",
    "attention_reference",
    "build",
    "combine_partials",
    "default_impl",
    "memory_parallel_attention",
]
