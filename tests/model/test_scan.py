"""scan_layers: stacked layers equal the unrolled model (outputs, gradients, cache decoding) in fp32,
conversion reads/writes per-layer HF names from/to the stack bitwise, and the stack axis is named."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config.model import MemAugConfig, VisionConfig
from hourllava_jax.convert.mapping import ConversionError, TensorRule, params_from_tensors, tensors_from_params
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules
from hourllava_jax.convert.siglip_keys import siglip_hf_rules
from hourllava_jax.convert.memaug_keys import memaug_hf_rules
from hourllava_jax.model.memaug import MemAug, MemAugDims
from hourllava_jax.model.qwen2 import Qwen2
from hourllava_jax.model.siglip import SiglipVisionTower

sys.path.insert(0, str(Path(__file__).parent))
from qwen2_ref import tiny_cfg  # noqa: E402

TOL = 1e-6  # of the reference's largest magnitude: the two layouts differ only in rounding order


def _close(a, b, err_msg=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, err_msg
    scale = max(1.0, float(np.abs(b).max()))
    assert float(np.abs(a - b).max()) <= TOL * scale, f"{err_msg}: max diff {float(np.abs(a - b).max())} vs scale {scale}"


def _twins(make, rules):
    """(unrolled, scanned) with the same weights, copied through the per-layer HF names."""
    unrolled, scanned = make(False), make(True)
    # Randomise biases/norms too so every term is checked.
    state = nnx.state(unrolled, nnx.Param)
    leaves, tdef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    nnx.update(unrolled, jax.tree.unflatten(tdef, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]))
    tensors = tensors_from_params(unrolled, rules)
    params_from_tensors(scanned, tensors, rules)
    return unrolled, scanned, tensors


def _grads(model, loss):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    value, g = jax.jit(jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p, rest))))(params)
    nnx.update(model, g)  # gradients in the model's own layout, read back through the HF names
    return value


def _assert_grads_equal(unrolled, scanned, loss, rules):
    v0, v1 = _grads(unrolled, loss), _grads(scanned, loss)
    _close(v0, v1)
    g0, g1 = tensors_from_params(unrolled, rules), tensors_from_params(scanned, rules)
    assert g0.keys() == g1.keys()
    for k in g0:
        _close(g0[k], g1[k], k)
    assert max(float(np.abs(v).max()) for v in g0.values()) > 0


@pytest.mark.parametrize("remat", ["none", "full"])
def test_qwen2_scanned_equals_unrolled(rng, remat):
    cfg = tiny_cfg(num_hidden_layers=3)
    rules = qwen2_hf_rules(cfg)
    unrolled, scanned, _ = _twins(lambda s: Qwen2(cfg, scan_layers=s, remat=remat, rngs=nnx.Rngs(0)), rules)
    assert scanned.layers.self_attn.q_proj.kernel.get_value().shape == (3, 64, 64)
    ids = jnp.asarray(rng.integers(0, 97, (2, 11)), jnp.int32)
    mask = jnp.asarray(np.arange(11)[None] < np.array([[11], [7]]))
    _close(scanned(ids, attention_mask=mask), unrolled(ids, attention_mask=mask))

    def loss(m):
        return jnp.mean(jax.nn.log_softmax(m(ids, attention_mask=mask)[:, :-1]) * jax.nn.one_hot(ids[:, 1:], cfg.vocab_size))

    _assert_grads_equal(unrolled, scanned, loss, rules)


def test_qwen2_scanned_cache_decoding_equals_unrolled(rng):
    cfg = tiny_cfg(num_hidden_layers=2)
    unrolled, scanned, _ = _twins(lambda s: Qwen2(cfg, scan_layers=s, rngs=nnx.Rngs(0)), qwen2_hf_rules(cfg))
    ids = jnp.asarray(rng.integers(0, 97, (1, 6)), jnp.int32)
    outs = []
    for m in (unrolled, scanned):
        cache = m.init_cache(1, 8)
        logits, cache = m(ids[:, :5], cache=cache)
        step, _ = m(ids[:, 5:], cache=cache)
        outs.append((logits, step))
    for a, b in zip(*outs):
        _close(b, a)


def test_qwen2_scanned_round_trip_is_bitwise_and_names_the_stack_axis():
    cfg = tiny_cfg(num_hidden_layers=3, tie_word_embeddings=True)
    rules = qwen2_hf_rules(cfg)
    _, scanned, tensors = _twins(lambda s: Qwen2(cfg, scan_layers=s, rngs=nnx.Rngs(0)), rules)
    back = tensors_from_params(scanned, rules)
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k]), k
    spec = nnx.get_partition_spec(nnx.state(scanned, nnx.Param))
    assert tuple(spec["layers"]["mlp"]["gate_proj"]["kernel"].get_value()) == ("layers", "embed", "mlp")
    assert tuple(spec["layers"]["input_layernorm"]["weight"].get_value()) == ("layers", "norm")


def test_conversion_errors_name_missing_layers():
    cfg = tiny_cfg(num_hidden_layers=3)
    rules = qwen2_hf_rules(cfg)
    _, scanned, tensors = _twins(lambda s: Qwen2(cfg, scan_layers=s, rngs=nnx.Rngs(0)), rules)
    short = [r for r in rules if ".layers.2." not in r.hf_key]
    with pytest.raises(ConversionError, match=r"layers\.mlp\.gate_proj\.kernel \(2 of 3 layers\)"):
        params_from_tensors(scanned, tensors, short, strict=False)
    extra = rules + [TensorRule("model.layers.3.mlp.up_proj.weight", ("layers", 3, "mlp", "up_proj", "kernel"), (1, 0))]
    with pytest.raises(ConversionError, match="layer 3 is outside the stack"):
        params_from_tensors(scanned, tensors | {"model.layers.3.mlp.up_proj.weight": tensors["model.layers.0.mlp.up_proj.weight"]}, extra)


@pytest.mark.parametrize("feature_layer", [-1, -2])  # -2: the scan runs a prefix of the stack
def test_siglip_scanned_equals_unrolled(feature_layer):
    cfg = VisionConfig(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=2, image_size=30,
                       patch_size=14, vision_use_head=False, feature_layer=feature_layer)  # fmt: skip
    rules = siglip_hf_rules(cfg, "")
    unrolled, scanned, _ = _twins(lambda s: SiglipVisionTower(cfg, scan_layers=s, remat="full", rngs=nnx.Rngs(0)), rules)
    pixels = jax.random.normal(jax.random.key(1), (2, 30, 30, 3))
    _close(scanned(pixels), unrolled(pixels))
    _assert_grads_equal(unrolled, scanned, lambda m: jnp.mean(jnp.sin(m(pixels))), rules)


def test_memaug_scanned_equals_unrolled():
    dims = MemAugDims(32, 4, 2, 1e6, MemAugConfig(depth=3))
    rules = memaug_hf_rules(dims, prefix="")
    unrolled, scanned, _ = _twins(lambda s: MemAug(dims, scan_layers=s, remat="dots_saveable", rngs=nnx.Rngs(0)), rules)
    ks = jax.random.split(jax.random.key(2), 2)
    x, mem = jax.random.normal(ks[0], (2, 9, 32)), jax.random.normal(ks[1], (2, 20, 32))
    qp = jnp.broadcast_to(jnp.arange(9), (2, 9))
    kp = jnp.broadcast_to(jnp.arange(20), (2, 20))
    q_mask = jnp.arange(9)[None] < jnp.array([[9], [6]])
    kv_mask = jnp.arange(20)[None] < jnp.array([[20], [13]])
    run = lambda m: m(x, mem, qp, kp, q_mask, kv_mask)  # noqa: E731
    _close(run(scanned), run(unrolled))
    _assert_grads_equal(unrolled, scanned, lambda m: jnp.mean(jnp.sin(run(m))), rules)
