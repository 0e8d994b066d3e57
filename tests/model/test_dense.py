"""model/dense.py: ``matmul`` (an f32 result; a custom backward whose weight gradient XLA:CPU
runs in its fast dot layout) and ``Dense``, ``nnx.Linear`` computed through it."""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from hourllava_jax.model.dense import MATMUL_RESULT, Dense, matmul
from hourllava_jax.model.remat import remat_policy


def _pair(dtype):
    kw = dict(dtype=dtype, param_dtype=jnp.float32)
    return Dense(48, 24, rngs=nnx.Rngs(0), **kw), nnx.Linear(48, 24, rngs=nnx.Rngs(0), **kw)


def _with_bias(rng, dense, linear):
    linear.bias.set_value(jnp.asarray(rng.standard_normal(24), jnp.float32))
    dense.bias.set_value(linear.bias[...])


def _grads(module, x):
    """(d loss / d params, d loss / d x) of a loss that weights every output differently."""
    w = jnp.linspace(-1.0, 1.0, 24)

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x).astype(jnp.float32)) * w)

    gm, gx = nnx.grad(loss, argnums=(0, 1))(module, x)
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(gm).items()}, np.asarray(gx)


def test_f32_forward_is_nnx_linear_bitwise(rng):
    dense, linear = _pair(jnp.float32)
    _with_bias(rng, dense, linear)
    x = jnp.asarray(rng.standard_normal((3, 5, 48)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(dense(x)), np.asarray(linear(x)))
    assert set(nnx.to_pure_dict(nnx.state(dense, nnx.Param))) == {"kernel", "bias"}


@pytest.mark.parametrize("shape", [(7, 48), (3, 5, 48)])
def test_f32_gradients_equal_autodiff_of_nnx_linear(rng, shape):
    dense, linear = _pair(jnp.float32)
    _with_bias(rng, dense, linear)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    (gd, gxd), (gl, gxl) = _grads(dense, x), _grads(linear, x)
    np.testing.assert_allclose(gxd, gxl, rtol=1e-6, atol=1e-6)
    for k in ("kernel", "bias"):
        np.testing.assert_allclose(gd[k], gl[k], rtol=1e-6, atol=1e-6)


def test_bf16_asks_for_f32_results_forward_and_backward(rng):
    dense, _ = _pair(jnp.bfloat16)
    dense.bias.set_value(jnp.asarray(rng.standard_normal(24), jnp.float32))
    x = jnp.asarray(rng.standard_normal((4, 48)), jnp.float32)
    y = dense(x)
    assert y.dtype == jnp.bfloat16
    # The f32 value of the bf16-rounded operands, plus the bias, rounded once.
    xb = np.asarray(x.astype(jnp.bfloat16), np.float32)
    kb = np.asarray(dense.kernel[...].astype(jnp.bfloat16), np.float32)
    bb = np.asarray(dense.bias[...].astype(jnp.bfloat16), np.float32)
    want = jnp.asarray(xb @ kb + bb, jnp.float32).astype(jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(want, np.float32), rtol=1e-2, atol=1e-2)
    # Every dot of forward and backward: bf16 operands, an f32 result (XLA:CPU's fast bf16 path).
    graphdef, params = nnx.split(dense)
    loss = lambda p, x: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x).astype(jnp.float32)))  # noqa: E731
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).as_text()
    dots = [line for line in hlo.splitlines() if "stablehlo.dot_general" in line]
    assert len(dots) == 3, dots  # forward, dx, dW
    assert all("bf16>, tensor<" in d and "-> tensor<" in d and d.rstrip().endswith("xf32>") for d in dots), dots
    # The master weights get an f32 gradient, equal to the f32 math of the rounded operands.
    g, _ = _grads(dense, x)
    assert g["kernel"].dtype == np.float32
    ct = np.asarray((jnp.cos(jnp.asarray(y, jnp.float32)) * jnp.linspace(-1.0, 1.0, 24)).astype(jnp.bfloat16), np.float32)
    np.testing.assert_allclose(g["kernel"], xb.T @ ct, rtol=1e-5, atol=1e-5)


def test_tied_head_is_x_times_table_transposed(rng):
    x = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((40, 16)), jnp.float32)
    np.testing.assert_allclose(np.asarray(matmul(x, table, jnp.float32, True)), np.asarray(x @ table.T), rtol=1e-6, atol=1e-5)
    w = jnp.asarray(rng.standard_normal((2, 6, 40)), jnp.float32)
    got = jax.grad(lambda x, t: jnp.sum(jnp.tanh(matmul(x, t, jnp.float32, True)) * w), argnums=(0, 1))(x, table)
    want = jax.grad(lambda x, t: jnp.sum(jnp.tanh(x @ t.T) * w), argnums=(0, 1))(x, table)
    for a, b in zip(got, want, strict=True):  # sums of ~10 terms of size ~1, in another order
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _weight_grad_hlo(platform: str) -> str:
    x, w = jnp.ones((2, 8, 16)), jnp.ones((16, 32))
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(matmul(x, w, jnp.float32))), argnums=1))
    return jax.export.export(f, platforms=[platform])(x, w).mlir_module()


def test_weight_gradient_layout_is_cpu_only():
    """On CPU the input is transposed behind a barrier (the fast dot's layout); other platforms
    get the plain contraction over the tokens."""
    assert "optimization_barrier" in _weight_grad_hlo("cpu")
    assert "optimization_barrier" not in _weight_grad_hlo("tpu")


def test_dots_saveable_keeps_the_matmul_results():
    """A remat policy cannot see the dot inside the custom VJP; the named result is saved."""
    x, w1, w2 = jnp.ones((4, 8)), jnp.ones((8, 16)), jnp.ones((16, 8))

    def f(x, w1, w2):
        return jnp.sum(jnp.sin(matmul(jnp.sin(matmul(x, w1, jnp.float32)), w2, jnp.float32)))

    def named(policy):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_saved_residuals(jax.checkpoint(f, policy=remat_policy(policy)), x, w1, w2)
        return [line for line in out.getvalue().splitlines() if f"named '{MATMUL_RESULT}'" in line]

    assert len(named("dots_saveable")) == len(named("dots_with_no_batch_dims_saveable")) == 2
    assert named("full") == []
