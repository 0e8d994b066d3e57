"""Mesh construction from config and the logical-axis rules (parallel/mesh.py, parallel/rules.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import AxisType, PartitionSpec as P

from hourllava_jax.parallel import axes as ax
from hourllava_jax.parallel.mesh import MESH_AXES, make_mesh, resolve_mesh_shape
from hourllava_jax.parallel.rules import DEFAULT_RULES, constrain, logical_to_spec, state_shardings, use_rules


def test_resolve_fills_minus_one():
    assert resolve_mesh_shape({"data": -1, "tensor": 2}, 8) == {"data": 4, "fsdp": 1, "tensor": 2, "memory": 1}
    assert resolve_mesh_shape({"fsdp": -1}, 8)["fsdp"] == 8


@pytest.mark.parametrize("shape, msg", [
    ({"data": -1, "fsdp": -1}, "at most one"),
    ({"data": 3}, "needs 3 devices"),
    ({"data": -1, "tensor": 3}, "do not divide"),
    ({"pipeline": 2}, "unknown axis"),
])
def test_resolve_errors(shape, msg):
    with pytest.raises(ValueError, match=msg):
        resolve_mesh_shape(shape, 8)


def test_make_mesh_is_auto_4d():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert mesh.axis_names == MESH_AXES and tuple(mesh.devices.shape) == (2, 2, 2, 1)
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_spec_drops_axes_that_do_not_divide():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert logical_to_spec((ax.EMBED, ax.MLP), (64, 128), mesh, DEFAULT_RULES) == P("fsdp", "tensor")
    # 3 kv columns cannot split over tensor=2: replicated on that dim instead of failing.
    assert logical_to_spec((ax.EMBED, ax.KV_HEADS), (64, 3), mesh, DEFAULT_RULES) == P("fsdp")
    # batch over data x fsdp; odd batch keeps only what divides.
    assert logical_to_spec((ax.BATCH, ax.SEQ), (8, 5), mesh, DEFAULT_RULES) == P(("data", "fsdp"))
    assert logical_to_spec((ax.BATCH,), (2, ), mesh, DEFAULT_RULES) == P("data")
    # A mesh axis shards at most one dim of an array.
    rules = {**DEFAULT_RULES, ax.VOCAB: ("fsdp",)}
    assert logical_to_spec((ax.VOCAB, ax.EMBED), (64, 64), mesh, rules) == P("fsdp")
    # Size-1 axes are dropped; replicated arrays give an empty spec.
    assert logical_to_spec((ax.MEMORY,), (16,), mesh, DEFAULT_RULES) == P()
    assert logical_to_spec(None, (4, 4), mesh, DEFAULT_RULES) == P()
    with pytest.raises(KeyError, match="no rule"):
        logical_to_spec(("nonsense",), (4,), mesh, DEFAULT_RULES)


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(ax.param_init(nnx.initializers.ones, (ax.EMBED, ax.MLP))(rngs.params(), (8, 16)))
        self.layers = nnx.List([nnx.Param(jnp.zeros((4,)))])


def test_state_shardings_follow_param_metadata():
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    state = nnx.state(nnx.eval_shape(lambda: _Tiny(nnx.Rngs(0))), nnx.Param)
    sh = state_shardings(state, mesh, DEFAULT_RULES)
    assert sh["w"].spec == P("fsdp", "tensor") and sh["layers"][0].spec == P()
    assert set(sh) == set(nnx.to_pure_dict(state))


def test_constrain_uses_active_rules_and_mesh():
    mesh = make_mesh({"data": 4, "tensor": 2})

    @jax.jit
    def f(x):
        return constrain(x * 2, (ax.BATCH, ax.ACT_HEADS))

    x = jnp.ones((8, 6))
    assert constrain(x, (ax.BATCH, None)) is x  # no mesh: no-op
    with jax.set_mesh(mesh):
        assert f(x).sharding.spec == P("data", "tensor")
        with use_rules({**DEFAULT_RULES, ax.ACT_HEADS: ()}):
            assert jax.jit(lambda x: constrain(x * 2, (ax.BATCH, ax.ACT_HEADS)))(x).sharding.spec == P("data")
