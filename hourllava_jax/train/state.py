"""The train state pytree and its sharded initialisation (design §7.8).

``TrainState`` holds everything a checkpoint needs besides the data position: fp32 master
parameters (a pure nested dict, the layout of ``nnx.to_pure_dict(state)``), the optax state,
the step, the base RNG key and the count of skipped (non-finite) steps. The model's structure
(``nnx.GraphDef``) and any non-parameter variables stay outside, rebuilt from the factory.

Initialisation never materialises an unsharded model: ``jax.eval_shape`` gives the abstract
state, the rules table gives its shardings, and a jitted init with ``out_shardings`` creates
each shard where it lives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hourllava_jax.parallel import rules as rules_lib
from hourllava_jax.train.config import TrainConfig
from hourllava_jax.train.optimizer import make_optimizer

PyTree = Any
ModelFactory = Callable[[nnx.Rngs], nnx.Module]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: jax.Array  # int32[] optimizer steps taken (skipped ones included)
    params: PyTree  # pure dict of param_dtype arrays (fp32 masters)
    opt_state: PyTree
    rng: jax.Array  # uint32[2] base key; step keys are fold_in(rng, step)
    skipped: jax.Array  # int32[] steps whose update was dropped (non-finite loss/grads)


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The static half of a split model: its graph and non-parameter variables (usually none)."""

    graphdef: nnx.GraphDef
    rest: nnx.State
    param_template: nnx.State  # abstract Param state (with logical-axis metadata)


def split_abstract_model(factory: ModelFactory, seed: int = 0) -> ModelParts:
    """Builds the model abstractly (no memory) and splits it into graph, params and the rest."""
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(seed)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    return ModelParts(graphdef, rest, params)


def _cast_floats(tree: PyTree, dtype: Any) -> PyTree:
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_init_fn(cfg: TrainConfig, factory: ModelFactory, tx: optax.GradientTransformation) -> Callable[[], TrainState]:
    """A pure function building the initial state (params from ``cfg.seed``, train key from it too)."""

    def init() -> TrainState:
        key = jax.random.PRNGKey(cfg.seed)
        model = factory(nnx.Rngs(params=jax.random.fold_in(key, 0)))
        params = _cast_floats(nnx.to_pure_dict(nnx.state(model, nnx.Param)), jnp.dtype(cfg.param_dtype))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.fold_in(key, 1),
            skipped=jnp.zeros((), jnp.int32),
        )

    return init


def state_shardings(
    cfg: TrainConfig, mesh: Mesh, parts: ModelParts, tx: optax.GradientTransformation, abstract_state: TrainState
) -> TrainState:
    """Shardings for every leaf: params by the rules table, Adam moments like their params,
    scalars (step, counts, hyperparameters, rng) replicated."""
    rep = NamedSharding(mesh, PartitionSpec())
    p_sh = rules_lib.state_shardings(parts.param_template, mesh, cfg.rules)
    masked = optax.transforms.MaskedNode
    # Masked (frozen) entries of a moment tree stay MaskedNode; the others take their param's sharding.
    opt_sh = optax.tree_map_params(
        tx, lambda v, s: v if isinstance(v, masked) else s, abstract_state.opt_state, p_sh,
        transform_non_params=lambda _: rep, is_leaf=lambda x: isinstance(x, (NamedSharding, masked)),
    )
    return TrainState(step=rep, params=p_sh, opt_state=opt_sh, rng=rep, skipped=rep)


@dataclasses.dataclass(frozen=True)
class Initialised:
    """What :func:`create_train_state` returns: everything the step and checkpointing need."""

    parts: ModelParts
    tx: optax.GradientTransformation
    abstract_state: TrainState  # ShapeDtypeStructs carrying their target shardings
    shardings: TrainState
    init_fn: Callable[[], TrainState]  # jitted with out_shardings

    def init(self) -> TrainState:
        return self.init_fn()


def create_train_state(cfg: TrainConfig, mesh: Mesh, factory: ModelFactory) -> Initialised:
    """eval_shape -> shardings -> jitted init with out_shardings (call ``.init()`` to allocate)."""
    parts = split_abstract_model(factory, cfg.seed)
    tx = make_optimizer(cfg, nnx.to_pure_dict(parts.param_template))
    init = make_init_fn(cfg, factory, tx)
    abstract = jax.eval_shape(init)
    shardings = state_shardings(cfg, mesh, parts, tx, abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return Initialised(parts, tx, abstract, shardings, jax.jit(init, out_shardings=shardings))


def materialise_rest(parts: ModelParts, factory: ModelFactory, mesh: Mesh, seed: int = 0) -> nnx.State:
    """Concrete, replicated non-parameter variables (RoPE tables, buffers); usually empty."""
    if not jax.tree.leaves(parts.rest):
        return parts.rest
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.jit(lambda: nnx.split(factory(nnx.Rngs(seed)), nnx.Param, ...)[2], out_shardings=rep)()
