"""The MemAug query and the LLM input, assembled in-graph with static shapes (design §2.4).

Both are "replace every ``<image>`` placeholder by a block of tokens" operations on a padded
batch. Each element's destination slot is an exclusive cumulative sum of how many slots the
elements before it take, so a whole batch is assembled with one scatter and no Python loop;
slots past the end are dropped (that is also how truncation to ``max_length`` happens).

Shapes: B batch, L text tokens, K placeholders per sample (max), N decayed tokens per
placeholder (max), H width.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hourllava_jax.config.tokens import IGNORE_INDEX


@dataclasses.dataclass
class Query:
    """MemAug's query. ``embeds`` float[B, Lq, H], ``positions``/``valid`` [B, Lq], and
    ``decayed_slot`` int32[B, K, N]: where each decayed token sits in the query (Lq if invalid)."""

    embeds: jax.Array
    positions: jax.Array
    valid: jax.Array
    decayed_slot: jax.Array


@dataclasses.dataclass
class LLMInputs:
    """``embeds`` float[B, Lo, H], ``labels``/``positions`` int32[B, Lo], ``valid`` bool[B, Lo]."""

    embeds: jax.Array
    labels: jax.Array
    positions: jax.Array
    valid: jax.Array


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    return jnp.cumsum(x, axis=-1) - x


def _placeholder_tokens(is_ph: jax.Array, k_max: int) -> tuple[jax.Array, jax.Array]:
    """For each sample, the token index of its k-th placeholder: int32[B, K] (0 if absent), and
    the placeholder rank of each token int32[B, L] (clipped to K-1 on non-placeholders)."""
    b, length = is_ph.shape
    rank = jnp.cumsum(is_ph, axis=-1) - 1
    rank_c = jnp.clip(rank, 0, k_max - 1)
    tok = jnp.zeros((b, k_max), jnp.int32)
    tgt = jnp.where(is_ph & (rank < k_max), rank, k_max)  # out of range -> dropped
    tok = tok.at[jnp.arange(b)[:, None], tgt].set(jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length)), mode="drop")
    return tok, rank_c


def _scatter_rows(dst: jax.Array, slots: jax.Array, values: jax.Array) -> jax.Array:
    """dst[b, slots[b, i]] = values[b, i]; slots out of range are dropped. slots [B, S]."""
    b = dst.shape[0]
    return dst.at[jnp.arange(b)[:, None], slots].set(values, mode="drop")


def build_query(
    text_embeds: jax.Array,
    input_ids: jax.Array,
    text_valid: jax.Array,
    labels: jax.Array | None,
    decayed_embeds: jax.Array,
    decayed_positions: jax.Array,
    decayed_valid: jax.Array,
    image_token_id: int,
) -> Query:
    """MemAug query (design §2.4).

    Kept text = valid tokens whose label is ``-100`` (all valid tokens when ``labels`` is None,
    i.e. inference, as the release does). Positions accumulate as the reference's pseudo-code:
    a text token takes ``max_so_far + 1``; the decayed block of a placeholder takes its memory
    ids plus ``max_so_far + 1``, and ``max_so_far`` jumps to the block's largest id.

    Args:
      text_embeds: float[B, L, H] LLM input-table embeddings of ``input_ids``.
      input_ids: int32[B, L] with ``image_token_id`` at placeholders; text_valid: bool[B, L].
      labels: int32[B, L] or None.
      decayed_embeds: float[B, K, N, H]; decayed_positions: int32[B, K, N] (memory ids);
      decayed_valid: bool[B, K, N] (valid tokens first in each row).
    """
    b, length, h = text_embeds.shape
    k_max, n_max = decayed_valid.shape[1:]
    lq = length + k_max * n_max
    is_ph = (input_ids == image_token_id) & text_valid
    kept = text_valid & ~is_ph
    if labels is not None:
        kept &= labels == IGNORE_INDEX
    ph_tok, rank = _placeholder_tokens(is_ph, k_max)

    n_valid = decayed_valid.sum(-1).astype(jnp.int32)  # [B, K]
    max_id = jnp.max(jnp.where(decayed_valid, decayed_positions, -1), axis=-1)  # [B, K]
    take = lambda per_k: jnp.take_along_axis(per_k, rank, axis=1)  # noqa: E731  [B, K] -> [B, L]
    slots_used = jnp.where(kept, 1, jnp.where(is_ph, take(n_valid), 0))
    pos_incr = jnp.where(kept, 1, jnp.where(is_ph, take(max_id) + 1, 0))
    slot = _exclusive_cumsum(slots_used)
    base = _exclusive_cumsum(pos_incr)  # max position so far + 1

    text_slot = jnp.where(kept, slot, lq)
    embeds = _scatter_rows(jnp.zeros((b, lq, h), text_embeds.dtype), text_slot, text_embeds)
    positions = _scatter_rows(jnp.zeros((b, lq), jnp.int32), text_slot, base)

    has_ph = jnp.take_along_axis(is_ph, ph_tok, axis=1)  # [B, K]: the k-th placeholder exists
    block_slot = jnp.take_along_axis(slot, ph_tok, axis=1)  # [B, K]
    block_base = jnp.take_along_axis(base, ph_tok, axis=1)
    within = jnp.cumsum(decayed_valid, axis=-1) - 1
    ok = decayed_valid & has_ph[..., None]
    dslot = jnp.where(ok, block_slot[..., None] + within, lq).astype(jnp.int32)  # [B, K, N]
    embeds = _scatter_rows(embeds, dslot.reshape(b, -1), decayed_embeds.reshape(b, -1, h).astype(embeds.dtype))
    positions = _scatter_rows(positions, dslot.reshape(b, -1), (decayed_positions + block_base[..., None]).reshape(b, -1))
    total = slots_used.sum(-1)
    valid = jnp.arange(lq)[None, :] < total[:, None]
    return Query(embeds=embeds, positions=positions, valid=valid, decayed_slot=dslot)


def splice_llm_inputs(
    text_embeds: jax.Array,
    input_ids: jax.Array,
    text_valid: jax.Array,
    labels: jax.Array | None,
    visual: jax.Array,
    visual_valid: jax.Array,
    image_token_id: int,
    out_len: int,
) -> LLMInputs:
    """The LLM input: the original conversation with each placeholder replaced by its visual
    tokens (labels -100), compacted left, truncated to ``out_len`` (design §2.4), right-padded.

    Args:
      text_embeds: float[B, L, H]; input_ids, labels: int32[B, L]; text_valid: bool[B, L].
      visual: float[B, K, N, H] (MemAug outputs at the decayed tokens); visual_valid: bool[B, K, N].
    """
    b, length, h = text_embeds.shape
    k_max = visual_valid.shape[1]
    is_ph = (input_ids == image_token_id) & text_valid
    is_text = text_valid & ~is_ph
    ph_tok, rank = _placeholder_tokens(is_ph, k_max)
    n_valid = visual_valid.sum(-1).astype(jnp.int32)
    slots_used = jnp.where(is_text, 1, jnp.where(is_ph, jnp.take_along_axis(n_valid, rank, axis=1), 0))
    slot = _exclusive_cumsum(slots_used)

    text_slot = jnp.where(is_text, slot, out_len)
    embeds = _scatter_rows(jnp.zeros((b, out_len, h), text_embeds.dtype), text_slot, text_embeds)
    lab = labels if labels is not None else jnp.full_like(input_ids, IGNORE_INDEX)
    out_labels = _scatter_rows(jnp.full((b, out_len), IGNORE_INDEX, jnp.int32), text_slot, lab.astype(jnp.int32))

    has_ph = jnp.take_along_axis(is_ph, ph_tok, axis=1)
    block_slot = jnp.take_along_axis(slot, ph_tok, axis=1)
    within = jnp.cumsum(visual_valid, axis=-1) - 1
    vslot = jnp.where(visual_valid & has_ph[..., None], block_slot[..., None] + within, out_len).astype(jnp.int32)
    embeds = _scatter_rows(embeds, vslot.reshape(b, -1), visual.reshape(b, -1, h).astype(embeds.dtype))
    total = jnp.minimum(slots_used.sum(-1), out_len)
    valid = jnp.arange(out_len)[None, :] < total[:, None]
    positions = jnp.broadcast_to(jnp.arange(out_len, dtype=jnp.int32), (b, out_len))
    return LLMInputs(embeds=embeds, labels=jnp.where(valid, out_labels, IGNORE_INDEX), positions=positions, valid=valid)


def count_placeholders(input_ids: jax.Array, text_valid: jax.Array, image_token_id: int) -> jax.Array:
    """int32[B]: ``<image>`` placeholders per sample (checked against the visual inputs)."""
    return ((input_ids == image_token_id) & text_valid).sum(-1).astype(jnp.int32)
