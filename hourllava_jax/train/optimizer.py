"""The optimizer (design §3): per-module AdamW groups with their own warmup+cosine schedules,
frozen modules mapped to ``optax.set_to_zero``, global-norm clipping over all trained grads.

Parameters are grouped by the first path component that names a configured module
(``vision_tower``, ``projector``, ``memaug``, ``llm``, ``image_newline``; design §7.7).
The release's DeepSpeed config most likely collapses these rates into one (design §3); this port
implements the table's per-module rates. ``inject_hyperparams`` keeps each group's current
learning rate in the optimizer state so it can be read back and logged.

Gradient accumulation is done in the train step (a scan over micro-batches), not with
``optax.MultiSteps``, so one compiled step is one optimizer update and the schedule count, the
NaN guard and the checkpoint step all mean the same thing.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from hourllava_jax.train.config import OptimConfig, TrainConfig

PyTree = Any
FROZEN = "frozen"


def _key_name(k: Any) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def param_labels(params: PyTree, groups: dict[str, Any]) -> PyTree:
    """Tree of group names (same structure as ``params``): the first path component in ``groups``.

    A parameter under no configured module is an error, so a renamed sub-module cannot
    silently fall out of (or into) training.
    """

    def label(path, _):
        names = [_key_name(k) for k in path]
        for n in names:
            if n in groups:
                return n
        raise KeyError(f"parameter {'/'.join(names)} belongs to no configured module {sorted(groups)}")

    return jax.tree_util.tree_map_with_path(label, params)


def trainable_mask(params: PyTree, optim: OptimConfig) -> PyTree:
    """Tree of bools: True where the parameter's module is trainable."""
    labels = param_labels(params, optim.modules)
    return jax.tree.map(lambda g: optim.modules[g].trainable, labels)


def lr_schedule(peak: float, num_steps: int, warmup_steps: int, kind: str = "cosine") -> optax.Schedule:
    """Linear warmup from 0 over ``warmup_steps`` then cosine to 0 at ``num_steps`` (HF Trainer's
    ``get_cosine_schedule_with_warmup``: the first update uses lr 0)."""
    if kind == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), optax.constant_schedule(peak)], [warmup_steps])
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(peak, max(num_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(num_steps, warmup_steps + 1), end_value=0.0)


def make_optimizer(cfg: TrainConfig, params: PyTree) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm, partition({group: adamw | set_to_zero}))`` over ``params``.

    ``params`` may be abstract (``ShapeDtypeStruct``s); only its structure and paths are used.
    """
    o = cfg.optim
    labels = param_labels(params, o.modules)
    transforms: dict[str, optax.GradientTransformation] = {}
    for name, m in o.modules.items():
        if m.trainable:
            sched = lr_schedule(m.lr, cfg.total_steps, cfg.warmup_steps, o.schedule)
            transforms[name] = optax.inject_hyperparams(optax.adamw)(
                learning_rate=sched, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay
            )
        else:
            transforms[name] = optax.set_to_zero()
    # Clip first, over the trained groups only (frozen grads are zeroed by the step anyway).
    chain = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    return optax.chain(*chain, optax.partition(transforms, labels))


def current_lrs(opt_state: PyTree) -> dict[str, jax.Array]:
    """Each trained group's learning rate as used by the latest update (from inject_hyperparams)."""
    out: dict[str, jax.Array] = {}

    def visit(node: Any) -> None:
        inner = getattr(node, "inner_states", None)
        if isinstance(inner, dict):
            for name, st in inner.items():
                st = getattr(st, "inner_state", st)  # MaskedState
                hp = getattr(st, "hyperparams", None)
                if hp is not None and "learning_rate" in hp:
                    out[name] = jnp.asarray(hp["learning_rate"])
            return
        if isinstance(node, (tuple, list)):
            for c in node:
                visit(c)

    visit(opt_state)
    return out
