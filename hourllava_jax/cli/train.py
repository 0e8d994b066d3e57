"""Train Hour-LLaVA (design §3): ``python launch/train.py --config configs/train/tiny.yaml
--workdir /tmp/run [--set key=value ...]``.

Resumes automatically from the latest complete checkpoint in ``--workdir``; a fresh run starts
from ``init.from`` when set (a ``hourllava-convert compose`` output, an Hour-LLaVA checkpoint or
the previous stage's workdir). On a TPU pod or under SLURM run the same command on every host
(``launch/tpu_pod.sh``, ``launch/slurm_gpu.sbatch``); ``docs/training.md`` has the details.

The builders below are the only model-specific part: ``model: <preset>`` builds Hour-LLaVA
(``configs/model/<preset>.yaml`` + ``model_overrides``) fed by the grain pipeline
(``data.source: features | videos``). Tests inject their own (``main(argv, builders=...)``).
In-process callers use :func:`run_training`, the code path of the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from hourllava_jax.config.base import ConfigError, apply_overrides
from hourllava_jax.convert.mapping import ConversionError
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu
from hourllava_jax.train.config import TrainConfig, load_train_config, model_config
from hourllava_jax.train.loop import DataFactory, TrainResult
from hourllava_jax.train.state import ModelFactory
from hourllava_jax.train.step import LossFn
from hourllava_jax.train.warm_start import HFParamLoader, LoadedParams, Targets

# ==================================================================================================
# Hour-LLaVA: model, loss, data
# ==================================================================================================


def build_model_and_loss(cfg: TrainConfig) -> tuple[ModelFactory, LossFn]:
    """``(model_factory(rngs) -> HourLlava, loss_fn(model, batch, rng) -> (loss, aux))``."""
    if cfg.model == "standin":
        raise ConfigError("model: standin is the trainer tests' stand-in; run it with tests/train/standin_main.py")
    from hourllava_jax.model.hour_llava import HourLlava, loss_fn

    mcfg = model_config(cfg)
    return (lambda rngs: HourLlava(mcfg, rngs=rngs, remat=cfg.remat, vision_grad_max_frames=cfg.vision_grad_max_frames)), loss_fn


def build_data(cfg: TrainConfig, process_index: int, process_count: int):
    """The per-process batch iterator (``get_state``/``set_state``; rows ``global / processes``)."""
    d = cfg.data
    if d.source == "synthetic":
        raise ConfigError("data.source=synthetic feeds only the trainer tests' stand-in model; "
                          "Hour-LLaVA reads data.source=features, videos or tfds")
    import grain

    from hourllava_jax.data.pipeline import PipelineConfig, RecordSource, make_feature_pipeline, mix_pipelines

    mcfg = model_config(cfg)
    pcfg = PipelineConfig(
        batch_size=cfg.global_batch_size // process_count, seed=d.seed, num_epochs=d.num_epochs, shuffle=d.shuffle,
        frame_buckets=d.frame_buckets, max_frames=d.max_frames, text_multiple=d.text_multiple,
        decayed_multiple=d.decayed_multiple, long_video_seconds=d.long_video_seconds, max_text_tokens=d.max_text_tokens,
        image_token_id=mcfg.image_token_id, pad_id=mcfg.llm.pad_token_id or 0, worker_count=d.worker_count,
    )
    raw = d.source == "videos"
    vision = mcfg.vision
    if d.source == "tfds":
        from hourllava_jax.data.tfds_pipeline import make_tfds_pipeline

        return make_tfds_pipeline(d.tfds_name, d.tfds_dir, split=d.tfds_split, tokenizer_dir=d.tokenizer, memory=mcfg.memory,
                                  cfg=pcfg, image_size=vision.image_size, meta_cache=d.meta_cache or None,
                                  shard_options=grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True))

    def pipeline(records: list[str], cache: str | None, seed: int = d.seed):
        return make_feature_pipeline(
            RecordSource(records), tokenizer_dir=d.tokenizer, memory=mcfg.memory, cfg=dataclasses.replace(pcfg, seed=seed),
            store_dir=None if raw else d.feature_store, video_root=d.video_root if raw else None,
            image_size=vision.image_size if raw or d.image_root else None, image_root=d.image_root or None,
            image_tokens_per_side=vision.image_size // vision.patch_size if d.image_root else None,
            shard_options=grain.sharding.ShardOptions(shard_index=process_index, shard_count=process_count, drop_remainder=True),
            meta_cache=cache,
        )

    if not d.record_weights:
        return pipeline(list(d.records), d.meta_cache or None)
    # One pipeline per record file (each with its own metadata cache and its own seed, so that
    # their shuffles and random forgetting draws are not the same), mixed batch by batch.
    parts = [pipeline([r], f"{d.meta_cache}.{i}" if d.meta_cache else None, component_seed(d.seed, i))
             for i, r in enumerate(d.records)]
    return mix_pipelines(parts, list(d.record_weights))


def component_seed(seed: int, index: int) -> int:
    """The data seed of record file ``index`` in a ``record_weights`` mixture (uint32, stable)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def load_hf_params(source: str, targets: Targets, dtype: str) -> LoadedParams:
    """``init.from`` a Hugging Face directory (``convert/init.py``: tensor by tensor onto the shardings)."""
    from hourllava_jax.convert.init import load_params_placed

    params, unused = load_params_placed(source, targets, dtype=dtype)
    return LoadedParams(params, tuple(unused), f"Hugging Face directory {source}")


