"""Train Hour-LLaVA (SPEC §2): ``python launch/train.py --config configs/train/tiny.yaml
--workdir /tmp/run [--set key=value ...]``.

Resumes automatically from the latest complete checkpoint in ``--workdir``. On a TPU pod or
under SLURM run the same command on every host (``launch/tpu_pod.sh``, ``launch/slurm_gpu.sbatch``);
``docs/training.md`` has the details.

The model/loss/data factories below are the only model-specific part: ``model: <preset>``
builds Hour-LLaVA (``configs/model/<preset>.yaml`` + ``model_overrides``) fed by the grain
pipeline (``data.source: features | videos``); ``model: standin`` builds a small stand-in with
Hour-LLaVA's sub-module names on in-memory data, which the trainer's own tests use.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from hourllava_jax.config.base import ConfigError  # noqa: E402
from hourllava_jax.parallel import axes as ax  # noqa: E402
from hourllava_jax.parallel.rules import constrain  # noqa: E402
from hourllava_jax.train.config import TrainConfig, load_train_config  # noqa: E402

# ==================================================================================================
# The stand-in model (trainer tests: compiles in a second, same sub-module names as Hour-LLaVA)
# ==================================================================================================

STANDIN_FEATURES = (4, 8)  # features float32[B, 4 frames, 8] per record


class _Linear(nnx.Module):
    """``y = x @ w + b`` with ``w float[din, dout]`` carrying logical axes ``axes``."""

    def __init__(self, din: int, dout: int, axes: tuple[str, str], rngs: nnx.Rngs):
        self.w = nnx.Param(ax.param_init(nnx.initializers.normal(0.2), axes)(rngs.params(), (din, dout)))
        self.b = nnx.Param(ax.param_init(nnx.initializers.normal(0.02), (axes[1],))(rngs.params(), (dout,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w[...] + self.b[...]


class _Pair(nnx.Module):
    def __init__(self, d: int, h: int, rngs: nnx.Rngs):
        self.fc1 = _Linear(d, h, (ax.EMBED, ax.MLP), rngs)
        self.fc2 = _Linear(h, d, (ax.MLP, ax.EMBED), rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class _StandInLLM(nnx.Module):
    def __init__(self, vocab: int, d: int, h: int, rngs: nnx.Rngs):
        self.embed = nnx.Param(ax.param_init(nnx.initializers.normal(1.0), (ax.VOCAB, ax.EMBED))(rngs.params(), (vocab, d)))
        self.mlp = _Pair(d, h, rngs)
        self.norm = nnx.Param(ax.param_init(nnx.initializers.ones, (ax.NORM,))(rngs.params(), (d,)))
        self.lm_head = _Linear(d, vocab, (ax.EMBED, ax.VOCAB), rngs)


class StandInModel(nnx.Module):
    """Two-layer-ish toy with Hour-LLaVA's top-level names, so per-module rules apply:
    ``vision_tower`` -> ``projector`` (+ ``image_newline``) -> ``memaug`` -> context added to
    the ``llm`` token embeddings -> MLP block -> logits ``float32[B, S, V]``."""

    def __init__(self, rngs: nnx.Rngs, vocab: int = 64, d: int = 32, h: int = 64, feat: int = STANDIN_FEATURES[1]):
        self.vision_tower = _Linear(feat, h, (ax.EMBED, ax.MLP), rngs)
        self.projector = _Linear(h, d, (ax.MLP, ax.EMBED), rngs)
        self.image_newline = nnx.Param(ax.param_init(nnx.initializers.normal(0.02), (ax.EMBED,))(rngs.params(), (d,)))
        self.memaug = _Pair(d, h, rngs)
        self.llm = _StandInLLM(vocab, d, h, rngs)

    def __call__(self, input_ids: jax.Array, features: jax.Array) -> jax.Array:
        v = self.projector(jax.nn.gelu(self.vision_tower(features))) + self.image_newline[...]  # [B, F, D]
        v = v + self.memaug(v)
        x = self.llm.embed[...][input_ids] + v.mean(axis=1, keepdims=True)  # [B, S, D]
        x = constrain(x, (ax.BATCH, ax.SEQ, ax.ACT_EMBED))
        norm = lambda y: y * jax.lax.rsqrt((y.astype(jnp.float32) ** 2).mean(-1, keepdims=True) + 1e-6).astype(y.dtype) * self.llm.norm[...]  # noqa: E731
        x = x + self.llm.mlp(norm(x))
        return self.llm.lm_head(norm(x)).astype(jnp.float32)


def standin_loss(model: StandInModel, batch: dict[str, jax.Array], rng: jax.Array):
    """Mean token cross-entropy over labels != -100 (SPEC §3 'Loss') plus the per-row terms the
    trainer's ``loss_reduction`` reduces; ``rng`` unused here."""
    del rng
    logits = model(batch["input_ids"], batch["features"].astype(model.image_newline[...].dtype))
    labels = batch["labels"]
    mask = labels != -100
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, labels, 0))
    row_ce, row_n = (ce * mask).sum(-1), mask.sum(-1).astype(jnp.float32)
    n = jnp.maximum(mask.sum(), 1)
    return row_ce.sum() / n, {"tokens": row_n.sum(), "sample_ce": row_ce, "sample_tokens": row_n}


