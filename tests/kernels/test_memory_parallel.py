"""Memory-parallel cross-attention on 8 virtual devices equals the unsharded computation."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.kernels import AttentionInputError, BlockSizes, attention
from hourllava_jax.kernels.memory_parallel import combine_partials, memory_parallel_attention

B, LQ, LK, H, K, D = 2, 12, 60, 4, 2, 16  # 60 keys over 8 devices: padded to 64 internally


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (virtual) devices")
    return jax.make_mesh((8,), ("memory",), axis_types=(jax.sharding.AxisType.Auto,))


def _inputs(seed=0):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.standard_normal((B, LQ, H, D)), jnp.float32)
    k = jnp.asarray(r.standard_normal((B, LK, K, D)), jnp.float32)
    v = jnp.asarray(r.standard_normal((B, LK, K, D)), jnp.float32)
    dout = jnp.asarray(r.standard_normal((B, LQ, H, D)), jnp.float32)
    return q, k, v, dout


MASKS = {
    # Batch row 1 has no valid key at all; row 0's valid keys live on the first 5 shards only.
    "cross_pad": dict(causal=False, kv_mask=jnp.arange(LK)[None, :] < jnp.asarray([[37], [0]])),
    # Global causal positions across shards, with per-row offsets (row 1's first queries see nothing).
    "causal_offset": dict(causal=True, q_offset=jnp.asarray([40, -3], jnp.int32)),
    "segments": dict(causal=False, q_segment_ids=(jnp.arange(LQ)[None] // 5).repeat(B, 0), kv_segment_ids=(jnp.arange(LK)[None] // 25).repeat(B, 0)),
}


def _value_and_grads(fn, q, k, v, dout):
    out = jax.jit(fn)(q, k, v)
    grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * dout), (0, 1, 2)))(q, k, v)
    return out, grads


@pytest.mark.parametrize("name", list(MASKS))
def test_memory_parallel_equals_unsharded(mesh, name):
    q, k, v, dout = _inputs()
    kw = MASKS[name]
    blocks = BlockSizes(block_q=8, block_k=4)  # several chunks per 8-key shard
    sharded = _value_and_grads(lambda q, k, v: attention(q, k, v, mesh=mesh, impl="chunked", block_sizes=blocks, **kw), q, k, v, dout)
    single = _value_and_grads(lambda q, k, v: attention(q, k, v, impl="chunked", **kw), q, k, v, dout)
    reference = _value_and_grads(lambda q, k, v: attention(q, k, v, impl="reference", **kw), q, k, v, dout)
    for got in (sharded, single):
        np.testing.assert_allclose(got[0], reference[0], atol=1e-5, rtol=1e-5)
        for g, rg in zip(got[1], reference[1]):
            np.testing.assert_allclose(g, rg, atol=1e-5, rtol=1e-5)
    if name == "cross_pad":
        assert not np.asarray(sharded[0][1]).any() and not np.asarray(sharded[1][0][1]).any()


def test_memory_parallel_keys_are_sharded(mesh):
    """dK/dV come back sharded on the memory axis (no device holds the full memory gradient)."""
    q, k, v, _ = _inputs()
    k, v = k[:, :56], v[:, :56]  # 7 keys per device, no padding
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "memory"))
    k, v = jax.device_put(k, spec), jax.device_put(v, spec)
    dk = jax.jit(jax.grad(lambda k: memory_parallel_attention(q, k, v, mesh=mesh, impl="chunked").sum()))(k)
    assert dk.sharding.is_equivalent_to(spec, dk.ndim)


def test_combine_partials_is_exact_softmax(mesh):
    """Two halves' (o, lse) combine to the full softmax, including rows empty on one shard."""
    q, k, v, _ = _inputs()
    kv_mask = jnp.arange(LK)[None, :] < jnp.asarray([[20], [60]])  # row 0: second half empty
    full = attention(q, k, v, kv_mask=kv_mask, impl="reference")
    from hourllava_jax.kernels.chunked import chunked_fwd
    from hourllava_jax.kernels.masks import MaskSpec, normalize_mask

    off, q_ids, kv_ids = normalize_mask(MaskSpec(kv_mask=kv_mask), B, LQ, LK)
    halves = [chunked_fwd(q, k[:, s], v[:, s], off, q_ids, kv_ids[:, s], scale=D**-0.5, causal=False, block_q=8, block_k=8) for s in (slice(0, 30), slice(30, 60))]
    o_s = jnp.stack([h[0] for h in halves])
    lse_s = jnp.stack([h[1] for h in halves])
    o, _ = jax.vmap(lambda o, l: combine_partials(o, l, "s"), axis_name="s")(o_s, lse_s)
    np.testing.assert_allclose(o[0], full, atol=1e-5, rtol=1e-5)