def derive_num_steps(cfg: TrainConfig, data) -> TrainConfig:
    """``cfg`` with ``num_steps`` = the global batches of ``data.num_epochs`` passes over the
    records (one optimizer step per global batch; the release trains one epoch per stage).
    ``data`` is :func:`build_data`'s pipeline; a weighted mixture or synthetic data has no end,
    so it needs ``num_steps``. Raises ConfigError."""
    plan = getattr(data, "plan", None)
    if cfg.data.num_epochs is None or plan is None:
        raise ConfigError("num_steps: not given, and it is derived only from data.num_epochs passes over one record "
                          "set (not a data.record_weights mixture, not synthetic data): set num_steps")
    steps = len(plan)
    if steps < 1:
        raise ConfigError(f"num_steps: {len(plan.valid)} usable records make no global batch of {cfg.global_batch_size}")
    if jax.process_index() == 0:
        print(f"num_steps: {steps} derived from the data ({len(plan.valid)} usable records, {cfg.data.num_epochs} "
              f"epoch(s), global batch {cfg.global_batch_size}, {sum(plan.dropped_per_epoch)} dropped as epoch remainders)",
              flush=True)
    return dataclasses.replace(cfg, num_steps=steps)


@dataclasses.dataclass(frozen=True)
class Builders:
    """The model-specific part of a run, injected into ``train/loop.py``."""

    model_and_loss: Callable[[TrainConfig], tuple[ModelFactory, LossFn]] = build_model_and_loss
    data: DataFactory = build_data
    hf_params: HFParamLoader | None = load_hf_params  # init.from a Hugging Face directory


# ==================================================================================================
# In-process API (the command line below runs exactly this)
# ==================================================================================================


def resolve_config(config: str | Path | TrainConfig, overrides: Sequence[str] = ()) -> TrainConfig:
    """A train config from a YAML path / preset name (or as given) with ``key=value`` overrides."""
    if isinstance(config, TrainConfig):
        cfg = apply_overrides(config, list(overrides))
    else:
        cfg = load_train_config(config, list(overrides))
    cfg.data.check_sources()
    return cfg


def run_training(
    config: str | Path | TrainConfig,
    workdir: str | Path,
    overrides: Sequence[str] = (),
    *,
    builders: Builders | None = None,
    mesh=None,
    stop_after: int | None = None,
    step_hook: Callable[[int], None] | None = None,
) -> TrainResult:
    """Trains (or resumes) one run in this process; with ``export_hf`` a completed run is also
    exported (:func:`hourllava_jax.cli.export.export_workdir`). Raises ``ConfigError`` on a bad
    config. May be called several times in one process (each call builds its own state)."""
    from hourllava_jax.train.loop import train

    cfg = resolve_config(config, overrides)
    b = builders or Builders()
    data_factory = b.data
    if cfg.num_steps is None:  # one data pipeline, built here to count its batches, then trained on
        data = b.data(cfg, jax.process_index(), jax.process_count())
        cfg = derive_num_steps(cfg, data)
        data_factory = lambda *_: data  # noqa: E731
    factory, loss_fn = b.model_and_loss(cfg)
    result = train(cfg, workdir, factory, loss_fn, data_factory, mesh=mesh, stop_after=stop_after, step_hook=step_hook,
                   hf_params=b.hf_params)
    if cfg.export_hf and not result.preempted and int(jax.device_get(result.state.step)) >= cfg.num_steps:
        from hourllava_jax.cli.export import export_workdir

        out = Path(cfg.export_dir) if cfg.export_dir else Path(workdir) / "hf"
        result.exported = export_workdir(workdir, out, overwrite=True)
    return result


# ==================================================================================================
# Command line
# ==================================================================================================


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launch/train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="train YAML (configs/train/*.yaml) or preset name")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/, profile/")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides (e.g. --set num_steps=10 init.from=ckpt/s0; repeatable)")
    p.add_argument("--coordinator", help="host:port of process 0 (only where jax cannot auto-detect the cluster)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--compile-cache", default=os.environ.get("HOURLLAVA_JAX_CACHE"),
                   help="persistent XLA compile cache directory (default: $HOURLLAVA_JAX_CACHE; none if unset)")
    p.add_argument("--stop-after", type=int, help="stop after this many steps of this run (checkpoint saved)")
    p.add_argument("--debug-step-sleep", type=float, default=0.0, help=argparse.SUPPRESS)  # test hook
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, builders: Builders | None = None) -> int:
    keep_heap_for_cpu()
    args = parse_args(argv)
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from hourllava_jax.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    hook = None
    if args.debug_step_sleep > 0:
        import time

        hook = lambda step: time.sleep(args.debug_step_sleep)  # noqa: E731
    try:
        result = run_training(args.config, args.workdir, args.overrides, builders=builders,
                              stop_after=args.stop_after, step_hook=hook)
    except (ConfigError, ConversionError) as e:  # a config or checkpoint mistake: one line, not a traceback
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print(f"done: step {int(result.state.step)} loss {result.last_metrics.get('loss')}", flush=True)
        if result.exported is not None:
            print(f"exported {result.exported}", flush=True)
    # 128 + SIGTERM: the run stopped early but cleanly; schedulers should requeue it.
    return 143 if result.preempted else 0


if __name__ == "__main__":
    sys.exit(main())
