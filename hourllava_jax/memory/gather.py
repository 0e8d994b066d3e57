"""The memory stage inside the graph: gathers the memory repository and the decayed tokens from
the projected visual tokens, following the host plan's index maps
(:mod:`hourllava_jax.memory.layout`; design §2, §1.4). Static shapes throughout; padding slots
come back zeroed and marked invalid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hourllava_jax.memory.layout import NEWLINE, PAD


def gather_memory(projected: jax.Array, memory_src: jax.Array, newline: jax.Array,
                  memory_w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """projected float[B, U·P, H], memory_src int32[B, M], newline float[H]
    -> (memory float[B, M, H], valid bool[B, M]).

    With ``memory_w`` float32[B, M, T] (anyres images, design §1.4), ``memory_src`` is
    int32[B, M, T] and a slot is ``sum_t w_t * projected[src_t]`` over taps with src_t >= 0
    (the bilinear downscale after the projector); tap 0 carries NEWLINE / PAD as usual.
    """
    if memory_w is None:  # videos: one gather, the M = 234k path
        head = memory_src
        tok = jnp.take_along_axis(projected, jnp.clip(memory_src, 0)[..., None], axis=1)
    else:
        head = memory_src[..., 0]
        tok = jnp.zeros(memory_src.shape[:2] + projected.shape[-1:], jnp.float32)
        for t in range(memory_src.shape[-1]):  # accumulate tap by tap: never a [B, M, T, H] gather
            src = memory_src[..., t]
            x = jnp.take_along_axis(projected, jnp.clip(src, 0)[..., None], axis=1).astype(jnp.float32)
            tok = tok + jnp.where(src >= 0, memory_w[..., t], 0.0)[..., None].astype(jnp.float32) * x
        tok = tok.astype(projected.dtype)
    mem = jnp.where((head == NEWLINE)[..., None], newline.astype(tok.dtype), tok)
    valid = head != PAD
    return jnp.where(valid[..., None], mem, 0), valid


def gather_decayed(memory: jax.Array, memory_pos: jax.Array, decayed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """memory float[B, M, H], memory_pos int32[B, M], decayed int32[B, K, N] (memory slots,
    -1 = padding) -> (tokens float[B, K, N, H], positions int32[B, K, N], valid bool[B, K, N]).
    A decayed token is its memory slot, RoPE id included (design §2)."""
    b = memory.shape[0]
    k, n = decayed.shape[1:]
    flat = jnp.clip(decayed, 0).reshape(b, k * n)
    tokens = jnp.take_along_axis(memory, flat[..., None], axis=1).reshape(b, k, n, -1)
    positions = jnp.take_along_axis(memory_pos, flat, axis=1).reshape(b, k, n)
    return tokens, positions, decayed >= 0


__all__ = ["gather_decayed", "gather_memory"]
