"""Flash attention for GPU (Pallas lowered to Triton): forward, dQ and dK/dV kernels.

Works in the public layout [B, L, heads, D] (Triton loads strided tiles, no transpose needed);
head_dim is zero-padded to a power of two (Triton's rule; SigLIP's 72 -> 128), which changes
no score and only adds zero output columns. Each program owns one tile and loops over the other
axis in-kernel with ``fori_loop`` (Triton programs run concurrently, so no grid reductions):
  forward / dQ: grid (B, H, query tiles), loop over key tiles (stops at the causal diagonal);
  dK/dV: grid (B, K, key tiles), loop over the G query heads of the group and the query tiles,
  so grouped-query gradients are summed in registers and K/V are never repeated in memory.
The causal limit is passed as q_lim int32[B, Lq] = position + q_offset (key j visible iff
j <= q_lim[i]): one vector instead of a scalar operand.
Lowered with ``pallas.triton.CompilerParams`` (Pallas' default GPU backend, Mosaic GPU, targets
Hopper and does not lower these dot_generals).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from hourllava_jax.kernels.flash_vjp import NEG_LSE, make_attention
from hourllava_jax.kernels.masks import pad_ids


def _allowed(q_lim, qid, kid, k0, bk, causal):
    """bool[bq, bk]: q_lim, qid int32[bq]; kid int32[bk]; k0 the tile's first key index."""
    allowed = qid[:, None] == kid[None, :]
    if causal:
        allowed = allowed & ((k0 + jnp.arange(bk))[None, :] <= q_lim[:, None])
    return allowed


def _n_key_tiles(q_lim, bk, nk, causal):
    if not causal:
        return nk
    return jnp.clip(jax.lax.div(jnp.max(q_lim), bk) + 1, 0, nk)


