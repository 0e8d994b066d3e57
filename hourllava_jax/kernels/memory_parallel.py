"""Memory-parallel cross-attention: keys/values sharded along the ``memory`` mesh axis.

An hour of video is 234k memory tokens (design §2); MemAug's cross-attention reads all of them
from every query. Each device of the ``memory`` axis holds Lk/n keys and computes, with any
flash implementation, a partial output o_s and log-sum-exp lse_s over its keys. The exact
result is the softmax-weighted combination

  lse = log sum_s exp(lse_s),   o = sum_s exp(lse_s - lse) · o_s

(one pmax + two psums of [B, Lq, H, D]-sized data). Backward is exact too: with the *global* o
and lse every shard recomputes its probabilities p = exp(s - lse) and runs the implementation's
own backward, giving its dK/dV shard locally and a partial dQ that is psum'd. So no score matrix
and no full K/V ever sit on one device, forward or backward.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hourllava_jax.kernels.blocks import BlockSizes
from hourllava_jax.kernels.chunked import chunked_bwd, chunked_fwd
from hourllava_jax.kernels.dispatch import AttentionInputError, build, check_inputs, check_mask, default_impl
from hourllava_jax.kernels.masks import PAD_ID, MaskSpec, normalize_mask


def _raw(impl: str):
    if impl == "pallas_tpu":
        from hourllava_jax.kernels.pallas_tpu import pallas_tpu_bwd, pallas_tpu_fwd

        return pallas_tpu_fwd, pallas_tpu_bwd
    if impl == "pallas_gpu":
        from hourllava_jax.kernels.pallas_gpu import pallas_gpu_bwd, pallas_gpu_fwd

        return pallas_gpu_fwd, pallas_gpu_bwd
    return chunked_fwd, chunked_bwd


def combine_partials(o_s: jax.Array, lse_s: jax.Array, axis: str) -> tuple[jax.Array, jax.Array]:
    """Exact merge of per-shard results inside shard_map.

    o_s: float[B, Lq, H, D], lse_s: f32[B, H, Lq] of this shard -> (o f32[B, Lq, H, D], lse f32[B, H, Lq]).
    """
    lse_max = jax.lax.pmax(lse_s, axis)
    w = jnp.exp(lse_s - lse_max)  # rows empty on every shard: w = 1, o_s = 0 -> o = 0
    den = jax.lax.psum(w, axis)
    o = jax.lax.psum(o_s.astype(jnp.float32) * w.transpose(0, 2, 1)[..., None], axis)
    return o / den.transpose(0, 2, 1)[..., None], lse_max + jnp.log(den)


def _shard_offset(q_offset, axis, shard_len, causal):
    """Causal positions are global: shard s holds keys [s·Ls, (s+1)·Ls), so its local offset shifts."""
    return q_offset - jax.lax.axis_index(axis) * shard_len if causal else q_offset


def _make(mesh, axis: str, batch_axis: str | tuple[str, ...] | None, impl: str, opts: tuple):
    fwd, bwd = _raw(impl)
    kw = dict(opts)
    # q-like operands: split on batch only (replicated over the memory axis); keys: batch and Lk.
    rep, kv_spec, ids_spec = P(batch_axis), P(batch_axis, axis), P(batch_axis, axis)
    smap = functools.partial(jax.shard_map, mesh=mesh, check_vma=False)

    def local_fwd(q, k, v, q_off, q_ids, kv_ids):
        off = _shard_offset(q_off, axis, k.shape[1], kw["causal"])
        o_s, lse_s = fwd(q, k, v, off, q_ids, kv_ids, **kw)
        o, lse = combine_partials(o_s, lse_s, axis)
        return o.astype(q.dtype), lse

    def local_bwd(q, k, v, q_off, q_ids, kv_ids, o, lse, do):
        off = _shard_offset(q_off, axis, k.shape[1], kw["causal"])
        dq, dk, dv = bwd(q, k, v, off, q_ids, kv_ids, o, lse, do, **kw)
        return jax.lax.psum(dq.astype(jnp.float32), axis).astype(q.dtype), dk, dv

    fwd_sm = smap(local_fwd, in_specs=(rep, kv_spec, kv_spec, rep, rep, ids_spec), out_specs=(rep, rep))
    bwd_sm = smap(local_bwd, in_specs=(rep, kv_spec, kv_spec, rep, rep, ids_spec, rep, rep, rep), out_specs=(rep, kv_spec, kv_spec))

    @jax.custom_vjp
    def attn(q, k, v, q_off, q_ids, kv_ids):
        return fwd_sm(q, k, v, q_off, q_ids, kv_ids)[0]

    def attn_fwd(q, k, v, q_off, q_ids, kv_ids):
        o, lse = fwd_sm(q, k, v, q_off, q_ids, kv_ids)
        return o, (q, k, v, q_off, q_ids, kv_ids, o, lse)

    def attn_bwd(res, do):
        return (*bwd_sm(*res, do), None, None, None)

    attn.defvjp(attn_fwd, attn_bwd)
    return attn


def memory_parallel_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh,
    axis: str = "memory",
    causal: bool = False,
    q_offset: jax.Array | int = 0,
    kv_mask: jax.Array | None = None,
    q_segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    scale: float | None = None,
    impl: str = "chunked",
    block_sizes: BlockSizes | None = None,
    interpret: bool | None = None,
    batch_axis: str | tuple[str, ...] | None = None,
) -> jax.Array:
    """Attention with k/v split along Lk over mesh axis ``axis``; returns float[B, Lq, H, D].

    q float[B, Lq, H, D] is replicated over ``axis``; k, v float[B, Lk, K, D] are sharded on Lk
    (padded to a multiple of the axis size with masked keys). batch_axis: optional mesh axes
    (e.g. ``data``, or ``("data", "fsdp")`` as the trainer splits batches) that split B for every
    operand; other mesh axes are replicated. impl: chunked | pallas_tpu | pallas_gpu runs on each shard
    ("reference" and "auto" resolve to the backend default since they have no lse output).
    """
    check_inputs(q, k, v)
    if axis not in mesh.axis_names:
        raise AttentionInputError(f"mesh axes {mesh.axis_names} have no {axis!r} axis for memory-parallel attention")
    n = mesh.shape[axis]
    b, lq, _, d = q.shape
    if batch_axis is not None:
        names = (batch_axis,) if isinstance(batch_axis, str) else tuple(batch_axis)
        size = 1
        for a in names:
            size *= mesh.shape[a] if a in mesh.axis_names else 0
        if not names or size == 0 or b % size:
            raise AttentionInputError(f"batch_axis {batch_axis!r} must be mesh axes {mesh.axis_names} whose sizes divide batch {b}")
    lk = k.shape[1]
    mask = MaskSpec(causal=causal, q_offset=q_offset, kv_mask=kv_mask, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
    check_mask(mask, b, lq, lk)
    impl = default_impl() if impl in ("auto", "reference") else impl
    scale = d**-0.5 if scale is None else float(scale)
    q_off, q_ids, kv_ids = normalize_mask(mask, b, lq, lk)
    lkp = -(-lk // n) * n
    if lkp != lk:  # padded keys get the padding id: never visible
        k, v = (jnp.pad(x, ((0, 0), (0, lkp - lk), (0, 0), (0, 0))) for x in (k, v))
        kv_ids = jnp.pad(kv_ids, ((0, 0), (0, lkp - lk)), constant_values=PAD_ID)

    _, opts = build(impl, lq, lkp // n, causal=causal, scale=scale, block_sizes=block_sizes, interpret=interpret)
    return _make(mesh, axis, batch_axis, impl, opts)(q, k, v, q_off, q_ids, kv_ids)


__all__ = ["combine_partials", "memory_parallel_attention"]
