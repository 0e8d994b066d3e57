"""Memory-linear attention in pure XLA: online softmax over key chunks, recomputing backward.

The default on CPU and the fallback everywhere. Loops run over query chunks (outer) and key
chunks (inner) with ``lax.fori_loop``, so peak memory is O(Lq·H·D + H·block_q·block_k), never
O(Lq·Lk). Lengths that are not chunk multiples are padded internally (padded keys are masked).
Causal attention stops each query chunk's key loop at the diagonal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hourllava_jax.kernels.flash_vjp import NEG_LSE, make_attention
from hourllava_jax.kernels.masks import allowed_block, pad_ids


def _pad_to(x: jax.Array, length: int, axis: int = 1) -> jax.Array:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, pad)


def _key_chunks(iq: jax.Array, block_q: int, block_k: int, nk: int, q_offset: jax.Array, causal: bool) -> jax.Array:
    """Number of key chunks query chunk ``iq`` can see (all of them unless causal)."""
    if not causal:
        return jnp.int32(nk)
    last_visible = iq * block_q + block_q - 1 + jnp.max(q_offset)  # highest visible key index
    return jnp.clip(jax.lax.div(last_visible, block_k) + 1, 0, nk).astype(jnp.int32)


def _scores(qi, kj, q_pos, k_pos, qid, kid, q_offset, scale, causal):
    """Masked scores f32[B, K, G, bq, bk] and the mask bool[B, 1, 1, bq, bk] of one tile."""
    s = jnp.einsum("bqkgd,bskd->bkgqs", qi, kj, preferred_element_type=jnp.float32) * scale
    allowed = allowed_block(q_pos[None, :, None], k_pos[None, None, :], qid[:, :, None], kid[:, None, :], q_offset[:, None, None], causal)
    return s, allowed[:, None, None]


def chunked_fwd(q, k, v, q_offset, q_ids, kv_ids, *, scale, causal, block_q, block_k):
    """Returns o float[B, Lq, H, D] (q's dtype) and lse f32[B, H, Lq]."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    nq, nk = -(-lq // block_q), -(-lk // block_k)
    qp = _pad_to(q, nq * block_q).reshape(b, nq * block_q, kh, g, d)
    kp, vp = _pad_to(k, nk * block_k), _pad_to(v, nk * block_k)
    q_ids, kv_ids = pad_ids(q_ids, kv_ids, nq * block_q, nk * block_k)

    def q_chunk(iq, carry):
        o_all, lse_all = carry
        q0 = iq * block_q
        qi = jax.lax.dynamic_slice_in_dim(qp, q0, block_q, 1)
        qid = jax.lax.dynamic_slice_in_dim(q_ids, q0, block_q, 1)
        q_pos = q0 + jnp.arange(block_q)

        def k_chunk(jk, state):
            m, l, acc = state
            k0 = jk * block_k
            kj = jax.lax.dynamic_slice_in_dim(kp, k0, block_k, 1)
            vj = jax.lax.dynamic_slice_in_dim(vp, k0, block_k, 1)
            kid = jax.lax.dynamic_slice_in_dim(kv_ids, k0, block_k, 1)
            s, allowed = _scores(qi, kj, q_pos, k0 + jnp.arange(block_k), qid, kid, q_offset, scale, causal)
            m_new = jnp.maximum(m, jnp.max(jnp.where(allowed, s, NEG_LSE), axis=-1))
            # The where (not a -inf fill) keeps fully masked rows at exactly 0 probability.
            p = jnp.where(allowed, jnp.exp(s - m_new[..., None]), 0.0)
            alpha = jnp.exp(m - m_new)
            pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(v.dtype), vj, preferred_element_type=jnp.float32)
            return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + pv

        init = (
            jnp.full((b, kh, g, block_q), NEG_LSE, jnp.float32),
            jnp.zeros((b, kh, g, block_q), jnp.float32),
            jnp.zeros((b, kh, g, block_q, d), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(0, _key_chunks(iq, block_q, block_k, nk, q_offset, causal), k_chunk, init)
        safe_l = jnp.where(l > 0, l, 1.0)
        o = (acc / safe_l[..., None]).transpose(0, 3, 1, 2, 4).reshape(b, block_q, h, d)
        lse = jnp.where(l > 0, m + jnp.log(safe_l), NEG_LSE).reshape(b, h, block_q)
        o_all = jax.lax.dynamic_update_slice_in_dim(o_all, o.astype(q.dtype), q0, 1)
        lse_all = jax.lax.dynamic_update_slice_in_dim(lse_all, lse, q0, 2)
        return o_all, lse_all

    init = (jnp.zeros((b, nq * block_q, h, d), q.dtype), jnp.zeros((b, h, nq * block_q), jnp.float32))
    o, lse = jax.lax.fori_loop(0, nq, q_chunk, init)
    return o[:, :lq], lse[:, :, :lq]


def chunked_bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, *, scale, causal, block_q, block_k):
    """Gradients (dq, dk, dv) from the output o and lse f32[B, H, Lq]; recomputes every tile."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    nq, nk = -(-lq // block_q), -(-lk // block_k)
    lqp, lkp = nq * block_q, nk * block_k
    qp = _pad_to(q, lqp).reshape(b, lqp, kh, g, d)
    dop = _pad_to(do.astype(q.dtype), lqp).reshape(b, lqp, kh, g, d)
    kp, vp = _pad_to(k, lkp), _pad_to(v, lkp)
    q_ids, kv_ids = pad_ids(q_ids, kv_ids, lqp, lkp)
    # delta_i = sum_d dO·O: the softmax-Jacobian term, one number per query row.
    delta = jnp.einsum("bqhd,bqhd->bhq", do.astype(jnp.float32), o.astype(jnp.float32))
    delta = _pad_to(delta, lqp, axis=2).reshape(b, kh, g, lqp)
    lse = _pad_to(lse, lqp, axis=2).reshape(b, kh, g, lqp)

    def q_chunk(iq, carry):
        dq_all, dk_all, dv_all = carry
        q0 = iq * block_q
        qi = jax.lax.dynamic_slice_in_dim(qp, q0, block_q, 1)
        doi = jax.lax.dynamic_slice_in_dim(dop, q0, block_q, 1)
        qid = jax.lax.dynamic_slice_in_dim(q_ids, q0, block_q, 1)
        lse_i = jax.lax.dynamic_slice_in_dim(lse, q0, block_q, 3)
        delta_i = jax.lax.dynamic_slice_in_dim(delta, q0, block_q, 3)
        q_pos = q0 + jnp.arange(block_q)

        def k_chunk(jk, state):
            dq_i, dk_all, dv_all = state
            k0 = jk * block_k
            kj = jax.lax.dynamic_slice_in_dim(kp, k0, block_k, 1)
            vj = jax.lax.dynamic_slice_in_dim(vp, k0, block_k, 1)
            kid = jax.lax.dynamic_slice_in_dim(kv_ids, k0, block_k, 1)
            s, allowed = _scores(qi, kj, q_pos, k0 + jnp.arange(block_k), qid, kid, q_offset, scale, causal)
            p = jnp.where(allowed, jnp.exp(s - lse_i[..., None]), 0.0)
            dp = jnp.einsum("bqkgd,bskd->bkgqs", doi, vj, preferred_element_type=jnp.float32)
            ds = (p * (dp - delta_i[..., None]) * scale).astype(q.dtype)
            dv_j = jnp.einsum("bkgqs,bqkgd->bskd", p.astype(q.dtype), doi, preferred_element_type=jnp.float32)
            dk_j = jnp.einsum("bkgqs,bqkgd->bskd", ds, qi, preferred_element_type=jnp.float32)
            dq_i = dq_i + jnp.einsum("bkgqs,bskd->bqkgd", ds, kj, preferred_element_type=jnp.float32)
            dk_all = jax.lax.dynamic_update_slice_in_dim(dk_all, jax.lax.dynamic_slice_in_dim(dk_all, k0, block_k, 1) + dk_j, k0, 1)
            dv_all = jax.lax.dynamic_update_slice_in_dim(dv_all, jax.lax.dynamic_slice_in_dim(dv_all, k0, block_k, 1) + dv_j, k0, 1)
            return dq_i, dk_all, dv_all

        dq_i = jnp.zeros((b, block_q, kh, g, d), jnp.float32)
        dq_i, dk_all, dv_all = jax.lax.fori_loop(
            0, _key_chunks(iq, block_q, block_k, nk, q_offset, causal), k_chunk, (dq_i, dk_all, dv_all)
        )
        dq_all = jax.lax.dynamic_update_slice_in_dim(dq_all, dq_i, q0, 1)
        return dq_all, dk_all, dv_all

    init = (
        jnp.zeros((b, lqp, kh, g, d), jnp.float32),
        jnp.zeros((b, lkp, kh, d), jnp.float32),
        jnp.zeros((b, lkp, kh, d), jnp.float32),
    )
    dq, dk, dv = jax.lax.fori_loop(0, nq, q_chunk, init)
    dq = dq.reshape(b, lqp, h, d)[:, :lq].astype(q.dtype)
    return dq, dk[:, :lk].astype(k.dtype), dv[:, :lk].astype(v.dtype)


chunked_attention = make_attention(chunked_fwd, chunked_bwd)
"""attn(q, k, v, q_offset int32[B], q_ids int32[B, Lq], kv_ids int32[B, Lk], opts) -> o; opts =
(("block_k", int), ("block_q", int), ("causal", bool), ("scale", float))."""