def _fwd_kernel(q_ref, k_ref, v_ref, qlim_ref, qid_ref, kid_ref, o_ref, lse_ref, *, scale, causal, bq, bk, nk):
    q, q_lim, qid = q_ref[...], qlim_ref[...], qid_ref[...]

    def body(j, carry):
        m, l, acc = carry
        sl = pl.ds(j * bk, bk)
        s = plgpu.dot(q, k_ref[sl, :], trans_b=True) * scale
        allowed = _allowed(q_lim, qid, kid_ref[sl], j * bk, bk, causal)
        m_new = jnp.maximum(m, jnp.max(jnp.where(allowed, s, NEG_LSE), axis=1))
        p = jnp.where(allowed, jnp.exp(s - m_new[:, None]), 0.0)  # where: empty rows stay 0
        alpha = jnp.exp(m - m_new)
        acc = alpha[:, None] * acc + plgpu.dot(p.astype(v_ref.dtype), v_ref[sl, :])
        return m_new, alpha * l + jnp.sum(p, axis=1), acc

    init = (jnp.full((bq,), NEG_LSE, jnp.float32), jnp.zeros((bq,), jnp.float32), jnp.zeros(q.shape, jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, _n_key_tiles(q_lim, bk, nk, causal), body, init)
    safe_l = jnp.where(l > 0, l, 1.0)
    o_ref[...] = (acc / safe_l[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(l > 0, m + jnp.log(safe_l), NEG_LSE)


def _dq_kernel(q_ref, k_ref, v_ref, qlim_ref, qid_ref, kid_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, causal, bq, bk, nk):
    q, do, q_lim, qid = q_ref[...], do_ref[...], qlim_ref[...], qid_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]

    def body(j, dq):
        sl = pl.ds(j * bk, bk)
        k = k_ref[sl, :]
        s = plgpu.dot(q, k, trans_b=True) * scale
        p = jnp.where(_allowed(q_lim, qid, kid_ref[sl], j * bk, bk, causal), jnp.exp(s - lse[:, None]), 0.0)
        ds = p * (plgpu.dot(do, v_ref[sl, :], trans_b=True) - delta[:, None]) * scale
        return dq + plgpu.dot(ds.astype(k.dtype), k)

    dq = jax.lax.fori_loop(0, _n_key_tiles(q_lim, bk, nk, causal), body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, qlim_ref, qid_ref, kid_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, scale, causal, bq, bk, g, nq):
    k0 = pl.program_id(2) * bk
    k, v, kid = k_ref[...], v_ref[...], kid_ref[...]
    if causal:
        # q_lim is position + offset, so the first query tile that can see key k0 is known.
        off = jnp.min(qlim_ref[pl.ds(0, bq)])
        first = jnp.clip(jax.lax.div(k0 - off, bq), 0, nq)
    else:
        first = 0

    def over_q(i, carry, gi):
        dk, dv = carry
        sl = pl.ds(i * bq, bq)
        q, do = q_ref[sl, gi, :], do_ref[sl, gi, :]
        s = plgpu.dot(q, k, trans_b=True) * scale
        allowed = _allowed(qlim_ref[sl], qid_ref[sl], kid, k0, bk, causal)
        p = jnp.where(allowed, jnp.exp(s - lse_ref[gi, sl][:, None]), 0.0)
        ds = p * (plgpu.dot(do, v, trans_b=True) - delta_ref[gi, sl][:, None]) * scale
        dv = dv + plgpu.dot(p.astype(do.dtype), do, trans_a=True)
        dk = dk + plgpu.dot(ds.astype(q.dtype), q, trans_a=True)
        return dk, dv

    def over_group(gi, carry):
        return jax.lax.fori_loop(first, nq, functools.partial(over_q, gi=gi), carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = jax.lax.fori_loop(0, g, over_group, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _prepare(q, k, v, q_offset, q_ids, kv_ids, bq, bk):
    """Pads L to tile multiples and D to a power of two; returns q, k, v, q_lim, q_ids, kv_ids."""
    b, lq, _, d = q.shape
    lk = k.shape[1]
    lqp, lkp, dp = -(-lq // bq) * bq, -(-lk // bk) * bk, max(16, 1 << (d - 1).bit_length())
    pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, dp - d)))
    q_ids, kv_ids = pad_ids(q_ids, kv_ids, lqp, lkp)
    q_lim = jnp.arange(lqp, dtype=jnp.int32)[None, :] + q_offset[:, None]
    return pad(q, lqp), pad(k, lkp), pad(v, lkp), q_lim, q_ids, kv_ids


def _call(kernel, grid, in_specs, out_specs, out_shape, *, num_warps, num_stages, interpret, name):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name=name,
    )


def pallas_gpu_fwd(q, k, v, q_offset, q_ids, kv_ids, *, scale, causal, block_q, block_k, num_warps, num_stages, interpret):
    """Returns o float[B, Lq, H, D] and lse f32[B, H, Lq]."""
    b, lq, h, d = q.shape
    kh = k.shape[2]
    g = h // kh
    qp, kp, vp, q_lim, qid, kid = _prepare(q, k, v, q_offset, q_ids, kv_ids, block_q, block_k)
    lqp, lkp, dp = qp.shape[1], kp.shape[1], qp.shape[3]
    nq, nk = lqp // block_q, lkp // block_k
    q_spec = pl.BlockSpec((None, block_q, None, dp), lambda b_, h_, i: (b_, i, h_, 0))
    kv_spec = pl.BlockSpec((None, lkp, None, dp), lambda b_, h_, i: (b_, 0, jax.lax.div(h_, g), 0))
    row_spec = pl.BlockSpec((None, block_q), lambda b_, h_, i: (b_, i))
    kid_spec = pl.BlockSpec((None, lkp), lambda b_, h_, i: (b_, 0))
    lse_spec = pl.BlockSpec((None, None, block_q), lambda b_, h_, i: (b_, h_, i))
    kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, bq=block_q, bk=block_k, nk=nk)
    o, lse = _call(
        kernel, (b, h, nq), [q_spec, kv_spec, kv_spec, row_spec, row_spec, kid_spec], [q_spec, lse_spec],
        [jax.ShapeDtypeStruct(qp.shape, q.dtype), jax.ShapeDtypeStruct((b, h, lqp), jnp.float32)],
        num_warps=num_warps, num_stages=num_stages, interpret=interpret, name="hourllava_flash_fwd_gpu",
    )(qp, kp, vp, q_lim, qid, kid)  # fmt: skip
    return o[:, :lq, :, :d], lse[:, :, :lq]


