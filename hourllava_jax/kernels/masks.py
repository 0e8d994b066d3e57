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


# Key id of padding (a masked-out key or a key added to reach a block multiple). Query segment
# ids must never take this value; any other int32 is a valid segment id.
PAD_ID = -(2**31)


def normalize_mask(mask: MaskSpec, b: int, lq: int, lk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Folds every non-causal constraint into integer ids that kernels compare per block.

    Query i may see key j iff ``q_ids[i] == kv_ids[j]`` (and the causal rule, if any); a padded or
    masked-out key gets :data:`PAD_ID`, which no query carries. One representation for padding,
    segments and block-multiple padding keeps every kernel's mask a single compare.

    Returns:
      q_offset: int32[B]; q_ids: int32[B, Lq]; kv_ids: int32[B, Lk].
    """
    q_offset = jnp.broadcast_to(jnp.asarray(mask.q_offset, jnp.int32).reshape(-1), (b,))
    if mask.q_segment_ids is not None and mask.kv_segment_ids is not None:
        q_ids = jnp.broadcast_to(jnp.asarray(mask.q_segment_ids, jnp.int32), (b, lq))
        kv_ids = jnp.broadcast_to(jnp.asarray(mask.kv_segment_ids, jnp.int32), (b, lk))
    else:
        q_ids = jnp.zeros((b, lq), jnp.int32)
        kv_ids = jnp.zeros((b, lk), jnp.int32)
    if mask.kv_mask is not None:
        kv_ids = jnp.where(jnp.broadcast_to(mask.kv_mask, (b, lk)), kv_ids, PAD_ID)
    return q_offset, q_ids, kv_ids


def pad_ids(q_ids: jax.Array, kv_ids: jax.Array, lq_pad: int, lk_pad: int) -> tuple[jax.Array, jax.Array]:
    """Pads int32[B, Lq] / int32[B, Lk] ids to block multiples; padded keys are never visible."""
    q_ids = jnp.pad(q_ids, ((0, 0), (0, lq_pad - q_ids.shape[1])))
    kv_ids = jnp.pad(kv_ids, ((0, 0), (0, lk_pad - kv_ids.shape[1])), constant_values=PAD_ID)
    return q_ids, kv_ids


def allowed_block(q_pos, k_pos, q_ids, kv_ids, q_offset, causal: bool):
    """bool[bq, bk] visibility of one tile; pure jnp so XLA and Pallas kernels share it.

    q_pos, q_ids: int32[bq, 1]; k_pos, kv_ids: int32[1, bk]; q_offset: int32 scalar.
    """
    allowed = q_ids == kv_ids
    if causal:
        allowed = allowed & (k_pos <= q_pos + q_offset)
    return allowed
