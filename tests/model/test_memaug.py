"""MemAug (design §1.3): parity with a PyTorch reference, padding invariance, names, param counts."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config import MemAugConfig, load_model_config
from hourllava_jax.convert.mapping import TensorRule
from hourllava_jax.convert.memaug_keys import memaug_hf_rules
from hourllava_jax.memory.reference import query_positions
from hourllava_jax.model.memaug import MemAug, MemAugDims

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the reference importable


def _dims(hidden, heads, kv, depth=2, theta=1e6):
    return MemAugDims(hidden, heads, kv, theta, MemAugConfig(depth=depth))


def _state_get(model, path):
    node = nnx.state(model)
    for p in path:
        node = node[p]
    return node


def _load_torch(model, ref, torch):
    """Copies the JAX parameters into the torch reference through memaug_hf_rules (tests the rules)."""
    sd = {}
    for rule in memaug_hf_rules(model.dims, prefix=""):
        key, path, perm = rule.hf_key, rule.path, rule.perm
        a = np.asarray(_state_get(model, path).get_value())
        sd[key] = torch.from_numpy(np.array(a.transpose(perm) if perm else a))
    ref.load_state_dict(sd, strict=True)
    return ref


def _random_params(model, seed=1):
    """Non-trivial LayerNorm params and biases so the parity test sees every term."""
    state = nnx.state(model, nnx.Param)
    leaves, tdef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [l + 0.05 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tdef, new))


@pytest.mark.parametrize("hidden,heads,kv", [(32, 4, 2), (32, 4, 4), (56, 7, 1), (256, 2, 1)])  # head_dim 8, 8, 8, 128
def test_parity_with_torch_reference(hidden, heads, kv, torch_fp32):
    torch = torch_fp32
    from memaug_torch_ref import MemAugRef

    dims = _dims(hidden, heads, kv)
    model = MemAug(dims, rngs=nnx.Rngs(0))
    _random_params(model)
    ref = _load_torch(model, MemAugRef(hidden, heads, kv, 1e6, 2), torch)
    rng = np.random.default_rng(0)
    lq, lk = 7, 11
    x = rng.standard_normal((lq, hidden)).astype(np.float32)
    mem = rng.standard_normal((lk, hidden)).astype(np.float32)
    # Non-contiguous, large positions (memory ids of decayed tokens sit far from 0).
    pq = np.sort(rng.choice(5000, lq, replace=False)).astype(np.int32)
    pk = np.arange(lk, dtype=np.int32) * 37
    out = model(jnp.asarray(x)[None], jnp.asarray(mem)[None], jnp.asarray(pq)[None], jnp.asarray(pk)[None])[0]
    with torch.no_grad():
        want = ref(torch.from_numpy(x), torch.from_numpy(mem), torch.from_numpy(pq).long(), torch.from_numpy(pk).long()).numpy()
    err = np.max(np.abs(np.asarray(out) - want))
    print(f"max abs err {err:.2e}")
    assert err <= 1e-4, err


def test_padding_invariance():
    dims = _dims(32, 4, 2)
    model = MemAug(dims, rngs=nnx.Rngs(0))
    _random_params(model)
    rng = np.random.default_rng(1)
    lens_q, lens_k = (5, 9), (12, 7)
    lq, lk = max(lens_q), max(lens_k)
    xs = [rng.standard_normal((n, 32)).astype(np.float32) for n in lens_q]
    ms = [rng.standard_normal((n, 32)).astype(np.float32) for n in lens_k]
    alone = [model(jnp.asarray(x)[None], jnp.asarray(m)[None], jnp.arange(len(x))[None] + 3, jnp.arange(len(m))[None])[0]
             for x, m in zip(xs, ms)]
    # Garbage in the padded slots must not leak into valid rows.
    xb = rng.standard_normal((2, lq, 32)).astype(np.float32) * 100
    mb = rng.standard_normal((2, lk, 32)).astype(np.float32) * 100
    qm, km = np.zeros((2, lq), bool), np.zeros((2, lk), bool)
    pq, pk = np.zeros((2, lq), np.int32), np.zeros((2, lk), np.int32)
    for i in range(2):
        xb[i, : lens_q[i]], mb[i, : lens_k[i]] = xs[i], ms[i]
        qm[i, : lens_q[i]], km[i, : lens_k[i]] = True, True
        pq[i, : lens_q[i]], pk[i, : lens_k[i]] = np.arange(lens_q[i]) + 3, np.arange(lens_k[i])
    out = model(jnp.asarray(xb), jnp.asarray(mb), jnp.asarray(pq), jnp.asarray(pk), jnp.asarray(qm), jnp.asarray(km))
    for i in range(2):
        np.testing.assert_allclose(out[i, : lens_q[i]], alone[i], atol=1e-5)
        assert np.all(np.asarray(out[i, lens_q[i]:]) == 0)


def test_rules_cover_every_param_once():
    dims = _dims(32, 4, 2, depth=3)
    model = MemAug(dims, rngs=nnx.Rngs(0))
    paths = {tuple(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    rules = memaug_hf_rules(dims)
    assert {r.path for r in rules} == paths and len(rules) == len(paths)
    assert len({r.hf_key for r in rules}) == len(rules)
    assert TensorRule("model.vision_resampler.layers.2.mlp.2.weight", ("layers", 2, "mlp", "fc2", "kernel"), (1, 0)) in rules
    for r in rules:
        assert (r.perm == (1, 0)) == (r.path[-1] == "kernel") and r.hf_key.startswith("model.vision_resampler.layers.")


def test_init_distribution_and_axes():
    model = MemAug(_dims(64, 4, 2, depth=1), rngs=nnx.Rngs(0))
    blk = model.layers[0]
    w = np.asarray(blk.mlp.fc0.kernel.get_value())
    assert abs(w.std() - 0.02) < 0.002 and np.all(np.asarray(blk.mlp.fc0.bias.get_value()) == 0)
    assert np.all(np.asarray(blk.norm1.scale.get_value()) == 1) and np.all(np.asarray(blk.norm1.bias.get_value()) == 0)
    assert blk.cross_attn.Wq.kernel.get_metadata()["out_sharding"] == ("embed", "heads")
    assert blk.self_attn.Wqkv.kernel.get_value().shape == (64, 64 + 2 * 2 * 16)


@pytest.mark.parametrize("preset,expected", [("hourllava_3b", 209_842_176), ("hourllava_7b", 646_146_048)])
def test_param_count_matches_spec(preset, expected):
    cfg = load_model_config(preset)
    abstract = nnx.eval_shape(lambda: MemAug(cfg, rngs=nnx.Rngs(0)))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert n == expected


def test_bf16_compute_with_fp32_params():
    dims = _dims(32, 4, 2)
    m32 = MemAug(dims, rngs=nnx.Rngs(0))
    m16 = MemAug(dims, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert m16.layers[0].mlp.fc0.kernel.get_value().dtype == jnp.float32
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((1, 6, 32)), jnp.float32)
    mem = jnp.asarray(rng.standard_normal((1, 10, 32)), jnp.float32)
    pq, pk = jnp.arange(6)[None], jnp.arange(10)[None]
    o16, o32 = m16(x, mem, pq, pk), m32(x, mem, pq, pk)
    assert o16.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(o16.astype(jnp.float32) - o32))) < 0.1  # post-norm: O(1) outputs


def test_bad_inputs_raise():
    model = MemAug(_dims(32, 4, 2, depth=1), rngs=nnx.Rngs(0))
    x, mem = jnp.zeros((1, 3, 32)), jnp.zeros((1, 4, 32))
    with pytest.raises(ValueError, match="positions"):
        model(x, mem, jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="expected x"):
        model(jnp.zeros((1, 3, 16)), mem, jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="kv_heads"):
        MemAug(_dims(32, 4, 3), rngs=nnx.Rngs(0))


def test_query_positions_by_hand():
    # 8 prefix tokens, a video whose decayed ids are [0, 2, 64, 455], then 3 text tokens.
    pos, vis = query_positions([8, 3], [np.array([0, 2, 64, 455])])
    np.testing.assert_array_equal(pos, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 72, 463, 464, 465, 466])
    np.testing.assert_array_equal(vis, [8, 9, 10, 11])
    # n0 = 8: each decayed token sits 8 ahead of its memory id.
    np.testing.assert_array_equal(pos[vis] - np.array([0, 2, 64, 455]), 8)
    # Two images, an empty middle text segment: the second block continues from the first's max.
    pos, vis = query_positions([2, 0, 1], [np.array([1, 4]), np.array([5, 8])])
    np.testing.assert_array_equal(pos, [0, 1, 3, 6, 12, 15, 16])
    np.testing.assert_array_equal(vis, [2, 3, 4, 5])
    with pytest.raises(ValueError, match="n\\+1"):
        query_positions([1], [np.array([0])])


def test_memory_parallel_cross_attention_matches():
    """A mesh with a ``memory`` axis splits the memory over devices; the result is unchanged."""
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("memory",), axis_types=(jax.sharding.AxisType.Auto,))
    dims = _dims(32, 4, 2)
    plain = MemAug(dims, rngs=nnx.Rngs(0))
    split = MemAug(dims, rngs=nnx.Rngs(0), mesh=mesh)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 5, 32)), jnp.float32)
    mem = jnp.asarray(rng.standard_normal((2, 12, 32)), jnp.float32)
    km = jnp.asarray(np.arange(12)[None] < np.array([[12], [9]]))
    pq, pk = jnp.tile(jnp.arange(5)[None], (2, 1)), jnp.tile(jnp.arange(12)[None], (2, 1))
    np.testing.assert_allclose(split(x, mem, pq, pk, kv_mask=km), plain(x, mem, pq, pk, kv_mask=km), atol=1e-5)


def test_video_memory_through_memaug_tiny():
    """The tiny preset end to end: frame tokens -> memory + decayed tokens -> query ids -> MemAug."""
    from hourllava_jax.memory.reference import build_video_memory

    cfg = load_model_config("tiny")
    h, p2 = cfg.llm.hidden_size, cfg.memory.pool_size**2
    frames = jax.random.normal(jax.random.key(0), (10, p2, h))
    vm = build_video_memory(frames, jnp.zeros(h), cfg.memory)  # 10 -> 16 frames (min_frames 16)
    assert vm.memory.shape == (16 * (p2 + 1), h) and vm.frame_indices.shape == (4,)
    pos, vis = query_positions([8, 5], [np.asarray(vm.decayed_positions)])
    text = jax.random.normal(jax.random.key(1), (13, h))
    query = jnp.concatenate([text[:8], vm.decayed, text[8:]])
    model = MemAug(cfg, rngs=nnx.Rngs(0))
    out = model(query[None], vm.memory[None], jnp.asarray(pos)[None], vm.memory_positions[None])
    visual = out[0, vis]
    assert visual.shape == vm.decayed.shape and bool(jnp.all(jnp.isfinite(visual)))
