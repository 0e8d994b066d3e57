"""Gradient checkpointing by name (design §3.1 'gradient checkpointing'): one place that turns a
config's ``remat`` string into a ``jax.checkpoint`` policy and applies it to a layer.

==================================  =============================================================
name                                what the backward pass keeps from the forward pass
==================================  =============================================================
``none``                            everything (no checkpoint at all)
``full`` / ``nothing_saveable``     only the layer's inputs: the whole layer is recomputed
``dots_saveable``                   the results of matmuls (dot_general and the model's named
                                    ``dense.matmul`` results); the rest is recomputed
``dots_with_no_batch_dims_saveable`` matmul results without batch dims (weights x activations)
==================================  =============================================================

Every trained tower (SigLIP, MemAug, Qwen2) calls :func:`remat_call` per layer; a scanned layer
stack passes :func:`remat_policy` to ``jax.checkpoint`` inside its scan body instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from hourllava_jax.model.dense import MATMUL_RESULT

REMAT_NAMES: tuple[str, ...] = ("none", "full", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")

Policy = Callable[..., bool]


def normalize_remat(remat: str | bool) -> str:
    """``True`` -> ``"full"``, ``False`` -> ``"none"`` (the old boolean flag); a name is checked."""
    if isinstance(remat, bool):
        return "full" if remat else "none"
    if remat not in REMAT_NAMES:
        raise ValueError(f"remat: unknown policy {remat!r}; valid {list(REMAT_NAMES)}")
    return remat


def _with_matmul_results(policy: Policy) -> Policy:
    # The model's matmuls are custom-VJP calls (model/dense.py) that a dot policy cannot see
    # into; their results carry a name, saved alongside (they have no batch dimensions).
    policies = jax.checkpoint_policies
    return policies.save_from_both_policies(policy, policies.save_only_these_names(MATMUL_RESULT))


# One object per name: a layer's policy is compared by identity (tests, jaxpr inspection).
_DOT_POLICIES: dict[str, Policy] = {
    name: _with_matmul_results(getattr(jax.checkpoint_policies, name)) for name in ("dots_saveable", "dots_with_no_batch_dims_saveable")
}


def remat_policy(name: str | bool) -> Policy | None:
    """The ``jax.checkpoint`` policy of ``name``; ``None`` for ``"none"`` (do not checkpoint)."""
    name = normalize_remat(name)
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    return _DOT_POLICIES[name]


def remat_call(name: str | bool, module: nnx.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(module, *args)``, with ``module``'s activations recomputed in the backward pass as
    ``name`` says. A plain ``jax.checkpoint`` over the module's state (no nested NNX transform,
    design §7.1); ``args`` are pytrees of arrays (``None`` allowed), ``fn`` must not mutate
    ``module``."""
    policy = remat_policy(name)
    if policy is None:
        return fn(module, *args)
    graphdef, state = nnx.split(module)
    return jax.checkpoint(lambda s, *a: fn(nnx.merge(graphdef, s), *a), policy=policy)(state, *args)
