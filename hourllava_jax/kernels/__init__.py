"""The single attention entry point used by SigLIP, Qwen2 and both MemAug attentions.

Layout: q float[B, Lq, H, D]; k, v float[B, Lk, K, D]; H % K == 0 (grouped-query heads, K/V are
never repeated in memory). ``impl`` picks the implementation; ``auto`` chooses per backend.
"""

from __future__ import annotations

from typing import Literal

import jax

from hourllava_jax.kernels.masks import MaskSpec
from hourllava_jax.kernels.reference import attention_reference

Impl = Literal["auto", "reference", "chunked", "pallas_tpu", "pallas_gpu"]


class AttentionInputError(ValueError):
    """Shapes, dtypes or options that no attention implementation accepts."""


def _check(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise AttentionInputError(f"attention expects [B, L, heads, D] arrays, got q{q.shape} k{k.shape} v{v.shape}")
    if k.shape != v.shape:
        raise AttentionInputError(f"k{k.shape} and v{v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise AttentionInputError(f"batch/head_dim mismatch: q{q.shape} vs k{k.shape}")
    if q.shape[2] % k.shape[2]:
        raise AttentionInputError(f"{q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")


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
) -> jax.Array:
    """Multi-head (grouped-query) attention; returns float[B, Lq, H, D] in q's dtype.

    causal: key j visible to query i iff j <= i + q_offset (q_offset: int or int32[B]).
    kv_mask: bool[B, Lk], False marks padding keys. Segment ids restrict attention to equal ids.
    Query rows that see no key return 0.
    """
    _check(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = MaskSpec(causal=causal, q_offset=q_offset, kv_mask=kv_mask, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
    if impl in ("auto", "reference"):
        return attention_reference(q, k, v, mask, scale)
    raise AttentionInputError(f"attention impl {impl!r} is not available yet")


__all__ = ["AttentionInputError", "Impl", "MaskSpec", "attention", "attention_reference"]