def test_mesh_without_memory_axis_is_rejected(mesh):
    q, k, v, _ = _inputs()
    other = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with pytest.raises(AttentionInputError, match="no 'memory' axis"):
        memory_parallel_attention(q, k, v, mesh=other)


def test_memory_and_batch_axes_together():
    """A (data=2, memory=4) mesh: batch split on data, keys on memory; equals the reference."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 (virtual) devices")
    mesh2d = jax.make_mesh((2, 4), ("data", "memory"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    q, k, v, dout = _inputs(1)
    kw = MASKS["cross_pad"]
    got = _value_and_grads(lambda q, k, v: attention(q, k, v, mesh=mesh2d, batch_axis="data", impl="chunked", **kw), q, k, v, dout)
    want = _value_and_grads(lambda q, k, v: attention(q, k, v, impl="reference", **kw), q, k, v, dout)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
    for g, rg in zip(got[1], want[1]):
        np.testing.assert_allclose(g, rg, atol=1e-5, rtol=1e-5)
    with pytest.raises(AttentionInputError, match="batch_axis"):
        memory_parallel_attention(q[:1], k[:1], v[:1], mesh=mesh2d, batch_axis="data")


@pytest.mark.parametrize("impl, platform, call", [("pallas_tpu", "tpu", "tpu_custom_call"), ("pallas_gpu", "cuda", "__gpu$xla.gpu.triton")])
def test_memory_parallel_pallas_exports_for_8_devices(mesh, impl, platform, call):
    """The Pallas kernels inside the shard_map lower for an 8-device accelerator mesh (3B MemAug heads)."""
    from jax import export
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    target = contextlib.nullcontext()
    if platform == "cuda":  # newer JAX asks Triton for the target GPU: an abstract one (older JAX ignores it)
        gpu = jax.sharding.AbstractDevice(device_kind="NVIDIA H100", num_cores=None, platform="gpu")
        mesh = jax.sharding.AbstractMesh((8,), ("memory",), abstract_device=gpu, axis_types=(jax.sharding.AxisType.Auto,))
        target = jax.sharding.use_abstract_mesh(mesh)
    q = jax.ShapeDtypeStruct((1, 256, 16, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
    kv = jax.ShapeDtypeStruct((1, 8192, 2, 128), jnp.bfloat16, sharding=NamedSharding(mesh, P(None, "memory")))

    def grad(q, k, v):
        return jax.grad(lambda q, k, v: attention(q, k, v, mesh=mesh, impl=impl, interpret=False).astype(jnp.float32).sum(), (0, 1, 2))(q, k, v)

    with target:
        exp = export.export(jax.jit(grad), platforms=[platform],
                            disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(q, kv, kv)
    text = exp.mlir_module()
    assert exp.nr_devices == 8
    assert text.count(call) >= 3  # forward + dQ + dK/dV kernels
    assert text.count("all_reduce") >= 4  # pmax + 2 psum (forward) + dQ psum (backward)


@pytest.mark.parametrize("impl, blocks", [("pallas_gpu", BlockSizes(16, 16)), pytest.param("pallas_tpu", BlockSizes(8, 128), marks=pytest.mark.slow)])
def test_memory_parallel_with_pallas_kernels(mesh, impl, blocks):
    """Each shard runs the Pallas kernels (interpret mode) with shard-shifted causal offsets."""
    q, k, v, dout = _inputs(2)
    kw = MASKS["causal_offset"]
    got = _value_and_grads(lambda q, k, v: attention(q, k, v, mesh=mesh, impl=impl, block_sizes=blocks, interpret=True, **kw), q, k, v, dout)
    want = _value_and_grads(lambda q, k, v: attention(q, k, v, impl="reference", **kw), q, k, v, dout)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
    for g, rg in zip(got[1], want[1]):
        np.testing.assert_allclose(g, rg, atol=1e-5, rtol=1e-5)
