"""The attention mask, described rather than materialised, so kernels can build it per block."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Which key each query may see; all fields optional (None = no constraint).

    causal: query i sees key j only if j <= i + q_offset.
    q_offset: int32[B] (or scalar): absolute position of query 0 relative to key 0 (KV-cache decoding).
    kv_mask: bool[B, Lk], False for padded keys.
    q_segment_ids / kv_segment_ids: int32[B, Lq] / int32[B, Lk]; a query sees keys of its own segment.
    """

    causal: bool = False
    q_offset: jax.Array | int = 0
    kv_mask: jax.Array | None = None
    q_segment_ids: jax.Array | None = None
    kv_segment_ids: jax.Array | None = None

    def block(self, q_idx: jax.Array, k_idx: jax.Array, b_slice=None) -> jax.Array | None:
        """bool[B, len(q_idx), len(k_idx)] (or None when everything is allowed) for index vectors."""
        allowed = None

        def _and(a, b):
            return b if a is None else a & b

        if self.causal:
            off = jnp.asarray(self.q_offset, jnp.int32).reshape(-1, 1, 1)
            allowed = _and(allowed, k_idx[None, None, :] <= q_idx[None, :, None] + off)
        if self.kv_mask is not None:
            allowed = _and(allowed, self.kv_mask[:, None, :][..., k_idx])
        if self.q_segment_ids is not None and self.kv_segment_ids is not None:
            allowed = _and(allowed, self.q_segment_ids[:, q_idx][:, :, None] == self.kv_segment_ids[:, k_idx][:, None, :])
        return allowed

    def dense(self, lq: int, lk: int) -> jax.Array:
        """bool[B or 1, Lq, Lk]."""
        allowed = self.block(jnp.arange(lq), jnp.arange(lk))
        return jnp.ones((1, lq, lk), bool) if allowed is None else allowed
