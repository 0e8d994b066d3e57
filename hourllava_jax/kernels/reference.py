"""Plain-jnp attention: the numerical reference every other implementation is tested against.

Materialises the full score matrix (O(Lq·Lk) memory): use it for tests and small inputs only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hourllava_jax.kernels.masks import MaskSpec


def attention_reference(q: jax.Array, k: jax.Array, v: jax.Array, mask: MaskSpec, scale: float) -> jax.Array:
    """Grouped-query attention, softmax in fp32.

    Args:
      q: float[B, Lq, H, D]; k, v: float[B, Lk, K, D] with H % K == 0.
      mask: which (query, key) pairs may attend (causal offset, key padding, segment ids).
    Returns:
      float[B, Lq, H, D] in q's dtype; query rows with no visible key are 0.
    """
    b, lq, h, d = q.shape
    kv_heads = k.shape[2]
    qg = q.reshape(b, lq, kv_heads, h // kv_heads, d)
    s = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32) * scale
    allowed = mask.dense(lq, k.shape[1])[:, None, None]  # bool[B, 1, 1, Lq, Lk]
    s = jnp.where(allowed, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(s - m)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom == 0.0, 1.0, denom)
    o = jnp.einsum("bkgqs,bskd->bqkgd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return o.reshape(b, lq, h, d).astype(q.dtype)
