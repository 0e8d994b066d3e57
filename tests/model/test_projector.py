"""mlp2x_gelu projector: fp32 parity with the release's nn.Sequential, key rules (design §1.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.convert.mapping import ConversionError, params_from_tensors, tensors_from_params
from hourllava_jax.convert.projector_keys import projector_hf_rules
from hourllava_jax.model.projector import Projector

IN, HID = 24, 40


def _torch_projector(torch):
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.GELU(), torch.nn.Linear(HID, HID)).eval()
    with torch.no_grad():
        for p in seq.parameters():  # torch's default init gives tiny biases; make every tensor matter
            p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.ndim == 2 else 0.5))
    return seq


def _tensors(seq, prefix: str) -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().numpy().copy() for k, v in seq.state_dict().items()}


def test_parity_with_torch_sequential(torch_fp32):
    seq = _torch_projector(torch_fp32)
    proj = Projector(IN, HID, rngs=nnx.Rngs(0))
    params_from_tensors(proj, _tensors(seq, "model.mm_projector."), projector_hf_rules())
    x = np.random.default_rng(0).normal(size=(2, 5, IN)).astype(np.float32) * 2  # [T, tokens, in]
    with torch_fp32.no_grad():
        want = seq(torch_fp32.from_numpy(x)).numpy()
    got = np.asarray(jax.jit(lambda p, v: p(v))(proj, x))
    assert got.shape == (2, 5, HID)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_gelu_is_exact_erf_not_tanh():
    """An identity-like projector exposes the activation: erf GELU, as torch.nn.GELU() default."""
    proj = Projector(1, 1, rngs=nnx.Rngs(0))
    for lin in (proj.linear_0, proj.linear_2):
        lin.kernel.set_value(jnp.ones((1, 1)))
        lin.bias.set_value(jnp.zeros((1,)))
    x = jnp.linspace(-3, 3, 13)[:, None]
    np.testing.assert_allclose(proj(x), jax.nn.gelu(x, approximate=False), atol=1e-7)
    assert np.abs(np.asarray(proj(x) - jax.nn.gelu(x, approximate=True))).max() > 1e-4


@pytest.mark.parametrize("prefix", ["model.mm_projector.", ""])
def test_round_trip_is_bit_exact(torch_fp32, prefix):
    tensors = _tensors(_torch_projector(torch_fp32), prefix)
    assert set(tensors) == {r.hf_key for r in projector_hf_rules(prefix)}
    proj = Projector(IN, HID, rngs=nnx.Rngs(0))
    params_from_tensors(proj, tensors, projector_hf_rules(prefix))
    back = tensors_from_params(proj, projector_hf_rules(prefix))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_shape_mismatch_names_the_key(torch_fp32):
    tensors = _tensors(_torch_projector(torch_fp32), "model.mm_projector.")
    with pytest.raises(ConversionError, match=r"model\.mm_projector\.0\.weight"):
        params_from_tensors(Projector(IN + 1, HID, rngs=nnx.Rngs(0)), tensors, projector_hf_rules())


def test_params_have_logical_axes_and_dtypes():
    proj = Projector(IN, HID, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    axes = {p: v.get_metadata()["out_sharding"] for p, v in nnx.iter_graph(proj) if isinstance(v, nnx.Param)}
    assert axes == {
        ("linear_0", "kernel"): ("embed", "mlp"), ("linear_0", "bias"): ("mlp",),
        ("linear_2", "kernel"): ("mlp", "embed"), ("linear_2", "bias"): ("embed",),
    }  # fmt: skip
    assert proj.linear_0.kernel.get_value().dtype == jnp.float32
    assert proj(jnp.ones((3, IN))).dtype == jnp.bfloat16
