"""The model's matmul and the dense layer built on it: an f32 result, and a backward XLA:CPU runs fast.

Two things about XLA:CPU decide how this is written (``benchmarks/bf16_dot.py``,
``benchmarks/profile_llm_step.py``, docs/performance.md):

- It takes its fast bf16 path (AVX512-BF16 / AMX) only for dots whose *result* is f32, and runs a
  bf16-result dot at its f32 rate. :func:`matmul` therefore asks for an f32 result and leaves the
  rounding to the caller, in the forward and in both backward dots (the cotangent is rounded to
  the compute dtype first, so that ``dx`` is a bf16 x bf16 -> f32 dot too). On TPU and GPU the
  matrix units accumulate in f32 anyway.
- Its fast dot kernel takes ``[M, K] x [K, N]`` and ``[M, K] x [N, K]`` operands but not a
  left operand contracted over its first axis, which is what the weight gradient
  ``x^T dy`` (a contraction over the tokens) is. Left to itself XLA gives that dot to its slower
  generic kernel and writes the cotangent ``dy`` transposed for it, in a strided loop fused with
  whatever produced ``dy`` (for the MLP, the SiLU gradient is then computed twice). On CPU the
  backward here writes the input ``x`` transposed instead, once, behind an optimisation barrier
  (so XLA cannot fold the transpose back into the dot), and contracts it with ``dy`` in the fast
  kernel's layout. (The tied head's table gradient ``dy^T x`` transposes ``dy``, as XLA did.) Other platforms get the plain contraction
  (``lax.platform_dependent``).

:class:`Dense` is ``nnx.Linear`` computed through :func:`matmul`: the same parameters and paths
(``kernel``, ``bias``), and in f32 the same forward bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.ad_checkpoint import checkpoint_name


def _dot(x: jax.Array, w: jax.Array, w_contract: int, precision, out_sharding=None) -> jax.Array:
    """``x [..., K]`` contracted with axis ``w_contract`` of the 2-D ``w`` -> float32[..., N]."""
    dims = (((x.ndim - 1,), (w_contract,)), ((), ()))
    return lax.dot_general(x, w, dims, precision=precision, preferred_element_type=jnp.float32, out_sharding=out_sharding)


def _token_contraction(a: jax.Array, b: jax.Array, precision) -> jax.Array:
    """``a float[..., M]``, ``b float[..., N]`` with the same leading (token) axes -> float32[M, N],
    the sum over tokens of the outer products (a weight gradient)."""
    lead = tuple(range(a.ndim - 1))

    def generic(a, b):
        return lax.dot_general(a, b, ((lead, lead), ((), ())), precision=precision, preferred_element_type=jnp.float32)

    def cpu(a, b):
        a_t = lax.optimization_barrier(jnp.moveaxis(a, -1, 0))  # [M, ...], materialised
        dims = ((tuple(range(1, a.ndim)), lead), ((), ()))
        return lax.dot_general(a_t, b, dims, precision=precision, preferred_element_type=jnp.float32)

    return lax.platform_dependent(a, b, cpu=cpu, default=generic)


# The name every matmul result carries (``jax.ad_checkpoint.checkpoint_name``): a remat policy
# cannot see the dot inside the custom VJP, so ``model/remat.py``'s "dots" policies save this name.
MATMUL_RESULT = "matmul_result"


def matmul(x: jax.Array, w: jax.Array, dtype, w_transposed: bool = False, precision=None, out_sharding=None) -> jax.Array:
    """``x float[..., K] @ w float[K, N]`` (``w float[N, K]`` when ``w_transposed``: a tied
    output head) -> float32[..., N], both operands cast to the compute ``dtype`` first.

    Gradients come back in the operands' own dtypes (f32 master weights get an f32 gradient,
    accumulated in f32 also when ``dtype`` is bf16).
    """
    return checkpoint_name(_matmul(x, w, jnp.dtype(dtype), w_transposed, precision, out_sharding), MATMUL_RESULT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _matmul(x, w, dtype, w_transposed, precision, out_sharding):
    return _dot(x.astype(dtype), w.astype(dtype), 1 if w_transposed else 0, precision, out_sharding)


def _matmul_fwd(x, w, dtype, w_transposed, precision, out_sharding):
    return _matmul(x, w, dtype, w_transposed, precision, out_sharding), (x, w)


def _matmul_bwd(dtype, w_transposed, precision, out_sharding, res, ct):
    del out_sharding
    x, w = res
    xc, wc, dy = x.astype(dtype), w.astype(dtype), ct.astype(dtype)
    dx = _dot(dy, wc, 0 if w_transposed else 1, precision).astype(x.dtype)
    dw = _token_contraction(dy, xc, precision) if w_transposed else _token_contraction(xc, dy, precision)
    return dx, dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nnx.Linear):
    """``x float[..., in] -> float[..., out]`` in the compute dtype ``dtype`` (f32 accumulation:
    :func:`matmul`; ``nnx.Linear``'s own ``dot_general`` / ``preferred_element_type`` are unused)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        kernel = self.kernel[...]
        dtype = self.dtype if self.dtype is not None else jnp.result_type(inputs, kernel)
        y = matmul(inputs, kernel, dtype, False, self.precision, out_sharding)
        if self.bias is not None:
            # The bias in the compute dtype, added to the f32 result: nnx.Linear's sum.
            y = y + self.bias[...].astype(dtype)
        return y.astype(dtype)
