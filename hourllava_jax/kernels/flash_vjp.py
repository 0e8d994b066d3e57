"""Turns a (forward, backward) pair of flash-style functions into a differentiable attention.

Every implementation (chunked XLA, Pallas TPU, Pallas GPU) exposes the same two raw functions,
all in the public layout (q float[B, Lq, H, D], k/v float[B, Lk, K, D]):

  fwd(q, k, v, q_offset, q_ids, kv_ids, **opts) -> (o float[B, Lq, H, D], lse f32[B, H, Lq])
  bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, **opts) -> (dq, dk, dv)

Keeping them raw (not already custom_vjp'd) lets the memory-parallel path reuse them: each
memory shard runs ``bwd`` with the *global* output and log-sum-exp (see memory_parallel.py).
Rows with no visible key have o = 0 and lse = NEG_LSE (finite, so combining shards stays NaN-free).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

# Log-sum-exp of a row that sees no key: finite so exp(lse_a - lse_b) never produces NaN.
NEG_LSE = -1e30


def make_attention(fwd: Callable, bwd: Callable) -> Callable:
    """Returns attn(q, k, v, q_offset, q_ids, kv_ids, opts) -> o, differentiable in q, k, v.

    opts: a hashable tuple of (name, value) pairs passed to fwd/bwd as keyword arguments.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
    def attn(q, k, v, q_offset, q_ids, kv_ids, opts):
        return fwd(q, k, v, q_offset, q_ids, kv_ids, **dict(opts))[0]

    def attn_fwd(q, k, v, q_offset, q_ids, kv_ids, opts):
        o, lse = fwd(q, k, v, q_offset, q_ids, kv_ids, **dict(opts))
        return o, (q, k, v, q_offset, q_ids, kv_ids, o, lse)

    def attn_bwd(opts, res, do):
        q, k, v, q_offset, q_ids, kv_ids, o, lse = res
        dq, dk, dv = bwd(q, k, v, q_offset, q_ids, kv_ids, o, lse, do, **dict(opts))
        return dq, dk, dv, None, None, None

    attn.defvjp(attn_fwd, attn_bwd)
    return attn
