"""Greedy / temperature + top-p generation with a static-shape KV cache, jitted end to end.

Shapes are static so one compiled program serves every prompt of a bucket: the prompt is
right-padded to a multiple of ``bucket`` (padding is a False slot in the cache mask), the cache
holds ``bucket_len + max_new_tokens`` slots, and decoding is a ``lax.while_loop`` that stops early
once every row has emitted an end token. Any padding pattern works (left as HF recommends, right
as Hour-LLaVA assembles batches): RoPE positions count the valid tokens before each token, which
is what HF ``generate`` does, so results match it token for token.

``generate`` runs the whole loop in one jit; ``stream`` yields the tokens step by step (same
compiled prefill, one jitted decode step per token) for a CLI that prints as it goes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.model.kv_cache import KVCache


class Generated(NamedTuple):
    """tokens int32[B, N] (end token included, then pad_id); lengths int32[B] (tokens up to and
    including the first end token, or N)."""

    tokens: jax.Array
    lengths: jax.Array


def bucket_length(n: int, bucket: int) -> int:
    """Smallest multiple of ``bucket`` >= n (>= bucket)."""
    return max(bucket, -(-n // bucket) * bucket)


# ----------------------------------------------------------------------------------------------
# Pure pieces (run inside jit)
# ----------------------------------------------------------------------------------------------


def sample_next(logits: jax.Array, rng: jax.Array | None, temperature: float, top_p: float) -> jax.Array:
    """logits float[B, V] -> int32[B]. temperature 0: argmax; else softmax(logits / T) restricted to
    the smallest set of tokens whose probability reaches top_p (nucleus, as HF's TopPLogitsWarper)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of the strictly better tokens
        keep = mass_before < top_p  # the top token always stays
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def prefill(model, input_ids, inputs_embeds, mask: jax.Array, cache_len: int):
    """Runs the prompt through the model into a fresh cache.

    mask bool[B, Lp]. Returns (logits float32[B, V] at each row's last valid token, cache,
    next_pos int32[B] = RoPE position of the first generated token).
    """
    b, lp = mask.shape
    positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    cache = model.init_cache(b, cache_len)
    hidden, cache = model.hidden_states(input_ids, inputs_embeds=inputs_embeds, positions=positions, attention_mask=mask, cache=cache)
    last = jnp.max(jnp.where(mask, jnp.arange(lp), 0), axis=1)
    # Only the last token's logits: B x Lp x V would be GBs with a 152k vocabulary.
    h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return model.logits(h_last).astype(jnp.float32), cache, mask.sum(axis=1, dtype=jnp.int32)


def decode_step(model, token: jax.Array, pos: jax.Array, cache: KVCache):
    """token int32[B], pos int32[B] -> (logits float32[B, V], cache)."""
    logits, cache = model(token[:, None], positions=pos[:, None], cache=cache)
    return logits[:, 0].astype(jnp.float32), cache


def _is_end(token: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
    if not eos_ids:
        return jnp.zeros(token.shape, bool)
    return jnp.any(token[:, None] == jnp.asarray(eos_ids, jnp.int32)[None, :], axis=1)


def _generate(graphdef, state, input_ids, inputs_embeds, mask, rng, *, max_new_tokens, eos_ids, temperature, top_p, pad_id):
    model = nnx.merge(graphdef, state)
    b, lp = mask.shape
    logits, cache, pos0 = prefill(model, input_ids, inputs_embeds, mask, lp + max_new_tokens)

    def pick(logits, step, done):
        key = None if rng is None else jax.random.fold_in(rng, step)
        tok = sample_next(logits, key, temperature, top_p)
        return jnp.where(done, pad_id, tok), done | _is_end(tok, eos_ids)

    tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
    tok, done = pick(logits, 0, jnp.zeros((b,), bool))
    tokens = tokens.at[:, 0].set(tok)
    lengths = jnp.ones((b,), jnp.int32)

    def cond(carry):
        step, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, tok, cache, done, tokens, lengths = carry
        logits, cache = decode_step(model, tok, pos0 + step - 1, cache)
        tok, new_done = pick(logits, step, done)
        tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, step))
        return step + 1, tok, cache, new_done, tokens, lengths + (~done).astype(jnp.int32)

    carry = (jnp.int32(1), tok, cache, done, tokens, lengths)
    _, _, _, _, tokens, lengths = jax.lax.while_loop(cond, body, carry)
    return Generated(tokens, lengths)


_generate_jit = jax.jit(_generate, static_argnames=("graphdef", "max_new_tokens", "eos_ids", "temperature", "top_p", "pad_id"))


# ----------------------------------------------------------------------------------------------
# Host-side entry points
# ----------------------------------------------------------------------------------------------


