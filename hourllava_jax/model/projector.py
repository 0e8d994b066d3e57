"""The ``mlp2x_gelu`` projector from SigLIP features to the LLM width (design §1.2).

Linear(in, H) -> exact (erf) GELU -> Linear(H, H), both with bias. The attributes ``linear_0`` and
``linear_2`` are the indices of the release's ``nn.Sequential`` (``model.mm_projector.{0,2}.*``;
index 1 is the parameter-free GELU; rules in :mod:`hourllava_jax.convert.projector_keys`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hourllava_jax.model.dense import Dense
from hourllava_jax.parallel.axes import EMBED, MLP, param_init


class Projector(nnx.Module):
    """features float[..., in_dim] -> float[..., hidden]."""

    def __init__(self, in_dim: int, hidden: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        def linear(din: int, dout: int, axes: tuple[str, str]) -> Dense:
            return Dense(
                din, dout, dtype=dtype, param_dtype=param_dtype,
                kernel_init=param_init(nnx.initializers.lecun_normal(), axes),
                bias_init=param_init(nnx.initializers.zeros_init(), (axes[1],)),
                rngs=rngs,
            )  # fmt: skip

        # Vision width and LLM width are both "embed" axes; one tensor cannot name a mesh axis
        # twice, so the projector's hidden side is "mlp" (shards like an LLM feed-forward).
        self.linear_0 = linear(in_dim, hidden, (EMBED, MLP))
        self.linear_2 = linear(hidden, hidden, (MLP, EMBED))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.gelu(self.linear_0(x), approximate=False))
