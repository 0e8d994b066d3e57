"""Remat policies by name (model/remat.py): each maps to a real jax.checkpoint policy, every trained
tower (SigLIP, MemAug, Qwen2) applies it, gradients do not change, and the compiled backward
pass's temporary memory orders none > dots_saveable > full."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.model.hour_llava import HourLlava
from hourllava_jax.model.memaug import MemAug
from hourllava_jax.model.qwen2 import Qwen2
from hourllava_jax.model.remat import REMAT_NAMES, remat_policy
from hourllava_jax.model.siglip import SiglipVisionTower
from hourllava_jax.train.config import RematPolicy

POLICIES = ("none", "dots_saveable", "full")


def _cfg():
    cfg = load_model_config("tiny")
    # Deeper and wider than the preset so that saved activations dominate temp memory.
    return dataclasses.replace(
        cfg,
        llm=dataclasses.replace(cfg.llm, num_hidden_layers=4, hidden_size=64, intermediate_size=256),
        vision=dataclasses.replace(cfg.vision, num_hidden_layers=4, intermediate_size=256),
        memaug=dataclasses.replace(cfg.memaug, depth=4),
    )


def _towers(remat: str):
    """(name, module, fn(module) -> scalar) for each trained tower."""
    cfg = _cfg()
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, cfg.llm.vocab_size, (2, 128)), jnp.int32)
    px = jnp.asarray(rng.standard_normal((8, cfg.vision.image_size, cfg.vision.image_size, 3)), jnp.float32)
    h = cfg.llm.hidden_size
    q = jnp.asarray(rng.standard_normal((2, 128, h)), jnp.float32)
    mem = jnp.asarray(rng.standard_normal((2, 256, h)), jnp.float32)
    qp = jnp.broadcast_to(jnp.arange(128), (2, 128))
    kp = jnp.broadcast_to(jnp.arange(256), (2, 256))
    return [
        ("qwen2", Qwen2(cfg.llm, remat=remat, rngs=nnx.Rngs(0)), lambda m: jnp.mean(jnp.tanh(m(ids)))),
        ("siglip", SiglipVisionTower(cfg.vision, remat=remat, rngs=nnx.Rngs(0)), lambda m: jnp.mean(jnp.tanh(m(px)))),
        ("memaug", MemAug(cfg, remat=remat, rngs=nnx.Rngs(0)), lambda m: jnp.mean(jnp.tanh(m(q, mem, qp, kp)))),
    ]


def _grad_fn(module, fn):
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return jax.jit(jax.value_and_grad(lambda p: fn(nnx.merge(graphdef, p, rest)))), params


def test_names_map_to_real_policies_and_config_agrees():
    assert remat_policy("none") is None
    assert remat_policy("full") is jax.checkpoint_policies.nothing_saveable
    assert remat_policy("dots_saveable") is remat_policy("dots_saveable")  # one object per name
    assert remat_policy(True) is jax.checkpoint_policies.nothing_saveable and remat_policy(False) is None
    assert set(RematPolicy.__args__) == set(REMAT_NAMES)  # the train config accepts exactly these
    with pytest.raises(ValueError, match="remat: unknown policy 'dots'"):
        remat_policy("dots")


def test_hour_llava_passes_the_policy_to_every_tower():
    model = HourLlava(load_model_config("tiny"), rngs=nnx.Rngs(0), remat="dots_saveable")
    assert model.vision_tower.encoder.remat == model.memaug.remat == model.llm.remat == "dots_saveable"


def _checkpoint_policies(jaxpr) -> list:
    """The ``policy`` of every checkpoint (remat) equation in a jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("checkpoint", "remat", "remat2"):
            found.append(eqn.params.get("policy"))
        for v in eqn.params.values():
            if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                found += _checkpoint_policies(v.jaxpr)
            elif hasattr(v, "eqns"):
                found += _checkpoint_policies(v)
    return found


@pytest.mark.parametrize("tower", ["qwen2", "siglip", "memaug"])
def test_every_tower_checkpoints_each_layer_with_the_named_policy_and_same_grads(tower):
    grads = {}
    for name in POLICIES:
        _, module, fn = next(t for t in _towers(name) if t[0] == tower)
        f, params = _grad_fn(module, fn)
        graphdef, _, rest = nnx.split(module, nnx.Param, ...)
        found = _checkpoint_policies(jax.make_jaxpr(lambda p: fn(nnx.merge(graphdef, p, rest)))(params).jaxpr)
        assert found == ([] if name == "none" else [remat_policy(name)] * 4), (name, found)  # 4 layers each
        grads[name] = f(params)
    l0, g0 = grads["none"]
    for name in POLICIES[1:]:
        l1, g1 = grads[name]
        np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-8)
        for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
            np.testing.assert_allclose(b, a, atol=1e-7, rtol=1e-4)


def test_compiled_temp_memory_orders_none_dots_full():
    """On a small Qwen2 (4 layers, activations dominate): none > dots_saveable > full."""
    temp = {}
    for name in POLICIES:
        _, module, fn = _towers(name)[0]
        f, params = _grad_fn(module, fn)
        temp[name] = f.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp["none"] > temp["dots_saveable"] > temp["full"], temp
