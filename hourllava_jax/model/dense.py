"""The dense layer every module of the model uses: ``nnx.Linear`` with an f32 matmul result.

``nnx.Linear(dtype=bfloat16)`` asks XLA for a bf16-result dot. On TPU and GPU the matmul
units accumulate in f32 either way; XLA:CPU, though, takes its fast bf16 path (AVX512-BF16 /
AMX) only for dots whose result is f32, and runs a bf16-result dot at its f32 rate
(``benchmarks/bf16_dot.py``, docs/performance.md). :class:`Dense` therefore requests an f32
result, adds the bias in f32 and rounds once to the compute dtype: the same parameters, the
same parameter paths (``kernel``, ``bias``) and, in f32, the same computation as ``nnx.Linear``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Dense(nnx.Linear):
    """``x float[..., in] -> float[..., out]`` in the compute dtype ``dtype`` (f32 accumulation)."""

    def __init__(self, in_features: int, out_features: int, **kwargs):
        super().__init__(in_features, out_features, preferred_element_type=jnp.float32, **kwargs)

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        y = super().__call__(inputs, out_sharding=out_sharding)
        return y if self.dtype is None else y.astype(self.dtype)