def model_config(cfg: TrainConfig):
    """The Hour-LLaVA config of a train config: preset + overrides, the stage's forgetting
    (SPEC §2: spatial only in stage 1) and training spatial mode, max length and compute dtype."""
    import dataclasses

    from hourllava_jax.config import load_model_config

    mcfg = load_model_config(cfg.model, list(cfg.model_overrides))
    memory = dataclasses.replace(mcfg.memory, temporal_forgetting=cfg.forgetting == "spatial+temporal",
                                 spatial_mode=cfg.spatial_mode)
    return dataclasses.replace(mcfg, memory=memory, max_length=cfg.max_length, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype)


def build_model_and_loss(cfg: TrainConfig):
    """``(model_factory(rngs) -> nnx.Module, loss_fn(model, batch, rng) -> (loss, aux))``."""
    if cfg.model == "standin":
        vocab = cfg.data.vocab_size
        return (lambda rngs: StandInModel(rngs, vocab=vocab)), standin_loss
    from hourllava_jax.model.hour_llava import HourLlava, loss_fn

    mcfg = model_config(cfg)
    return (lambda rngs: HourLlava(mcfg, rngs=rngs, remat=cfg.remat, vision_grad_max_frames=cfg.vision_grad_max_frames)), loss_fn


def build_data(cfg: TrainConfig, process_index: int, process_count: int):
    """The per-process batch iterator (``get_state``/``set_state``; rows ``global / processes``)."""
    d = cfg.data
    if d.source == "synthetic":
        from hourllava_jax.train.data_iter import InMemoryIterator, synthetic_records

        records = synthetic_records(d.num_records, d.seq_len, d.vocab_size, feature_shape=STANDIN_FEATURES, seed=d.seed)
        return InMemoryIterator(records, cfg.global_batch_size, process_index=process_index,
                                process_count=process_count, shuffle=d.shuffle, seed=d.seed)
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

    def pipeline(records: list[str], cache: str | None):
        return make_feature_pipeline(
            RecordSource(records), tokenizer_dir=d.tokenizer, memory=mcfg.memory, cfg=pcfg,
            store_dir=None if raw else d.feature_store, video_root=d.video_root if raw else None,
            image_size=vision.image_size if raw or d.image_root else None, image_root=d.image_root or None,
            image_tokens_per_side=vision.image_size // vision.patch_size if d.image_root else None,
            shard_options=grain.sharding.ShardOptions(shard_index=process_index, shard_count=process_count, drop_remainder=True),
            meta_cache=cache,
        )

    if not d.record_weights:
        return pipeline(list(d.records), d.meta_cache or None)
    # One pipeline per record file (each with its own metadata cache), mixed batch by batch.
    parts = [pipeline([r], f"{d.meta_cache}.{i}" if d.meta_cache else None) for i, r in enumerate(d.records)]
    return mix_pipelines(parts, list(d.record_weights))


def derive_num_steps(cfg: TrainConfig, data) -> TrainConfig:
    """``cfg`` with ``num_steps`` = the global batches of ``data.num_epochs`` passes over the
    records (one optimizer step per global batch; the release trains one epoch per stage).
    ``data`` is :func:`build_data`'s pipeline; a weighted mixture or synthetic data has no end,
    so it needs ``num_steps``. Raises ConfigError."""
    import dataclasses

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


# ==================================================================================================
# Command line
# ==================================================================================================


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="train YAML (configs/train/*.yaml) or preset name")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/, profile/")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides (e.g. --set num_steps=10 optim.modules.llm.lr=1.0e-5; repeatable)")
    p.add_argument("--coordinator", help="host:port of process 0 (only where jax cannot auto-detect the cluster)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--compile-cache", default=os.environ.get("HOURLLAVA_JAX_CACHE"),
                   help="persistent XLA compile cache directory (default: $HOURLLAVA_JAX_CACHE; none if unset)")
    p.add_argument("--stop-after", type=int, help="stop after this many steps of this run (checkpoint saved)")
    p.add_argument("--debug-step-sleep", type=float, default=0.0, help=argparse.SUPPRESS)  # test hook
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from hourllava_jax.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from hourllava_jax.train.loop import train

    data_factory = build_data
    try:
        cfg = load_train_config(args.config, args.overrides)
        cfg.data.check_sources()
        if cfg.num_steps is None:  # one data pipeline, built here to count its batches, then trained on
            data = build_data(cfg, jax.process_index(), jax.process_count())
            cfg = derive_num_steps(cfg, data)
            data_factory = lambda *_: data  # noqa: E731
    except ConfigError as e:  # a config mistake deserves one line, not a traceback
        print(f"config error: {e}", file=sys.stderr)
        return 2
    factory, loss_fn = build_model_and_loss(cfg)
    hook = None
    if args.debug_step_sleep > 0:
        import time

        hook = lambda step: time.sleep(args.debug_step_sleep)  # noqa: E731
    result = train(cfg, args.workdir, factory, loss_fn, data_factory, stop_after=args.stop_after, step_hook=hook)
    if jax.process_index() == 0:
        print(f"done: step {int(result.state.step)} loss {result.last_metrics.get('loss')}", flush=True)
    # 128 + SIGTERM: the run stopped early but cleanly; schedulers should requeue it.
    return 143 if result.preempted else 0


if __name__ == "__main__":
    sys.exit(main())
