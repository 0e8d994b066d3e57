"""The single attention entry point used by SigLIP, Qwen2 and both MemAug attentions.

Layout: q float[B, Lq, H, D]; k, v float[B, Lk, K, D]; H % K == 0 (grouped-query heads, K/V are
never repeated in memory). ``impl`` picks the implementation; ``auto`` chooses per backend
(TPU -> pallas_tpu, GPU -> pallas_gpu, CPU -> chunked). A ``mesh`` with a ``memory`` axis of size
> 1 shards the keys/values over that axis (memory_parallel.py). See docs/kernels.md.
"""

from __future__ import annotations

import jax

from hourllava_jax.kernels.blocks import BlockSizes
from hourllava_jax.kernels.dispatch import IMPLS, AttentionInputError, Impl, build, check_inputs, check_mask, default_impl
from hourllava_jax.kernels.masks import MaskSpec, normalize_mask
from hourllava_jax.kernels.memory_parallel import memory_parallel_attention
from hourllava_jax.kernels.reference import attention_reference


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
    check_inputs(q, k, v)
    if impl not in IMPLS:
        raise AttentionInputError(f"attention impl {impl!r} is unknown; choose one of {IMPLS}")
    b, lq, _, d = q.shape
    lk = k.shape[1]
    scale = d**-0.5 if scale is None else float(scale)
    mask = MaskSpec(causal=causal, q_offset=q_offset, kv_mask=kv_mask, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
    check_mask(mask, b, lq, lk)
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


__all__ = ["attention"]
