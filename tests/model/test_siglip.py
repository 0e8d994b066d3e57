"""SigLIP vision tower: fp32 parity with transformers' SiglipVisionModel, key rules (design §1.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config.model import VisionConfig
from hourllava_jax.convert.hf_config import vision_from_hf_config
from hourllava_jax.convert.mapping import ConversionError, params_from_tensors, tensors_from_params
from hourllava_jax.convert.siglip_keys import HOURLLAVA_PREFIX, HUB_PREFIX, siglip_hf_rules, siglip_num_layers, siglip_prefix
from hourllava_jax.model.siglip import SiglipVisionTower

TOL = 1e-5  # fp32, matmul precision "highest" (conftest); outputs are of order 1

# (HF config, truncated): truncated mirrors the release's tower (last layer already deleted,
# output = last held layer, no head); full is a plain SigLIP read at its penultimate layer.
FULL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14, vision_use_head=True)
# 30 / 14 is not whole, like 384 / 14: the convolution drops the last 2 pixels (2x2 grid).
TRUNC = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, image_size=30, patch_size=14, vision_use_head=False)


def _hf_model(torch, hf_kwargs: dict):
    """A tiny SiglipVisionModel with every tensor random (HF init leaves biases/LN trivial)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    model = SiglipVisionModel(SiglipVisionConfig(**hf_kwargs, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p.shape[-1] if p.ndim == 2 else (int(np.prod(p.shape[1:])) if p.ndim == 4 else 1)
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight")) else 0.0
            p.copy_(base + torch.randn_like(p) * (fan_in**-0.5 if p.ndim >= 2 else 0.2))
    return model


def _cfg(model, truncated: bool) -> VisionConfig:
    return vision_from_hf_config(model.config.to_dict(), truncated=truncated)


def _state_dict(model, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pixels(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)  # NHWC, normalised


def _hf_features(torch, model, pixels: np.ndarray):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)), output_hidden_states=True)
    return out


def _ours(cfg: VisionConfig, tensors: dict, prefix: str, **kw) -> SiglipVisionTower:
    tower = SiglipVisionTower(cfg, rngs=nnx.Rngs(0), **kw)
    params_from_tensors(tower, tensors, siglip_hf_rules(cfg, prefix))
    return tower


@pytest.mark.parametrize("hf_kwargs,truncated,layer", [(FULL, False, -2), (TRUNC, True, -1)], ids=["full_penultimate", "truncated_last"])
def test_parity_with_hf_state_dict(torch_fp32, hf_kwargs, truncated, layer):
    model = _hf_model(torch_fp32, hf_kwargs)
    cfg = _cfg(model, truncated)
    assert cfg.feature_layer == layer and cfg.num_used_layers == hf_kwargs["num_hidden_layers"] + 1 + layer
    pixels = _pixels(2, hf_kwargs["image_size"])
    want = _hf_features(torch_fp32, model, pixels).hidden_states[layer].numpy()
    got = np.asarray(jax.jit(lambda t, x: t(x))(_ours(cfg, _state_dict(model), ""), pixels))
    assert got.shape == (2, cfg.num_patches, cfg.hidden_size) == want.shape
    assert np.abs(want).max() > 0.5  # order-1 outputs, so TOL is a tight relative bound too
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def test_output_is_not_post_layernormed(torch_fp32):
    """The truncated tower's last hidden state differs from HF's last_hidden_state (post-LN)."""
    model = _hf_model(torch_fp32, TRUNC)
    cfg = _cfg(model, truncated=True)
    pixels = _pixels(1, TRUNC["image_size"])
    out = _hf_features(torch_fp32, model, pixels)
    got = np.asarray(_ours(cfg, _state_dict(model), "")(pixels))
    assert np.abs(got - out.last_hidden_state.numpy()).max() > 0.1
    np.testing.assert_allclose(got, out.hidden_states[-1].numpy(), atol=TOL, rtol=TOL)


def test_pooled_matches_hf_pooler_output(torch_fp32):
    model = _hf_model(torch_fp32, FULL)
    cfg = _cfg(model, truncated=False)
    pixels = _pixels(3, FULL["image_size"])
    want = _hf_features(torch_fp32, model, pixels).pooler_output.numpy()
    got = np.asarray(_ours(cfg, _state_dict(model), "").pooled(pixels))
    assert got.shape == (3, cfg.hidden_size)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("prefix", ["", HUB_PREFIX, HOURLLAVA_PREFIX], ids=["bare", "hub", "hourllava"])
def test_parity_through_safetensors(torch_fp32, tmp_path, prefix):
    """save_pretrained -> safetensors -> (re-keyed to a checkpoint layout) -> our tower."""
    from safetensors.numpy import load_file, save_file

    model = _hf_model(torch_fp32, TRUNC)
    model.save_pretrained(tmp_path / "hf")
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    assert siglip_prefix(saved) == ""  # transformers 5 saves a bare SiglipVisionModel unprefixed (design §8.5)
    save_file({prefix + k: v for k, v in saved.items()}, tmp_path / "ckpt.safetensors")
    tensors = load_file(tmp_path / "ckpt.safetensors")

    found = siglip_prefix(tensors)
    assert found == prefix
    cfg = _cfg(model, truncated=True)
    assert siglip_num_layers(tensors, found) == cfg.num_hidden_layers
    pixels = _pixels(2, TRUNC["image_size"])
    want = _hf_features(torch_fp32, model, pixels).hidden_states[-1].numpy()
    np.testing.assert_allclose(np.asarray(_ours(cfg, tensors, found)(pixels)), want, atol=TOL, rtol=TOL)


