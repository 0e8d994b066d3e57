"""Memory-linear attention in pure XLA: online softmax over key chunks, recomputing backward.

The default on CPU and the fallback everywhere. Loops run over query chunks (outer) and key
chunks (inner) with ``lax.fori_loop``, so peak memory is O(Lq·H·D + H·block_q·block_k), never
O(Lq·Lk). Lengths that are not chunk multiples are *not* padded (a padded copy of a 234k-token
memory would cost as much as the rest): the last chunk's start is clamped so it ends at the
sequence end, and the keys (backward: also the query rows) it shares with the previous chunk are
masked out. Causal attention stops each query chunk's key loop at the diagonal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hourllava_jax.kernels.flash_vjp import NEG_LSE, make_attention
from hourllava_jax.kernels.masks import allowed_block


def _key_chunks(q0: jax.Array, block_q: int, block_k: int, nk: int, q_offset: jax.Array, causal: bool) -> jax.Array:
    """Number of key chunks the query chunk starting at ``q0`` can see (all of them unless causal)."""
    if not causal:
        return jnp.int32(nk)
    last_visible = q0 + block_q - 1 + jnp.max(q_offset)  # highest visible key index
    return jnp.clip(jax.lax.div(last_visible, block_k) + 1, 0, nk).astype(jnp.int32)


def _start(i: jax.Array, block: int, length: int) -> tuple[jax.Array, jax.Array]:
    """(nominal start i·block, clamped start so the chunk ends inside the sequence)."""
    nominal = i * block
    return nominal, jnp.minimum(nominal, length - block)


def _heads_first(x: jax.Array, kv_heads: int) -> jax.Array:
    """[B, L, H, D] -> [B, K, G, L, D] (H = K·G): the layout every tile matmul reads directly."""
    b, length, h, d = x.shape
    return x.reshape(b, length, kv_heads, h // kv_heads, d).transpose(0, 2, 3, 1, 4)


def _heads_last(x: jax.Array) -> jax.Array:
    """[B, K, G, L, D] -> [B, L, K·G, D]."""
    b, kh, g, length, d = x.shape
    return x.transpose(0, 3, 1, 2, 4).reshape(b, length, kh * g, d)


def _scores(qi, kj, q0, k0, k_new, qid, kid, q_offset, scale, causal):
    """Masked scores f32[B, K, G, bq, bk] and the mask bool[B, 1, 1, bq, bk] of one tile.

    qi: [B, K, G, bq, D]; kj: [B, bk, K, D]. k_new: index of the first key not seen by an
    earlier chunk (keys before it are masked).
    """
    s = jnp.einsum("bkgqd,bskd->bkgqs", qi, kj, preferred_element_type=jnp.float32) * scale
    q_pos = q0 + jnp.arange(qi.shape[3])
    k_pos = k0 + jnp.arange(kj.shape[1])
    allowed = allowed_block(q_pos[None, :, None], k_pos[None, None, :], qid[:, :, None], kid[:, None, :], q_offset[:, None, None], causal)
    allowed = allowed & (k_pos >= k_new)[None, None, :]
    return s, allowed[:, None, None]


def _slice(x, start, size, axis=1):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


# Queries (and dO, dQ) are heads-first inside the loops ([B, K, G, L, D]) and dK/dV tiles are
# computed transposed ([B, K, D, bk]): XLA then only ever transposes tiles of size bk·D or bq·D,
# never a score-sized [G, bq, bk] one, which the public [B, L, H, D] layout forced in every
# inner step. K and V stay as given: a transposed copy of a 234k-token memory is not free.


def chunked_fwd(q, k, v, q_offset, q_ids, kv_ids, *, scale, causal, block_q, block_k):
    """Returns o float[B, Lq, H, D] (q's dtype) and lse f32[B, H, Lq]. Needs block_q <= Lq, block_k <= Lk."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    nq, nk = -(-lq // block_q), -(-lk // block_k)
    qt = _heads_first(q, kh)

    def q_chunk(iq, carry):
        o_all, lse_all = carry
        _, q0 = _start(iq, block_q, lq)
        qi, qid = _slice(qt, q0, block_q, 3), _slice(q_ids, q0, block_q)

        def k_chunk(jk, state):
            m, l, acc = state
            k_new, k0 = _start(jk, block_k, lk)
            kj, vj = _slice(k, k0, block_k), _slice(v, k0, block_k)
            s, allowed = _scores(qi, kj, q0, k0, k_new, qid, _slice(kv_ids, k0, block_k), q_offset, scale, causal)
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
        m, l, acc = jax.lax.fori_loop(0, _key_chunks(q0, block_q, block_k, nk, q_offset, causal), k_chunk, init)
        safe_l = jnp.where(l > 0, l, 1.0)
        o = acc / safe_l[..., None]
        lse = jnp.where(l > 0, m + jnp.log(safe_l), NEG_LSE)
        # A clamped last chunk rewrites rows of the previous one with identical values.
        o_all = jax.lax.dynamic_update_slice_in_dim(o_all, o.astype(q.dtype), q0, 3)
        lse_all = jax.lax.dynamic_update_slice_in_dim(lse_all, lse, q0, 3)
        return o_all, lse_all

    init = (jnp.zeros((b, kh, g, lq, d), q.dtype), jnp.zeros((b, kh, g, lq), jnp.float32))
    o, lse = jax.lax.fori_loop(0, nq, q_chunk, init)
    return _heads_last(o), lse.reshape(b, h, lq)


def chunked_bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, *, scale, causal, block_q, block_k):
    """Gradients (dq, dk, dv) from the output o and lse f32[B, H, Lq]; recomputes every tile."""
    b, lq, h, d = q.shape
    lk, kh = k.shape[1], k.shape[2]
    g = h // kh
    nq, nk = -(-lq // block_q), -(-lk // block_k)
    qt, dot = _heads_first(q, kh), _heads_first(do.astype(q.dtype), kh)
    # delta_i = sum_d dO·O: the softmax-Jacobian term, one number per query row.
    delta = jnp.einsum("bqhd,bqhd->bhq", do.astype(jnp.float32), o.astype(jnp.float32)).reshape(b, kh, g, lq)
    lse = lse.reshape(b, kh, g, lq)

    def q_chunk(iq, carry):
        dq_all, dk_all, dv_all = carry
        q_new, q0 = _start(iq, block_q, lq)
        qi, doi, qid = _slice(qt, q0, block_q, 3), _slice(dot, q0, block_q, 3), _slice(q_ids, q0, block_q)
        lse_i, delta_i = _slice(lse, q0, block_q, 3), _slice(delta, q0, block_q, 3)
        # Rows a clamped chunk shares with the previous one must not add to dK/dV a second time.
        fresh = (q0 + jnp.arange(block_q)) >= q_new

        def k_chunk(jk, state):
            dq_i, dk_all, dv_all = state
            k_new, k0 = _start(jk, block_k, lk)
            kj, vj = _slice(k, k0, block_k), _slice(v, k0, block_k)
            s, allowed = _scores(qi, kj, q0, k0, k_new, qid, _slice(kv_ids, k0, block_k), q_offset, scale, causal)
            allowed = allowed & fresh[None, None, None, :, None]
            p = jnp.where(allowed, jnp.exp(s - lse_i[..., None]), 0.0)
            dp = jnp.einsum("bkgqd,bskd->bkgqs", doi, vj, preferred_element_type=jnp.float32)
            ds = (p * (dp - delta_i[..., None]) * scale).astype(q.dtype)
            dv_j = jnp.einsum("bkgqd,bkgqs->bkds", doi, p.astype(q.dtype), preferred_element_type=jnp.float32)
            dk_j = jnp.einsum("bkgqd,bkgqs->bkds", qi, ds, preferred_element_type=jnp.float32)
            dq_i = dq_i + jnp.einsum("bkgqs,bskd->bkgqd", ds, kj, preferred_element_type=jnp.float32)
            dk_all = jax.lax.dynamic_update_slice_in_dim(dk_all, _slice(dk_all, k0, block_k) + dk_j.transpose(0, 3, 1, 2), k0, 1)
            dv_all = jax.lax.dynamic_update_slice_in_dim(dv_all, _slice(dv_all, k0, block_k) + dv_j.transpose(0, 3, 1, 2), k0, 1)
            return dq_i, dk_all, dv_all

        dq_i = jnp.zeros((b, kh, g, block_q, d), jnp.float32)
        dq_i, dk_all, dv_all = jax.lax.fori_loop(
            0, _key_chunks(q0, block_q, block_k, nk, q_offset, causal), k_chunk, (dq_i, dk_all, dv_all)
        )
        dq_i = jnp.where(fresh[:, None], dq_i, _slice(dq_all, q0, block_q, 3))  # keep finished rows
        dq_all = jax.lax.dynamic_update_slice_in_dim(dq_all, dq_i, q0, 3)
        return dq_all, dk_all, dv_all

    init = (
        jnp.zeros((b, kh, g, lq, d), jnp.float32),
        jnp.zeros((b, lk, kh, d), jnp.float32),
        jnp.zeros((b, lk, kh, d), jnp.float32),
    )
    dq, dk, dv = jax.lax.fori_loop(0, nq, q_chunk, init)
    return _heads_last(dq).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


chunked_attention = make_attention(chunked_fwd, chunked_bwd)
"""attn(q, k, v, q_offset int32[B], q_ids int32[B, Lq], kv_ids int32[B, Lk], opts) -> o; opts =
(("block_k", int), ("block_q", int), ("causal", bool), ("scale", float))."""
