"""The training loop (design §3): mesh -> init or resume -> AOT compile -> iterate, log, checkpoint.

Model-agnostic: it takes a model factory ``factory(nnx.Rngs) -> nnx.Module``, a loss
``loss_fn(model, batch, rng) -> (loss, aux)`` and a data factory
``data_factory(cfg, process_index, process_count)`` returning an iterator of process-local
numpy batches with ``get_state()/set_state()``, and optionally a Hugging Face parameter loader
for ``init.from`` (``train/warm_start.py``). ``hourllava_jax/cli/train.py`` wires the real ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from hourllava_jax.config.base import save_yaml, to_dict
from hourllava_jax.parallel.mesh import batch_axes, make_mesh
from hourllava_jax.parallel.rules import use_rules
from hourllava_jax.train import distributed
from hourllava_jax.train.checkpoint import Checkpointer, PreemptionGuard
from hourllava_jax.train.config import TrainConfig
from hourllava_jax.train.metrics import MetricsLogger, mfu
from hourllava_jax.train.optimizer import trainable_mask
from hourllava_jax.train.state import ModelFactory, TrainState, create_train_state, materialise_rest
from hourllava_jax.train.step import LossFn, compile_step, make_train_step, step_flops
from hourllava_jax.train.warm_start import HFParamLoader, warm_start

DataFactory = Callable[[TrainConfig, int, int], Iterator[dict[str, np.ndarray]]]


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    last_metrics: dict[str, Any]
    preempted: bool  # stopped by SIGTERM after saving the current step
    resumed_from: int | None  # checkpoint step the run started from (None: fresh init)
    initialised_from: str | None = None  # init.from, when a fresh run started from it
    exported: Path | None = None  # set by the entry point when it exported the run (export_hf)


def _host(metrics: dict[str, jax.Array]) -> dict[str, Any]:
    return {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}


def train(
    cfg: TrainConfig,
    workdir: str | Path,
    factory: ModelFactory,
    loss_fn: LossFn,
    data_factory: DataFactory,
    *,
    mesh: Mesh | None = None,
    stop_after: int | None = None,
    step_hook: Callable[[int], None] | None = None,
    hf_params: HFParamLoader | None = None,
) -> TrainResult:
    """Trains to ``cfg.num_steps`` (or ``stop_after`` steps of this run), resuming from
    ``<workdir>/checkpoints`` when a checkpoint exists; a fresh run takes its parameters from
    ``cfg.init.source`` when set (``hf_params`` reads Hugging Face directories). ``step_hook(step)``
    runs after each step (tests use it to slow a run down or to raise)."""
    workdir = Path(workdir)
    mesh = make_mesh(cfg.mesh) if mesh is None else mesh
    pidx, pcount = jax.process_index(), jax.process_count()
    if pidx == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, workdir / "train_config.yaml")
    shards = int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))
    if cfg.micro_batch_size % shards:
        raise ValueError(f"micro-batch {cfg.micro_batch_size} (= {cfg.global_batch_size} / {cfg.grad_accum_steps}) "
                         f"does not split over the {shards} batch shards (data x fsdp) of mesh {dict(mesh.shape)}")
    distributed.check_process_rows(mesh, cfg.global_batch_size)

    with use_rules(cfg.rules):
        # ---------------------------------------------------------------- init or resume
        ini = create_train_state(cfg, mesh, factory)
        ckpt = Checkpointer(workdir / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
                            async_save=cfg.checkpoint.async_save)
        data = data_factory(cfg, pidx, pcount)
        restored = ckpt.restore_latest(ini.abstract_state)
        initialised_from = None
        if restored is None:
            state, resumed_from = ini.init(), None
            if cfg.init.source:
                state = warm_start(cfg, state, ini.abstract_state.params, hf_params)
                initialised_from = cfg.init.source
        else:
            state, data_state, resumed_from = restored
            data.set_state(data_state)
            if pidx == 0:
                # Resume wins: init.from describes where the run started, not where it is.
                ignored = f" (init.from={cfg.init.source} ignored: the workdir has a checkpoint)" if cfg.init.source else ""
                print(f"resumed from checkpoint {resumed_from}{ignored}", flush=True)

        # ---------------------------------------------------------------- compile
        rest = materialise_rest(ini.parts, factory, mesh, cfg.seed)
        mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
        step_fn = make_train_step(ini.parts, rest, ini.tx, loss_fn, mask, compute_dtype=jnp.dtype(cfg.compute_dtype),
                                  grad_accum_steps=cfg.grad_accum_steps,
                                  loss_reduction=cfg.loss_reduction, loss_group_size=cfg.loss_group_size)
        # One program per batch shape: the data pipeline buckets frame counts and lengths, so a
        # run sees a handful of shapes; each is compiled ahead of time on first sight.
        programs: dict[tuple, tuple[Any, float, int]] = {}

        def program(batch: dict[str, np.ndarray]) -> tuple[Any, float, int]:
            key = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch.items()))
            if key not in programs:
                spec = {k: jax.ShapeDtypeStruct((v.shape[0] * pcount, *v.shape[1:]), v.dtype) for k, v in batch.items()}
                t0 = time.perf_counter()
                compiled = compile_step(step_fn, mesh, ini.abstract_state, ini.shardings, spec)
                flops = step_flops(compiled)
                tokens = int(np.prod(spec["input_ids"].shape)) if "input_ids" in spec else 0
                programs[key] = (compiled, flops, tokens)
                if pidx == 0:
                    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in spec.items())
                    print(f"compiled train step #{len(programs)} in {time.perf_counter() - t0:.1f}s; "
                          f"{flops:.3e} FLOPs/step/device; batch {shapes}", flush=True)
            return programs[key]

        first = next(data)
        program(first)

        # ---------------------------------------------------------------- iterate
        start = int(jax.device_get(state.step))
        end = cfg.total_steps if stop_after is None else min(cfg.total_steps, start + stop_after)
        logger = MetricsLogger(workdir, total_steps=cfg.total_steps, start_step=start, tensorboard=cfg.tensorboard,
                               wandb_project=cfg.wandb_project, config=to_dict(cfg))
        guard = PreemptionGuard().install()
        prof = cfg.profile
        profiling = False
        last: dict[str, Any] = {}
        preempted = False
        t_last, s_last = time.perf_counter(), start
        batch = first
        try:
            for s in range(start, end):
                if prof.num_steps and s == prof.start_step and not profiling:
                    jax.profiler.start_trace(str(workdir / "profile"))
                    profiling = True
                if batch is None:
                    batch = next(data)
                compiled, flops, tokens_per_step = program(batch)
                state, metrics = compiled(state, distributed.global_batch(batch, mesh))
                batch = None
                n = s + 1
                if profiling and n >= prof.start_step + prof.num_steps:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    profiling = False
                if n % cfg.log_every == 0 or n == end:
                    last = _host(metrics)  # blocks: step time below covers the steps since the last log
                    now = time.perf_counter()
                    dt = (now - t_last) / max(n - s_last, 1)
                    t_last, s_last = now, n
                    last.update(step_time_s=dt, tokens_per_s=tokens_per_step / dt if dt > 0 else 0.0,
                                mfu=mfu(flops, dt, cfg.peak_flops_per_device))
                    logger.log(n, last)
                logger.advance()
                if ckpt.due(n):  # get_state() only when needed: grain's is not free
                    ckpt.save(n, state, data.get_state())
                if step_hook is not None:
                    step_hook(n)
                if guard.requested():
                    ckpt.save(n, state, data.get_state(), force=True)
                    ckpt.wait()
                    preempted = True
                    if pidx == 0:
                        print(f"SIGTERM: saved checkpoint {n}, exiting", flush=True)
                    break
            else:
                ckpt.save(end, state, data.get_state(), force=True)
        finally:
            if profiling:
                jax.profiler.stop_trace()
            guard.uninstall()
            ckpt.close()
            logger.close()
    return TrainResult(state, last, preempted, resumed_from, initialised_from)
