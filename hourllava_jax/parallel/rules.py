"""Logical-axis rules: logical names (``parallel/axes.py``) -> mesh axes -> shardings.

A rules table maps each logical axis to a tuple of mesh axes (``()`` = replicated), e.g.
``{"embed": ("fsdp",), "mlp": ("tensor",), "batch": ("data", "fsdp")}``. It lives in the
training config (``TrainConfig.rules``); changing parallelism means changing the table
(design §7.2). Resolving a spec for a concrete shape:

* a mesh axis that is absent from the mesh, or of size 1, is dropped;
* a mesh axis already used by an earlier dimension of the same array is dropped (a mesh axis
  may shard only one dimension);
* a mesh axis that does not divide the dimension (after the axes kept before it) is dropped,
  so e.g. a 2-kv-head projection on ``tensor=4`` stays replicated instead of failing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hourllava_jax.parallel import axes as ax

Rules = Mapping[str, Sequence[str]]

# Default table (FSDP over ``fsdp``, Megatron-style tensor parallelism over ``tensor``, the
# memory repository's token axis over ``memory``). Norm/conv vectors are replicated.
DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    ax.BATCH: ("data", "fsdp"),
    ax.SEQ: (),
    ax.MEMORY: ("memory",),
    ax.EMBED: ("fsdp",),
    ax.HEADS: ("tensor",),
    ax.KV_HEADS: ("tensor",),
    ax.MLP: ("tensor",),
    ax.VOCAB: ("tensor",),
    ax.NORM: (),
    ax.CONV: (),
    ax.LAYERS: (),  # each scan step reads one layer: sharding this axis would gather every step
    ax.ACT_EMBED: (),
    ax.ACT_HEADS: ("tensor",),
}

_ACTIVE_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("hourllava_rules", default=DEFAULT_RULES)


def _mesh_sizes(mesh: Any) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes)) if hasattr(mesh, "axis_sizes") else dict(mesh.shape)


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh | jax.sharding.AbstractMesh,
    rules: Rules | None = None,
) -> PartitionSpec:
    """``PartitionSpec`` for an array of ``shape`` whose dims carry ``logical_axes``.

    ``logical_axes`` may be ``None``/empty (fully replicated). Unknown logical names raise, so a
    typo in a module or in the rules table cannot silently replicate a 7B embedding.
    """
    rules = _ACTIVE_RULES.get() if rules is None else rules
    if not logical_axes:
        return PartitionSpec()
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    sizes = _mesh_sizes(mesh)
    used: set[str] = set()
    out: list[Any] = []
    for name, dim in zip(logical_axes, shape):
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule; rules table knows {sorted(rules)}")
        kept: list[str] = []
        prod = 1
        for m in rules[name]:
            size = sizes.get(m, 1)
            if size == 1 or m in used or dim % (prod * size):
                continue
            kept.append(m)
            prod *= size
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def variable_axes(v: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axes recorded on an ``nnx.Variable`` by ``axes.param_init`` (or None)."""
    meta = v.get_metadata()
    names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
    return tuple(names) if names else None


def _nest(flat: Sequence[tuple[tuple[Any, ...], Any]]) -> dict:
    """``[(path, leaf)]`` -> nested dict, the layout of ``nnx.to_pure_dict(state)``."""
    out: dict = {}
    for path, leaf in flat:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = leaf
    return out


def state_specs(state: nnx.State, mesh: Mesh, rules: Rules | None = None) -> dict:
    """Pure-dict tree of mesh ``PartitionSpec``s for an (abstract) ``nnx.State`` of variables."""
    flat = []
    for path, v in nnx.to_flat_state(state):
        flat.append((path, logical_to_spec(variable_axes(v), v.shape, mesh, rules)))
    return _nest(flat)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules | None = None) -> dict:
    """Pure-dict tree of ``NamedSharding``s matching ``nnx.to_pure_dict(state)``."""
    specs = state_specs(state, mesh, rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def use_rules(rules: Rules) -> Iterator[None]:
    """Makes ``rules`` the table :func:`constrain` resolves against (default: DEFAULT_RULES)."""
    token = _ACTIVE_RULES.set(rules)
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names against the mesh set by ``jax.set_mesh``.

    A no-op outside a mesh (single-device tests, eager use), so model code can call it freely.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, mesh))
