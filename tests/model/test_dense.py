"""model/dense.py: ``Dense`` is ``nnx.Linear`` with an f32 matmul result rounded once to the
compute dtype (the dot XLA:CPU runs on its fast bf16 path)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.model.dense import Dense


def _pair(dtype):
    kw = dict(dtype=dtype, param_dtype=jnp.float32)
    return Dense(48, 24, rngs=nnx.Rngs(0), **kw), nnx.Linear(48, 24, rngs=nnx.Rngs(0), **kw)


def test_f32_is_nnx_linear_bitwise(rng):
    dense, linear = _pair(jnp.float32)
    linear.bias.set_value(jnp.asarray(rng.standard_normal(24), jnp.float32))
    dense.bias.set_value(linear.bias[...])
    x = jnp.asarray(rng.standard_normal((3, 5, 48)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(dense(x)), np.asarray(linear(x)))
    assert set(nnx.to_pure_dict(nnx.state(dense, nnx.Param))) == {"kernel", "bias"}


def test_bf16_asks_for_an_f32_result_and_rounds_once(rng):
    dense, _ = _pair(jnp.bfloat16)
    dense.bias.set_value(jnp.asarray(rng.standard_normal(24), jnp.float32))
    x = jnp.asarray(rng.standard_normal((4, 48)), jnp.float32)
    y = dense(x)
    assert y.dtype == jnp.bfloat16
    dots = [e for e in jax.make_jaxpr(dense)(x).eqns if e.primitive.name == "dot_general"]
    assert [e.params["preferred_element_type"] for e in dots] == [jnp.float32]
    # The f32 value of the bf16-rounded operands, plus the bias, rounded once.
    xb = np.asarray(x.astype(jnp.bfloat16), np.float32)
    kb = np.asarray(dense.kernel[...].astype(jnp.bfloat16), np.float32)
    bb = np.asarray(dense.bias[...].astype(jnp.bfloat16), np.float32)
    want = jnp.asarray(xb @ kb + bb, jnp.float32).astype(jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(want, np.float32), rtol=1e-2, atol=1e-2)
    # Gradients flow to the f32 parameters.
    g = nnx.grad(lambda m: jnp.sum(m(x).astype(jnp.float32)))(dense)
    assert g["kernel"][...].dtype == jnp.float32 and float(jnp.abs(g["kernel"][...]).sum()) > 0
