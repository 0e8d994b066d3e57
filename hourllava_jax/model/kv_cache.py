"""Static-shape KV cache for Qwen2 decoding: preallocated per layer, written with dynamic_update_slice.

One write index for the whole batch plus a per-slot validity mask. Padding anywhere in the prompt
(left, right or in between) is a False slot in ``mask``; decode steps of every row are written at
the same slot ``index``, so a right-padded row simply has dead slots between its prompt and its
answer. RoPE positions are not the slot index: the caller passes them (generate.py uses the count
of valid tokens before each one, as HF ``generate`` does). A pytree, so it is a ``while_loop``
carry and a jit argument; its shapes never change during generation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """keys/values: one float[B, S, K, D] per layer; mask: bool[B, S] (valid slots); index: int32[]
    (next slot to write; slots >= index are unused)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    mask: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, *, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
        """An empty cache of ``max_len`` slots (prompt bucket + max_new_tokens)."""
        shape = (batch, max_len, num_kv_heads, head_dim)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
        return cls(keys=zeros, values=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
                   mask=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))  # fmt: skip

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    def with_mask(self, step_mask: jax.Array) -> jax.Array:
        """bool[B, L] validity of the tokens being written -> bool[B, S] mask including them."""
        return jax.lax.dynamic_update_slice(self.mask, step_mask.astype(bool), (0, self.index))

    def write(self, layer: int, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        """k, v float[B, L, K, D] at slots [index, index + L) of ``layer`` -> the full float[B, S, K, D] pair."""
        start = (0, self.index, 0, 0)
        return (jax.lax.dynamic_update_slice(self.keys[layer], k.astype(self.keys[layer].dtype), start),
                jax.lax.dynamic_update_slice(self.values[layer], v.astype(self.values[layer].dtype), start))  # fmt: skip

    def advanced(self, keys: tuple[jax.Array, ...], values: tuple[jax.Array, ...], mask: jax.Array, length: int) -> KVCache:
        """The cache after writing ``length`` tokens into every layer."""
        return KVCache(keys=tuple(keys), values=tuple(values), mask=mask, index=self.index + length)
