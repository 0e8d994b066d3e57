"""Shared case builder and parity check for the attention kernel tests (imported via sys.path).

A case is (batch, Lq, Lk, heads, kv_heads, head_dim, causal, mask kind, dtype); every
implementation is compared with ``reference`` in float32 on the same (possibly bf16-rounded)
inputs, forward values and the gradients of a random projection of the output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.kernels import attention

# Tolerances per input dtype: f32 kernels agree with the reference to ~1e-6 (measured); bf16
# kernels round p and dS to bf16 before their matmuls (as flash kernels do), ~3 significant digits.
TOL = {
    jnp.float32: dict(out=2e-5, grad=1e-4),
    jnp.bfloat16: dict(out=3e-2, grad=6e-2),
}


@dataclasses.dataclass(frozen=True)
class Case:
    b: int
    lq: int
    lk: int
    h: int
    kh: int
    d: int = 16
    causal: bool = False
    mask: str = "none"  # none | pad (row 1 fully masked) | segments | offset (q_offset int32[B])
    dtype: type = jnp.float32

    def __str__(self) -> str:
        kind = "causal" if self.causal else "cross"
        return f"{kind}-q{self.lq}k{self.lk}-h{self.h}kv{self.kh}-{self.mask}-{jnp.dtype(self.dtype).name}"


def make_inputs(case: Case, seed: int = 0):
    """(q, k, v, mask kwargs, dout) for a case; masks are chosen so some rows see nothing."""
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.standard_normal((case.b, case.lq, case.h, case.d)), case.dtype)
    k = jnp.asarray(r.standard_normal((case.b, case.lk, case.kh, case.d)), case.dtype)
    v = jnp.asarray(r.standard_normal((case.b, case.lk, case.kh, case.d)), case.dtype)
    dout = jnp.asarray(r.standard_normal((case.b, case.lq, case.h, case.d)), jnp.float32)
    kw = {}
    if case.mask == "pad":
        lengths = np.array([case.lk - case.lk // 3] + [0] * (case.b - 1))  # batch row 1: no keys at all
        kw["kv_mask"] = jnp.arange(case.lk)[None, :] < jnp.asarray(lengths)[:, None]
    elif case.mask == "segments":
        kw["q_segment_ids"] = jnp.asarray(np.sort(r.integers(0, 3, (case.b, case.lq)), axis=1), jnp.int32)
        kw["kv_segment_ids"] = jnp.asarray(np.sort(r.integers(1, 4, (case.b, case.lk)), axis=1), jnp.int32)
    elif case.mask == "offset":
        # Row 0 sees a prefix cache of 5 extra keys; row 1 starts 3 before key 0 (first rows empty).
        kw["q_offset"] = jnp.asarray([case.lk - case.lq, -3][: case.b], jnp.int32)
    return q, k, v, kw, dout


def run(case: Case, impl: str, **extra):
    """Jitted forward output and (dq, dk, dv) of sum(out * dout) for one implementation."""
    q, k, v, kw, dout = make_inputs(case)
    if impl == "reference":  # the reference sees the same values, in float32
        q, k, v = (x.astype(jnp.float32) for x in (q, k, v))

    def f(q, k, v):
        return attention(q, k, v, causal=case.causal, impl=impl, **kw, **extra)

    def loss(q, k, v):
        return jnp.sum(f(q, k, v).astype(jnp.float32) * dout)

    out = jax.jit(f)(q, k, v)
    grads = jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)
    return out, grads


def assert_matches_reference(case: Case, impl: str, **extra) -> None:
    out, grads = run(case, impl, **extra)
    ref_out, ref_grads = run(case, "reference")
    tol = TOL[case.dtype]
    assert out.shape == ref_out.shape and out.dtype == case.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out), atol=tol["out"], rtol=tol["out"], err_msg=f"{impl} out {case}")
    for name, g, rg in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.dtype == case.dtype, name
        scale = max(1.0, float(jnp.abs(rg).max()))  # grads grow with the group size: compare relative to their range
        np.testing.assert_allclose(np.asarray(g, np.float32) / scale, np.asarray(rg) / scale, atol=tol["grad"], err_msg=f"{impl} {name} {case}")
    if case.mask == "pad":  # batch row 1 sees no key: zero output and zero gradients
        assert not np.asarray(out[1], np.float32).any() and not np.asarray(grads[0][1], np.float32).any()
        assert not np.asarray(grads[1][1], np.float32).any() and not np.asarray(grads[2][1], np.float32).any()
