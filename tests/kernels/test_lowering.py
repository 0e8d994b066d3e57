"""The Pallas kernels lower for real accelerators from this CPU machine (jax.export).

Hour-LLaVA-3B MemAug cross-attention shapes (design §1.3: 16 heads, 2 kv heads, head_dim 128) and a
causal LLM case, forward and gradient, serialised. Lowering checks Mosaic's block-shape rules
and Triton's power-of-two shapes; the Mosaic/Triton compile itself is not run here.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import pytest
from jax import export

from hourllava_jax.kernels import attention

B, LQ, LK, H, K, D = 1, 256, 1024, 16, 2, 128
TRITON = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
PLATFORM = {"pallas_tpu": ("tpu", "tpu_custom_call"), "pallas_gpu": ("cuda", "__gpu$xla.gpu.triton")}


def _target(platform):
    """Newer JAX (0.12) asks the Triton lowering for the target GPU's compute capability, which a
    CPU-only machine has no device to answer: name an abstract NVIDIA GPU (older JAX ignores it)."""
    if platform != "cuda":
        return contextlib.nullcontext()
    gpu = jax.sharding.AbstractDevice(device_kind="NVIDIA H100", num_cores=None, platform="gpu")
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=gpu))


def _export(fn, platform, *avals):
    with _target(platform):
        exp = export.export(jax.jit(fn), platforms=[platform], disabled_checks=TRITON)(*avals)
    blob = exp.serialize()
    assert export.deserialize(blob).platforms == (platform,)
    return exp.mlir_module()


@pytest.mark.parametrize("impl", ["pallas_tpu", "pallas_gpu"])
@pytest.mark.parametrize("causal", [False, True], ids=["memaug_cross", "llm_causal"])
def test_export_forward_and_gradient(impl, causal):
    platform, custom_call = PLATFORM[impl]
    lq, lk = (LQ, LK) if not causal else (LK, LK)
    avals = (
        jax.ShapeDtypeStruct((B, lq, H, D), jnp.bfloat16),
        jax.ShapeDtypeStruct((B, lk, K, D), jnp.bfloat16),
        jax.ShapeDtypeStruct((B, lk, K, D), jnp.bfloat16),
        jax.ShapeDtypeStruct((B, lk), jnp.bool_),
    )

    def fwd(q, k, v, m):
        return attention(q, k, v, causal=causal, kv_mask=m, impl=impl, interpret=False)

    def grad(q, k, v, m):
        return jax.grad(lambda q, k, v: fwd(q, k, v, m).astype(jnp.float32).sum(), (0, 1, 2))(q, k, v)

    fwd_text = _export(fwd, platform, *avals)
    grad_text = _export(grad, platform, *avals)
    assert fwd_text.count(custom_call) >= 1
    assert grad_text.count(custom_call) >= 3  # forward (residuals) + dQ + dK/dV kernels


@pytest.mark.parametrize("impl", ["pallas_tpu", "pallas_gpu"])
def test_export_siglip_head_dim(impl):
    """SigLIP: head_dim 72 (TPU: block = full dim; GPU: zero-padded to 128), 729 tokens."""
    platform, custom_call = PLATFORM[impl]
    x = jax.ShapeDtypeStruct((1, 729, 16, 72), jnp.float32)
    text = _export(lambda q, k, v: attention(q, k, v, impl=impl, interpret=False), platform, x, x, x)
    assert custom_call in text


@pytest.mark.parametrize("impl", ["pallas_tpu", "pallas_gpu"])
def test_export_gradient_7b_group_of_seven(impl):
    """Hour-LLaVA-7B heads (28 q / 4 kv: G = 7), ragged lengths, causal with per-row offsets."""
    platform, custom_call = PLATFORM[impl]
    q = jax.ShapeDtypeStruct((2, 320, 28, D), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 1000, 4, D), jnp.bfloat16)

    def grad(q, k, v):
        loss = lambda q, k, v: attention(q, k, v, causal=True, q_offset=jnp.array([680, 0]), impl=impl, interpret=False)
        return jax.grad(lambda q, k, v: loss(q, k, v).astype(jnp.float32).sum(), (0, 1, 2))(q, k, v)

    assert _export(grad, platform, q, kv, kv).count(custom_call) >= 3