def _prepare(input_ids, inputs_embeds, attention_mask, bucket: int, pad_id: int):
    """Checks and right-pads the prompt to the bucket. Returns (ids or None, embeds or None, mask)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("generate: pass exactly one of input_ids int32[B, L] and inputs_embeds float[B, L, H]")
    x = input_ids if input_ids is not None else inputs_embeds
    if x.ndim != (2 if input_ids is not None else 3):
        raise ValueError(f"generate: input_ids must be [B, L] / inputs_embeds [B, L, H], got shape {x.shape}")
    b, l = x.shape[:2]
    mask = jnp.ones((b, l), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
    if mask.shape != (b, l):
        raise ValueError(f"generate: attention_mask must be [{b}, {l}], got {mask.shape}")
    if not bool(np.all(np.asarray(mask).any(axis=1))):
        raise ValueError("generate: every row needs at least one valid prompt token")
    lp = bucket_length(l, bucket)
    mask = jnp.pad(mask, ((0, 0), (0, lp - l)))
    if input_ids is not None:
        return jnp.pad(jnp.asarray(input_ids, jnp.int32), ((0, 0), (0, lp - l)), constant_values=pad_id), None, mask
    return None, jnp.pad(jnp.asarray(inputs_embeds), ((0, 0), (0, lp - l), (0, 0))), mask


def _end_and_pad(cfg, eos_ids: Sequence[int] | int | None, pad_id: int | None) -> tuple[tuple[int, ...], int]:
    """End tokens (default: the config's eos ids) and the pad id (default: config pad id, else 0)."""
    eos = cfg.eos_ids if eos_ids is None else ((eos_ids,) if isinstance(eos_ids, int) else tuple(eos_ids))
    pad = (cfg.pad_token_id if cfg.pad_token_id is not None else 0) if pad_id is None else pad_id
    return eos, pad


def _check_sampling(temperature: float, top_p: float, rng) -> None:
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"generate: need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if temperature > 0 and rng is None:
        raise ValueError("generate: sampling (temperature > 0) needs an explicit rng key")


def generate(
    model,
    input_ids: jax.Array | None = None,
    *,
    inputs_embeds: jax.Array | None = None,
    attention_mask: jax.Array | None = None,
    max_new_tokens: int,
    eos_ids: Sequence[int] | int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    rng: jax.Array | None = None,
    pad_id: int | None = None,
    bucket: int = 64,
) -> Generated:
    """Generates up to ``max_new_tokens`` tokens after a prompt; returns ``Generated(tokens, lengths)``.

    model: a ``Qwen2`` (anything with ``hidden_states``/``logits``/``init_cache``/``embed``).
    input_ids int32[B, L] or inputs_embeds float[B, L, H] (e.g. Hour-LLaVA's assembled prompt).
    attention_mask bool/int[B, L]: False/0 = padding, any pattern (left padding as HF, or right).
    eos_ids: end tokens (default: the model config's eos ids); a row stops after emitting one.
    temperature 0: greedy; > 0 samples with ``rng`` (a jax key), reproducibly, nucleus ``top_p``.
    pad_id: fills tokens after the end (default: config pad id, else 0).
    bucket: the prompt is padded to a multiple of it so lengths share compiled programs.
    """
    eos, pad_id = _end_and_pad(model.cfg, eos_ids, pad_id)
    _check_sampling(temperature, top_p, rng)
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    ids, embeds, mask = _prepare(input_ids, inputs_embeds, attention_mask, bucket, pad_id)
    graphdef, state = nnx.split(model)
    return _generate_jit(graphdef, state, ids, embeds, mask, None if temperature == 0 else rng, max_new_tokens=int(max_new_tokens),
                         eos_ids=tuple(int(e) for e in eos), temperature=float(temperature), top_p=float(top_p), pad_id=int(pad_id))  # fmt: skip


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len"))
def _prefill_jit(graphdef, state, input_ids, inputs_embeds, mask, *, cache_len):
    return prefill(nnx.merge(graphdef, state), input_ids, inputs_embeds, mask, cache_len)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _step_jit(graphdef, state, token, pos, cache):
    return decode_step(nnx.merge(graphdef, state), token, pos, cache)


_sample_jit = jax.jit(sample_next, static_argnames=("temperature", "top_p"))


def stream(
    model,
    input_ids: jax.Array | None = None,
    *,
    inputs_embeds: jax.Array | None = None,
    attention_mask: jax.Array | None = None,
    max_new_tokens: int,
    eos_ids: Sequence[int] | int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    rng: jax.Array | None = None,
    pad_id: int | None = None,
    bucket: int = 64,
) -> Iterator[np.ndarray]:
    """Like :func:`generate`, but yields each step's tokens int32[B] (pad_id for finished rows) as
    soon as they exist; stops when every row ended or after ``max_new_tokens``. Same tokens as
    ``generate`` for the same arguments."""
    eos, pad_id = _end_and_pad(model.cfg, eos_ids, pad_id)
    _check_sampling(temperature, top_p, rng)
    ids, embeds, mask = _prepare(input_ids, inputs_embeds, attention_mask, bucket, pad_id)
    graphdef, state = nnx.split(model)
    logits, cache, pos0 = _prefill_jit(graphdef, state, ids, embeds, mask, cache_len=mask.shape[1] + max_new_tokens)
    done = np.zeros(mask.shape[0], bool)
    for step in range(max_new_tokens):
        if step:
            logits, cache = _step_jit(graphdef, state, jnp.asarray(tok), pos0 + step - 1, cache)
        key = None if temperature == 0 else jax.random.fold_in(rng, step)
        tok = np.asarray(_sample_jit(logits, key, temperature=float(temperature), top_p=float(top_p)))
        tok = np.where(done, pad_id, tok).astype(np.int32)
        yield tok
        done |= np.isin(tok, eos)
        if done.all():
            return
