"""Rotary position embeddings (non-interleaved, rotate-half), full or on a leading slice of each head.

Qwen2 rotates the whole head; MemAug rotates the first half only (design §1.3). Angles are computed
in fp32 from the position ids, then cast to the activation dtype, as the reference does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_cos_sin(positions: jax.Array, rotary_dim: int, theta: float, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """positions int[B, L] -> (cos, sin) each dtype[B, L, rotary_dim]."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    ang = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, rotary_dim/2]
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang).astype(dtype), jnp.sin(ang).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x float[B, L, N, D]; cos/sin [B, L, R] with R <= D: rotates x[..., :R], passes the rest."""
    r = cos.shape[-1]
    xr, xp = x[..., :r], x[..., r:]
    x1, x2 = xr[..., : r // 2], xr[..., r // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = xr * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return jnp.concatenate([out, xp], axis=-1) if xp.shape[-1] else out