def pallas_gpu_bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, *, scale, causal, block_q, block_k, num_warps, num_stages, interpret):
    """Returns (dq, dk, dv) computed by the dQ and dK/dV kernels."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    qp, kp, vp, q_lim, qid, kid = _prepare(q, k, v, q_offset, q_ids, kv_ids, block_q, block_k)
    dop = _prepare(do.astype(q.dtype), k, v, q_offset, q_ids, kv_ids, block_q, block_k)[0]
    lqp, lkp, dp = qp.shape[1], kp.shape[1], qp.shape[3]
    nq, nk = lqp // block_q, lkp // block_k
    # delta_i = sum_d dO·O, the softmax-Jacobian row term, computed once in XLA.
    delta = jnp.einsum("bqhd,bqhd->bhq", do.astype(jnp.float32), o.astype(jnp.float32))
    rows = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, lqp - lq)))
    lse_p, delta_p = rows(lse), rows(delta)
    launch = dict(num_warps=num_warps, num_stages=num_stages, interpret=interpret)
    opts = dict(scale=scale, causal=causal, bq=block_q, bk=block_k)

    q_spec = pl.BlockSpec((None, block_q, None, dp), lambda b_, h_, i: (b_, i, h_, 0))
    kv_spec = pl.BlockSpec((None, lkp, None, dp), lambda b_, h_, i: (b_, 0, jax.lax.div(h_, g), 0))
    row_spec = pl.BlockSpec((None, block_q), lambda b_, h_, i: (b_, i))
    kid_spec = pl.BlockSpec((None, lkp), lambda b_, h_, i: (b_, 0))
    stat_spec = pl.BlockSpec((None, None, block_q), lambda b_, h_, i: (b_, h_, i))
    dq = _call(
        functools.partial(_dq_kernel, nk=nk, **opts), (b, h, nq),
        [q_spec, kv_spec, kv_spec, row_spec, row_spec, kid_spec, q_spec, stat_spec, stat_spec], q_spec,
        jax.ShapeDtypeStruct(qp.shape, q.dtype), name="hourllava_flash_dq_gpu", **launch,
    )(qp, kp, vp, q_lim, qid, kid, dop, lse_p, delta_p)  # fmt: skip

    # dK/dV: one program per (batch, kv head, key tile) sees its whole query group.
    grouped = lambda x: x.reshape(b, lqp, kh, g, dp)
    qg_spec = pl.BlockSpec((None, lqp, None, g, dp), lambda b_, h_, j: (b_, 0, h_, 0, 0))
    kt_spec = pl.BlockSpec((None, block_k, None, dp), lambda b_, h_, j: (b_, j, h_, 0))
    qrow_spec = pl.BlockSpec((None, lqp), lambda b_, h_, j: (b_, 0))
    krow_spec = pl.BlockSpec((None, block_k), lambda b_, h_, j: (b_, j))
    gstat_spec = pl.BlockSpec((None, None, g, lqp), lambda b_, h_, j: (b_, h_, 0, 0))
    gstat = lambda x: x.reshape(b, kh, g, lqp)
    dk, dv = _call(
        functools.partial(_dkv_kernel, g=g, nq=nq, **opts), (b, kh, nk),
        [qg_spec, kt_spec, kt_spec, qrow_spec, qrow_spec, krow_spec, qg_spec, gstat_spec, gstat_spec], [kt_spec, kt_spec],
        [jax.ShapeDtypeStruct(kp.shape, k.dtype), jax.ShapeDtypeStruct(vp.shape, v.dtype)],
        name="hourllava_flash_dkv_gpu", **launch,
    )(grouped(qp), kp, vp, q_lim, qid, kid, grouped(dop), gstat(lse_p), gstat(delta_p))  # fmt: skip
    return dq[:, :lq, :, :d], dk[:, :lk, :, :d], dv[:, :lk, :, :d]


pallas_gpu_attention = make_attention(pallas_gpu_fwd, pallas_gpu_bwd)
"""attn(q, k, v, q_offset int32[B], q_ids int32[B, Lq], kv_ids int32[B, Lk], opts) -> o; opts =
sorted (name, value) pairs of block_k, block_q, causal, interpret, num_stages, num_warps, scale."""
