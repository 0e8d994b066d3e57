"""The jitted train step: merge, forward/backward in the compute dtype, guarded optimizer update.

One step = one optimizer update over ``grad_accum_steps`` micro-batches (scanned). Inside one
``jax.jit`` (design §7.1): fp32 master params are cast to the compute dtype (bf16, design §3),
merged with the graph (``nnx.merge``), the loss is differentiated w.r.t. the fp32 masters (the
cast's transpose brings the grads back to fp32), frozen modules sit behind ``stop_gradient``
(their backward pass is never computed) and keep their exact bits, and a non-finite loss or grad
norm drops the whole update and increments ``skipped``. The state is donated.

The loss is reduced as ``loss_reduction`` says (``train/loss_reduction.py``) from the per-row
terms a ``loss_fn`` returns in its aux dict (``sample_ce``, ``sample_tokens``): each micro-batch
contributes a numerator and a count, and the step divides their sums once, so accumulation and
the mesh never change the result. A ``loss_fn`` without those keys is taken as a mean already:
its micro-batch losses are averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hourllava_jax.parallel.mesh import batch_axes
from hourllava_jax.train.loss_reduction import SAMPLE_CE, SAMPLE_TOKENS, reduce_terms
from hourllava_jax.train.optimizer import current_lrs
from hourllava_jax.train.state import ModelParts, TrainState

PyTree = Any
Batch = Mapping[str, jax.Array]
# loss_fn(model, batch, rng) -> (scalar loss, dict of scalar aux metrics)
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _to_compute(params: PyTree, dtype: Any) -> PyTree:
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def _split_micro(batch: Batch, accum: int) -> Batch:
    """``[G, ...] -> [accum, G/accum, ...]`` taking rows ``i, i+accum, ...`` for micro-batch ``i``:
    each device's contiguous block of rows stays on that device (no resharding)."""

    def f(x):
        x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:])
        return jnp.moveaxis(x, 1, 0)

    return jax.tree.map(f, batch)


def make_train_step(
    parts: ModelParts,
    rest: nnx.State,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    trainable: PyTree,
    *,
    compute_dtype: Any = jnp.bfloat16,
    grad_accum_steps: int = 1,
    loss_reduction: str = "per_token",
    loss_group_size: int = 1,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns ``step(state, batch) -> (state, metrics)`` (not yet jitted; see :func:`compile_step`).

    ``trainable`` is a tree of Python bools like ``state.params`` (``optimizer.trainable_mask``).
    Metrics: ``loss``, ``grad_norm`` (pre-clip), ``lr/<group>``, ``finite``, ``skipped`` and the
    mean of ``loss_fn``'s aux values.
    """
    compute_dtype = jnp.dtype(compute_dtype)

    def loss_of(params: PyTree, batch: Batch, rng: jax.Array):
        params = jax.tree.map(lambda t, p: p if t else jax.lax.stop_gradient(p), trainable, params)
        state = nnx.State(_to_compute(params, compute_dtype))
        model = nnx.merge(parts.graphdef, state, rest)
        loss, aux = loss_fn(model, batch, rng)
        aux = dict(aux)
        if SAMPLE_CE in aux:
            num, den = reduce_terms(aux.pop(SAMPLE_CE), aux.pop(SAMPLE_TOKENS), loss_reduction, loss_group_size)
        else:
            num, den = loss.astype(jnp.float32), jnp.ones((), jnp.float32)
        return num, (den, aux)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (num, (den, aux)), grads = grad_fn(state.params, batch, rng)
        else:
            micro = _split_micro(batch, grad_accum_steps)

            def body(carry, xs):
                i, mb = xs
                out, g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (out, g)), None

            shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            ((num, (den, aux)), grads), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro))
            aux = jax.tree.map(lambda x: x / grad_accum_steps, aux)  # aux metrics: mean of micro-batches
        # One division for the whole step (see the module docstring).
        den = jnp.maximum(den, 1.0)
        loss = num / den
        grads = jax.tree.map(lambda g: g / den.astype(g.dtype), grads)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        # Frozen params are never touched (not even by `p + 0`, which would flip -0.0 to +0.0).
        new_params = jax.tree.map(lambda t, p, u: (p + u.astype(p.dtype)) if t else p, trainable, state.params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1,
            params=jax.tree.map(keep, new_params, state.params),
            opt_state=jax.tree.map(keep, new_opt, state.opt_state),
            rng=state.rng,
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite, "skipped": new_state.skipped}
        metrics.update({f"lr/{k}": v for k, v in current_lrs(new_state.opt_state).items()})
        metrics.update({f"aux/{k}": jnp.asarray(v, jnp.float32) for k, v in aux.items()})
        return new_state, metrics

    return step


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) dim over ``data`` x ``fsdp``; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh), *([None] * (ndim - 1))))


def compile_step(
    step: Callable,
    mesh: Mesh,
    abstract_state: TrainState,
    state_shardings: TrainState,
    batch_spec: Mapping[str, jax.ShapeDtypeStruct],
    *,
    verbose: bool = True,
) -> jax.stages.Compiled:
    """AOT-compiles ``step`` (donating the state) for global batch shapes ``batch_spec`` and
    prints the compiled memory analysis before step 1 (design §7.8)."""
    b_sh = {k: batch_sharding(mesh, len(v.shape)) for k, v in batch_spec.items()}
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh[k]) for k, v in batch_spec.items()}
    rep = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(step, in_shardings=(state_shardings, b_sh), out_shardings=(state_shardings, rep), donate_argnums=0)
    with jax.set_mesh(mesh):
        compiled = jitted.lower(abstract_state, abstract_batch).compile()
    if verbose and jax.process_index() == 0:
        print(format_memory_analysis(compiled), flush=True)
    return compiled


def format_memory_analysis(compiled: jax.stages.Compiled) -> str:
    """One line of per-device memory figures (GiB) from ``compiled.memory_analysis()``."""
    m = compiled.memory_analysis()
    if m is None:
        return "memory analysis: unavailable on this backend"
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
              "generated_code_size_in_bytes")
    parts = [f"{f.replace('_size_in_bytes', '')}={getattr(m, f, 0) / 2**30:.4f}GiB" for f in fields if hasattr(m, f)]
    return "memory analysis (per device): " + " ".join(parts)


def step_flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one step per device from XLA's cost analysis (0.0 if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return 0.0
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))
