"""Layer stacks as one scanned body (``scan_layers``): stacked parameters, ``jax.lax.scan``.

A stack is ``n`` copies of a layer module built by one ``nnx.vmap``, so every Param carries the
layers on a new leading axis, named :data:`~hourllava_jax.parallel.axes.LAYERS` in its logical
axes (unsharded by the rules). Running it splits the stack into its graph and state and scans
the state with plain ``jax.lax.scan`` (no nested NNX transform, design §7.1), the remat
policy wrapped around the body: XLA then compiles one layer instead of ``n``, and the backward
pass keeps only what the policy saves per step. Per-layer checkpoint names are resolved to
slices of the stack by ``convert/mapping.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from hourllava_jax.model.remat import remat_policy
from hourllava_jax.parallel.axes import LAYERS


def stack_layers(make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs) -> nnx.Module:
    """``n`` layers ``make(rngs)`` as one module whose Params are float[n, ...] (own init each)."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=n, transform_metadata={nnx.PARTITION_NAME: LAYERS})
    def create(r: nnx.Rngs) -> nnx.Module:
        return make(r)

    return create(rngs)


def num_layers(stack: nnx.Module) -> int:
    """Length of the stack's leading axis."""
    return jax.tree.leaves(nnx.state(stack))[0].shape[0]


def layer_at(stack: nnx.Module, i: int) -> nnx.Module:
    """Layer ``i`` of the stack as an ordinary module (shares no Variables with the stack)."""
    graphdef, state = nnx.split(stack)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x[i], state))


def scan_layers(stack: nnx.Module, fn: Callable[..., Any], carry: Any, *consts: Any, remat: str | bool = "none", length: int | None = None) -> Any:
    """``carry = fn(layer_i, carry, *consts)`` for the first ``length`` layers (default all), scanned.

    fn must not mutate the layer. consts are closed over (the same in every step); ``remat`` names
    the ``jax.checkpoint`` policy applied to each step (model/remat.py).
    """
    graphdef, state = nnx.split(stack)
    if length is not None:
        state = jax.tree.map(lambda x: x[:length], state)

    def body(c, layer_state):
        return fn(nnx.merge(graphdef, layer_state), c, *consts), None

    policy = remat_policy(remat)
    if policy is not None:
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    return jax.lax.scan(body, carry, state)[0]
