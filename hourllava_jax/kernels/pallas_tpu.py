"""Flash attention for TPU (Pallas Mosaic): forward, dQ and dK/dV kernels.

Layout inside: [B, heads, L, D] (Mosaic tiles the last two dims in (8, 128) units, so L and D
must be the minor dims); the wrapper transposes from the public [B, L, heads, D].
Grouped-query heads: the grid walks (batch, kv head, group member, ...) and a query head is
``kv_head * G + member``, so K/V tiles are fetched per kv head, never repeated in HBM (and the
index maps need no integer division, which Mosaic lowering from CPU rejects).
The reduction axis is always the last grid axis ("arbitrary"), accumulating into VMEM scratch:
keys for forward and dQ; (group member, query tile) for dK/dV, which sum over the group.
q_offset (int32[B]) is a scalar-prefetch operand so causal tiles above the diagonal are skipped:
no compute (``pl.when``) and no DMA (their index maps repeat the last visible tile's index).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hourllava_jax.kernels.flash_vjp import NEG_LSE, make_attention
from hourllava_jax.kernels.masks import allowed_block, pad_ids

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


def _tile_mask(off_ref, qid_ref, kid_ref, i, j, bq, bk, causal):
    """bool[bq, bk] for query tile i, key tile j of this batch row."""
    q_pos = i * bq + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    k_pos = j * bk + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    return allowed_block(q_pos, k_pos, qid_ref[...], kid_ref[...], off_ref[pl.program_id(0)], causal)


def _visible(off_ref, i, j, bq, bk, causal):
    """Whether key tile j may hold a key visible to query tile i (skip tiles above the diagonal)."""
    if not causal:
        return True
    return j * bk <= i * bq + bq - 1 + off_ref[pl.program_id(0)]


def _fwd_kernel(off_ref, q_ref, k_ref, v_ref, qid_ref, kid_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc, *, scale, causal, bq, bk, nk):
    i, j = pl.program_id(3), pl.program_id(4)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, NEG_LSE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(_visible(off_ref, i, j, bq, bk, causal))
    def _compute():
        s = jax.lax.dot_general(q_ref[...], k_ref[...], _NT, preferred_element_type=jnp.float32) * scale
        allowed = _tile_mask(off_ref, qid_ref, kid_ref, i, j, bq, bk, causal)
        m_prev = m_sc[...]
        m_new = jnp.maximum(m_prev, jnp.max(jnp.where(allowed, s, NEG_LSE), axis=1, keepdims=True))
        p = jnp.where(allowed, jnp.exp(s - m_new), 0.0)  # where, not -inf: empty rows stay 0
        alpha = jnp.exp(m_prev - m_new)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=1, keepdims=True)
        acc_sc[...] = alpha * acc_sc[...] + jnp.dot(p.astype(v_ref.dtype), v_ref[...], preferred_element_type=jnp.float32)
        m_sc[...] = m_new

    @pl.when(j == nk - 1)
    def _finish():
        l = l_sc[...]
        safe_l = jnp.where(l > 0, l, 1.0)
        o_ref[...] = (acc_sc[...] / safe_l).astype(o_ref.dtype)
        lse_ref[...] = jnp.where(l > 0, m_sc[...] + jnp.log(safe_l), NEG_LSE)


def _probs_and_ds(q, k, v, do, lse, delta, allowed, scale):
    """Recomputed probabilities p and score gradients ds, both f32[bq, bk]."""
    s = jax.lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * scale
    p = jnp.where(allowed, jnp.exp(s - lse), 0.0)
    dp = jax.lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
    return p, p * (dp - delta) * scale


def _dq_kernel(off_ref, q_ref, k_ref, v_ref, qid_ref, kid_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_sc, *, scale, causal, bq, bk, nk):
    i, j = pl.program_id(3), pl.program_id(4)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(_visible(off_ref, i, j, bq, bk, causal))
    def _compute():
        allowed = _tile_mask(off_ref, qid_ref, kid_ref, i, j, bq, bk, causal)
        k = k_ref[...]
        _, ds = _probs_and_ds(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...], allowed, scale)
        dq_sc[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    @pl.when(j == nk - 1)
    def _finish():
        dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def _dkv_kernel(off_ref, q_ref, k_ref, v_ref, qid_ref, kid_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_sc, dv_sc, *, scale, causal, bq, bk, g, nq):
    j, gi, i = pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((gi == 0) & (i == 0))
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(_visible(off_ref, i, j, bq, bk, causal))
    def _compute():
        allowed = _tile_mask(off_ref, qid_ref, kid_ref, i, j, bq, bk, causal)
        q, do = q_ref[...], do_ref[...]
        p, ds = _probs_and_ds(q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], allowed, scale)
        dv_sc[...] += jax.lax.dot_general(p.astype(do.dtype), do, _TN, preferred_element_type=jnp.float32)
        dk_sc[...] += jax.lax.dot_general(ds.astype(q.dtype), q, _TN, preferred_element_type=jnp.float32)

    @pl.when((gi == g - 1) & (i == nq - 1))
    def _finish():
        dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _prepare(q, k, v, q_ids, kv_ids, bq, bk):
    """Pads to tile multiples and moves heads before length: q [B,H,Lq',D], k/v [B,K,Lk',D]."""
    lq, lk = q.shape[1], k.shape[1]
    lqp, lkp = -(-lq // bq) * bq, -(-lk // bk) * bk
    pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    q_ids, kv_ids = pad_ids(q_ids, kv_ids, lqp, lkp)
    return pad(q, lqp), pad(k, lkp), pad(v, lkp), q_ids[:, :, None], kv_ids[:, None, :]


def _specs(bq, bk, d, g, *, q_axis, k_axis, g_axis, causal=False, clamp=None, nq=1):
    """BlockSpecs of (q-like, kv, q_ids, kv_ids, row-stat) operands for a grid with the given axes.

    clamp ("k" or "q"): for causal attention, the reduction operand's tile index is clamped to the
    last (first) tile that is visible, so skipped tiles repeat the previous block index and
    Pallas issues no DMA for them. Visible tiles keep their own index, so results are unchanged.
    """

    def q_tile(idx):
        i = idx[q_axis]
        if causal and clamp == "q":
            first = jax.lax.div(jnp.maximum(idx[k_axis] * bk - idx[-1][idx[0]], 0), bq)
            i = jnp.minimum(jnp.maximum(i, first), nq - 1)
        return i

    def k_tile(idx):
        j = idx[k_axis]
        if causal and clamp == "k":
            j = jnp.minimum(j, jax.lax.div(jnp.maximum(idx[q_axis] * bq + bq - 1 + idx[-1][idx[0]], 0), bk))
        return j

    q_spec = pl.BlockSpec((None, None, bq, d), lambda *idx: (idx[0], idx[1] * g + idx[g_axis], q_tile(idx), 0))
    kv_spec = pl.BlockSpec((None, None, bk, d), lambda *idx: (idx[0], idx[1], k_tile(idx), 0))
    qid_spec = pl.BlockSpec((None, bq, 1), lambda *idx: (idx[0], q_tile(idx), 0))
    kid_spec = pl.BlockSpec((None, 1, bk), lambda *idx: (idx[0], 0, k_tile(idx)))
    row_spec = pl.BlockSpec((None, None, bq, 1), lambda *idx: (idx[0], idx[1] * g + idx[g_axis], q_tile(idx), 0))
    return q_spec, kv_spec, qid_spec, kid_spec, row_spec


def _interpret(interpret: bool):
    return pltpu.InterpretParams() if interpret else False


def pallas_tpu_fwd(q, k, v, q_offset, q_ids, kv_ids, *, scale, causal, block_q, block_k, interpret):
    """Returns o float[B, Lq, H, D] and lse f32[B, H, Lq]."""
    b, lq, h, d = q.shape
    kh = k.shape[2]
    g = h // kh
    qt, kt, vt, qid, kid = _prepare(q, k, v, q_ids, kv_ids, block_q, block_k)
    nq, nk = qt.shape[2] // block_q, kt.shape[2] // block_k
    q_spec, kv_spec, qid_spec, kid_spec, row_spec = _specs(block_q, block_k, d, g, q_axis=3, k_axis=4, g_axis=2, causal=causal, clamp="k")
    kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, bq=block_q, bk=block_k, nk=nk)
    o, lse = pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, kh, g, nq, nk),
            in_specs=[q_spec, kv_spec, kv_spec, qid_spec, kid_spec],
            out_specs=[q_spec, row_spec],
            scratch_shapes=[
                pltpu.VMEM((block_q, 1), jnp.float32),
                pltpu.VMEM((block_q, 1), jnp.float32),
                pltpu.VMEM((block_q, d), jnp.float32),
            ],
        ),
        out_shape=[jax.ShapeDtypeStruct(qt.shape, q.dtype), jax.ShapeDtypeStruct((b, h, qt.shape[2], 1), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 4 + ("arbitrary",)),
        interpret=_interpret(interpret),
        name="hourllava_flash_fwd_tpu",
    )(q_offset, qt, kt, vt, qid, kid)
    return o[:, :, :lq].transpose(0, 2, 1, 3), lse[:, :, :lq, 0]


def pallas_tpu_bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, *, scale, causal, block_q, block_k, interpret):
    """Returns (dq, dk, dv) in the public layout, computed by the dQ and dK/dV kernels."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    qt, kt, vt, qid, kid = _prepare(q, k, v, q_ids, kv_ids, block_q, block_k)
    lqp = qt.shape[2]
    nq, nk = lqp // block_q, kt.shape[2] // block_k
    dot_ = _prepare(do.astype(q.dtype), k, v, q_ids, kv_ids, block_q, block_k)[0]
    # delta_i = sum_d dO·O, the softmax-Jacobian row term, computed once in XLA.
    delta = jnp.einsum("bqhd,bqhd->bhq", do.astype(jnp.float32), o.astype(jnp.float32))
    rows = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, lqp - lq)))[..., None]
    lse_t, delta_t = rows(lse), rows(delta)
    opts = dict(scale=scale, causal=causal, bq=block_q, bk=block_k)
    operands = (q_offset, qt, kt, vt, qid, kid, dot_, lse_t, delta_t)

    q_spec, kv_spec, qid_spec, kid_spec, row_spec = _specs(block_q, block_k, d, g, q_axis=3, k_axis=4, g_axis=2, causal=causal, clamp="k")
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, nk=nk, **opts),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, kh, g, nq, nk),
            in_specs=[q_spec, kv_spec, kv_spec, qid_spec, kid_spec, q_spec, row_spec, row_spec],
            out_specs=q_spec,
            scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(qt.shape, q.dtype),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 4 + ("arbitrary",)),
        interpret=_interpret(interpret),
        name="hourllava_flash_dq_tpu",
    )(*operands)

    in_q, kv_spec, in_qid, kid_spec, in_row = _specs(block_q, block_k, d, g, q_axis=4, k_axis=2, g_axis=3, causal=causal, clamp="q", nq=nq)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, g=g, nq=nq, **opts),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, kh, nk, g, nq),
            in_specs=[in_q, kv_spec, kv_spec, in_qid, kid_spec, in_q, in_row, in_row],
            out_specs=[kv_spec, kv_spec],
            scratch_shapes=[pltpu.VMEM((block_k, d), jnp.float32), pltpu.VMEM((block_k, d), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(kt.shape, k.dtype), jax.ShapeDtypeStruct(vt.shape, v.dtype)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 3 + ("arbitrary",) * 2),
        interpret=_interpret(interpret),
        name="hourllava_flash_dkv_tpu",
    )(*operands)
    back = lambda x, n: x[:, :, :n].transpose(0, 2, 1, 3)
    return back(dq, lq), back(dk, lk), back(dv, lk)


pallas_tpu_attention = make_attention(pallas_tpu_fwd, pallas_tpu_bwd)
"""attn(q, k, v, q_offset int32[B], q_ids int32[B, Lq], kv_ids int32[B, Lk], opts) -> o; opts =
sorted (name, value) pairs of block_q, block_k, causal, interpret, scale."""