def test_round_trip_is_bit_exact(torch_fp32):
    model = _hf_model(torch_fp32, FULL)
    cfg = _cfg(model, truncated=False)
    tensors = _state_dict(model, HUB_PREFIX)
    back = tensors_from_params(_ours(cfg, tensors, HUB_PREFIX), siglip_hf_rules(cfg, HUB_PREFIX))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_conversion_errors_name_the_key(torch_fp32):
    model = _hf_model(torch_fp32, TRUNC)
    cfg = _cfg(model, truncated=True)
    tensors = _state_dict(model)
    tower = SiglipVisionTower(cfg, rngs=nnx.Rngs(0))
    missing = {k: v for k, v in tensors.items() if k != "encoder.layers.1.self_attn.q_proj.weight"}
    with pytest.raises(ConversionError, match=r"encoder\.layers\.1\.self_attn\.q_proj\.weight"):
        params_from_tensors(tower, missing, siglip_hf_rules(cfg, ""))
    with pytest.raises(ConversionError, match="head.probe"):
        params_from_tensors(tower, {**tensors, "head.probe": np.zeros((1, 1, 24), np.float32)}, siglip_hf_rules(cfg, ""))
    with pytest.raises(ConversionError, match="prefixes"):
        siglip_prefix(list(tensors) + [HUB_PREFIX + "embeddings.patch_embedding.weight"])


def test_every_param_has_logical_axes():
    cfg = VisionConfig(**{k: v for k, v in FULL.items()}, feature_layer=-2)
    tower = SiglipVisionTower(cfg, rngs=nnx.Rngs(0))
    params = [(p, v) for p, v in nnx.iter_graph(tower) if isinstance(v, nnx.Param)]
    assert len(params) == len(siglip_hf_rules(cfg, ""))
    for path, v in params:
        axes = v.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == v.get_value().ndim, path


def test_rejects_wrong_image_size():
    cfg = VisionConfig(**TRUNC, feature_layer=-1)
    tower = SiglipVisionTower(cfg, rngs=nnx.Rngs(0))
    assert tower(jnp.zeros((1, 41, 41, 3))).shape == (1, 4, 24)  # 41 // 14 == 2 still fits
    with pytest.raises(ValueError, match="NHWC"):
        tower(jnp.zeros((1, 3, 30, 30)))
    with pytest.raises(ValueError, match="NHWC"):
        tower(jnp.zeros((1, 42, 42, 3)))


def test_remat_matches_plain_forward_and_grads():
    cfg = VisionConfig(**TRUNC, feature_layer=-1)
    pixels = jnp.asarray(_pixels(2, TRUNC["image_size"]))

    def loss_and_grads(remat: bool):
        tower = SiglipVisionTower(cfg, remat=remat, rngs=nnx.Rngs(3))
        graphdef, params, rest = nnx.split(tower, nnx.Param, ...)

        def loss(p):
            return jnp.mean(nnx.merge(graphdef, p, rest)(pixels) ** 2)

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
        assert ("remat" in jaxpr or "checkpoint" in jaxpr) == remat  # the layers really are rematerialised
        return jax.jit(jax.value_and_grad(loss))(params)

    (l0, g0), (l1, g1) = loss_and_grads(False), loss_and_grads(True)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g0))


def test_bfloat16_compute_stays_close_to_fp32(torch_fp32):
    model = _hf_model(torch_fp32, TRUNC)
    cfg = _cfg(model, truncated=True)
    tensors = _state_dict(model)
    pixels = _pixels(2, TRUNC["image_size"])
    ref = np.asarray(_ours(cfg, tensors, "")(pixels))
    bf = _ours(cfg, tensors, "", dtype=jnp.bfloat16)(pixels)
    assert bf.dtype == jnp.bfloat16
    assert np.abs(np.asarray(bf, np.float32) - ref).max() < 0.1 * np.abs(ref).max()


def test_so400m_shapes_abstractly():
    """The release's tower (26 held layers, design §1.1): [N, 384, 384, 3] -> [N, 729, 1152], traced
    without allocating its ~400M parameters."""
    cfg = VisionConfig()
    tower = nnx.eval_shape(lambda: SiglipVisionTower(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(tower)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((2, 384, 384, 3), jnp.float32))
    assert out.shape == (2, 729, 1152) and out.dtype == jnp.float32
    sizes = {p: v.get_value().shape for p, v in nnx.iter_graph(tower) if isinstance(v, nnx.Param)}
    assert sizes[("embeddings", "patch_embedding", "kernel")] == (14, 14, 3, 1152)
    assert sizes[("encoder", "layers", 25, "mlp", "fc1", "kernel")] == (1152, 4304)
    assert ("encoder", "layers", 26, "mlp", "fc1", "kernel") not in sizes
    assert {r.path for r in siglip_hf_rules(cfg, HOURLLAVA_PREFIX)} == set(sizes)
