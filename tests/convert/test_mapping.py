"""TensorRule application: layouts, coverage checks and error messages."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from hourllava_jax.convert.mapping import ConversionError, TensorRule, params_from_tensors, tensors_from_params


class _Two(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.layers = nnx.List([nnx.Linear(2, 3, rngs=rngs) for _ in range(2)])
        self.conv = nnx.Conv(3, 5, kernel_size=(2, 2), rngs=rngs)


def _rules():
    r = [TensorRule(f"l.{i}.weight", ("layers", i, "kernel"), (1, 0)) for i in range(2)]
    r += [TensorRule(f"l.{i}.bias", ("layers", i, "bias")) for i in range(2)]
    r += [TensorRule("conv.weight", ("conv", "kernel"), (2, 3, 1, 0)), TensorRule("conv.bias", ("conv", "bias"))]
    return r


def _hf(rng):
    t = {f"l.{i}.weight": rng.standard_normal((3, 2)) for i in range(2)}
    t |= {f"l.{i}.bias": rng.standard_normal(3) for i in range(2)}
    t |= {"conv.weight": rng.standard_normal((5, 3, 2, 2)), "conv.bias": rng.standard_normal(5)}
    return {k: v.astype(np.float32) for k, v in t.items()}


def test_layouts_and_bit_exact_round_trip(rng):
    m, t = _Two(), _hf(rng)
    params_from_tensors(m, t, _rules())
    np.testing.assert_array_equal(np.asarray(m.layers[1].kernel[...]), t["l.1.weight"].T)
    np.testing.assert_array_equal(np.asarray(m.conv.kernel[...]), t["conv.weight"].transpose(2, 3, 1, 0))
    back = tensors_from_params(m, _rules())
    assert back.keys() == t.keys()
    for k in t:
        assert back[k].dtype == t[k].dtype and np.array_equal(back[k], t[k]), k


def test_cast_to_dtype(rng):
    m = _Two()
    params_from_tensors(m, _hf(rng), _rules(), dtype=np.float16)
    assert m.conv.kernel[...].dtype == np.float16


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda t: t.pop("l.0.bias"), "missing key.*l.0.bias"),
        (lambda t: t.__setitem__("extra.weight", np.zeros(1)), "unexpected key.*extra.weight"),
        (lambda t: t.__setitem__("l.1.weight", np.zeros((4, 2), np.float32)), "l.1.weight: shape"),
        (lambda t: t.__setitem__("conv.weight", np.zeros((5, 3, 2), np.float32)), "conv.weight: expected a 4-d"),
    ],
)
def test_errors_name_the_key(rng, mutate, match):
    t = _hf(rng)
    mutate(t)
    with pytest.raises(ConversionError, match=match):
        params_from_tensors(_Two(), t, _rules())


def test_rules_must_cover_every_parameter(rng):
    with pytest.raises(ConversionError, match="no checkpoint key maps to parameter.*conv.bias"):
        params_from_tensors(_Two(), _hf(rng), _rules()[:-1], strict=False)
    bad = _rules() + [TensorRule("x", ("nope",))]
    with pytest.raises(ConversionError, match="not a parameter"):
        params_from_tensors(_Two(), _hf(rng), bad)
