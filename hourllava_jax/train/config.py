"""Typed training config (design §3): stage, per-module optimisation, batches, schedule,
checkpointing, logging, parallelism. Stage presets live in ``configs/train/*.yaml``.

The ``model`` field names a model preset (``configs/model/<name>.yaml``) and ``model_overrides``
holds ``key=value`` overrides for it; the launcher turns them into a model config.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from hourllava_jax.config.base import ALIAS, ConfigError, apply_overrides, from_dict, load_yaml_with_bases
from hourllava_jax.parallel.mesh import MESH_AXES
from hourllava_jax.parallel.rules import DEFAULT_RULES
from hourllava_jax.train.loss_reduction import LossReduction

Dtype = Literal["float32", "bfloat16"]
# Names the model's remat helper understands (jax.checkpoint_policies or "none"/"full").
RematPolicy = Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable"]
# Top-level sub-modules of Hour-LLaVA; parameters are grouped by the first of these in their path.
MODULES: tuple[str, ...] = ("vision_tower", "projector", "memaug", "llm", "image_newline")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class ModuleOptim:
    """One parameter group: trained with its own peak learning rate, or frozen."""

    trainable: bool = False
    lr: float = 0.0  # peak learning rate (after warmup); ignored when frozen


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW, warmup then cosine to 0, global-norm clipping (design §3.1 'Common')."""

    modules: dict[str, ModuleOptim] = dataclasses.field(default_factory=dict)
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0  # 0 disables
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def validate(self) -> None:
        _require(bool(self.modules), "optim.modules: list at least one module group")
        for name, m in self.modules.items():
            _require(not m.trainable or m.lr > 0, f"optim.modules.{name}: a trainable module needs lr > 0")
        _require(any(m.trainable for m in self.modules.values()), "optim.modules: nothing is trainable")
        _require(0 <= self.warmup_ratio < 1, "optim.warmup_ratio must be in [0, 1)")
        _require(self.grad_clip >= 0 and self.weight_decay >= 0, "optim: grad_clip and weight_decay must be >= 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to read.

    ``synthetic``: the in-memory iterator of the stand-in model (``train/data_iter.py``).
    ``features``: VideoMarathon-style JSON Lines ``records`` + a pre-extracted ``feature_store``
    through the grain pipeline (``data/pipeline.py``); ``videos``: the same records decoded from
    ``video_root`` at 1 FPS (stage 2, where SigLIP trains). With ``image_root``, image and
    multi-image records (LLaVA-OneVision layout, files under ``<image_root>/images/``) are served
    too, in batches of their own; without it they are skipped and counted. ``record_weights``
    (one per ``records`` file) mixes the files batch by batch in those proportions, e.g. ``[3, 1]``
    for the paper's long-to-short mix; empty: all files form one set. ``tfds``: a built
    ``videomarathon`` TFDS dataset (``tfds_name``, e.g. ``videomarathon/features``, under
    ``tfds_dir``, local or ``gs://``; ``hourllava-build-tfds`` writes it) through the same grain
    pipeline (``data/tfds_pipeline.py``). Paths are relative to the working directory of the launch.
    """

    source: Literal["synthetic", "features", "videos", "tfds"] = "synthetic"
    seq_len: int = 32  # synthetic only
    num_records: int = 256  # synthetic only
    vocab_size: int = 64  # synthetic only
    shuffle: bool = True
    seed: int = 0
    records: tuple[str, ...] = ()  # JSON Lines / JSON record files
    feature_store: str = ""
    video_root: str = ""
    image_root: str = ""
    record_weights: tuple[float, ...] = ()
    tokenizer: str = ""  # a Hugging Face tokenizer directory
    frame_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    max_frames: int | None = None
    text_multiple: int = 256
    decayed_multiple: int = 64
    long_video_seconds: float = 180.0
    max_text_tokens: int | None = None
    num_epochs: int | None = None  # None: repeat (reshuffled per epoch) until num_steps
    worker_count: int = 0
    meta_cache: str = ""  # JSON cache of the planning pass ("" = off)
    tfds_name: str = ""  # tfds only: "videomarathon/features" or "videomarathon/frames"[:VERSION]
    tfds_dir: str = ""  # tfds only: the data_dir it was built into (local or gs://; "" = TFDS default)
    tfds_split: str = "train"

    def check_sources(self) -> None:
        """Called by the launcher once overrides are applied (a YAML may leave paths to the command line)."""
        if self.source == "tfds":
            _require(bool(self.tfds_name) and bool(self.tokenizer), "data.source=tfds: data.tfds_name and data.tokenizer are required")
            _require(not self.records and not self.record_weights,
                     "data.source=tfds reads data.tfds_name: data.records / data.record_weights must be empty")
            return
        if self.source in ("features", "videos"):
            _require(bool(self.records) and bool(self.tokenizer), f"data.source={self.source}: data.records and data.tokenizer are required")
        _require(self.source != "features" or bool(self.feature_store), "data.source=features needs data.feature_store")
        _require(self.source != "videos" or bool(self.video_root), "data.source=videos needs data.video_root")
        _require(not self.record_weights or len(self.record_weights) == len(self.records),
                 f"data.record_weights has {len(self.record_weights)} weights for {len(self.records)} record files")
        _require(all(w > 0 for w in self.record_weights), "data.record_weights must be positive")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100  # save every N steps (and always at the end / on SIGTERM)
    keep: int = 3  # keep the last K complete checkpoints (>= 2 so a corrupt latest has a fallback)
    async_save: bool = True

    def validate(self) -> None:
        _require(self.every >= 1, "checkpoint.every must be >= 1")
        _require(self.keep >= 2, "checkpoint.keep must be >= 2 (the fallback for a corrupt latest checkpoint)")


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """``jax.profiler`` trace of steps [start_step, start_step + num_steps); 0 steps = off."""

    start_step: int = 0
    num_steps: int = 0


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where a fresh run's parameters come from (design §3.1: each stage starts from the previous one).

    YAML ``init: {from: DIR, step: N}``. ``from`` ("" = the model's own random init) is either a
    Hugging Face directory (``hourllava-convert compose`` output, or a full Hour-LLaVA checkpoint)
    or a training workdir (its newest complete checkpoint, or checkpoint ``step``). Parameters
    only: optimizer state, step and data position start fresh. Parameters the source lacks keep
    the model's init. Ignored when the run's own workdir already holds a checkpoint (resume wins).
    """

    source: str = dataclasses.field(default="", metadata={ALIAS: "from"})
    step: int | None = None  # workdir sources only; None = the newest complete checkpoint

    def validate(self) -> None:
        _require(self.step is None or self.step >= 0, f"init.step must be >= 0, got {self.step}")
        _require(self.step is None or bool(self.source), "init.step needs init.from (a training workdir)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    stage: int = 3
    model: str = "tiny"  # model preset name or YAML path (config.load_model_config)
    model_overrides: tuple[str, ...] = ()
    # design §3.1: stage 1 uses spatial forgetting only; stages 2-3 spatial + temporal.
    forgetting: Literal["spatial", "spatial+temporal"] = "spatial+temporal"
    # Spatial forgetting while training: the release passes --spatial_sampling_type random in every
    # stage (a fresh ceil(25%) subset per frame / image grid, design §2). The draw is keyed by
    # (data.seed, epoch, record index), so resume, host count and batching never change it.
    # Inference keeps the model preset's deterministic `uniform`.
    spatial_mode: Literal["random", "uniform"] = "random"
    # A sample with more frames than this gets no gradient through the vision tower, as the
    # release's encode_images_offload (no_grad beyond 128 frames); 0 trains through all frames.
    vision_grad_max_frames: int = 128
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    global_batch_size: int = 128  # sequences per optimizer step, all processes together
    grad_accum_steps: int = 1  # micro-batches per optimizer step (micro = global / accum)
    max_length: int = 32768
    # How token losses are averaged (train/loss_reduction.py). The release's: per_sample for 3B
    # (1 sample per device), per_device_group with loss_group_size 2 (stages 1-2) or 4 (stage 3) for 7B.
    loss_reduction: LossReduction = "per_sample"
    loss_group_size: int = 1  # rows per group (per_device_group only)
    # Optimizer steps. None: derived by the launcher from the data (data.num_epochs passes over the
    # records, one step per global batch) and logged; the release trains 1 epoch per stage.
    num_steps: int | None = None
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    log_every: int = 10
    remat: RematPolicy = "full"  # gradient checkpointing (design §3.1); the model reads the name
    compute_dtype: Dtype = "bfloat16"  # params are cast to this inside the step; masters stay fp32
    param_dtype: Dtype = "float32"
    mesh: dict[str, int] = dataclasses.field(default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1, "memory": 1})
    rules: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RULES))
    profile: ProfileConfig = dataclasses.field(default_factory=ProfileConfig)
    peak_flops_per_device: float = 0.0  # for MFU; 0 = not reported (e.g. 197e12 for TPU v5e bf16)
    tensorboard: bool = True
    wandb_project: str = ""  # "" = off; used only if wandb is importable
    seed: int = 0
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    # At the end of a completed run, write the Hugging Face layout (``hourllava-convert export``)
    # to ``export_dir`` ("" = ``<workdir>/hf``); the tokenizer is copied from ``data.tokenizer``.
    export_hf: bool = False
    export_dir: str = ""

    @property
    def micro_batch_size(self) -> int:
        return self.global_batch_size // self.grad_accum_steps

    @property
    def warmup_steps(self) -> int:
        # HF Trainer: ceil(num_training_steps * warmup_ratio).
        return math.ceil(self.total_steps * self.optim.warmup_ratio)

    @property
    def total_steps(self) -> int:
        """``num_steps``, which must be known (given, or derived from the data by the launcher)."""
        _require(self.num_steps is not None, "num_steps: not set; give it, or let the launcher derive it from "
                 "data.num_epochs passes over the records")
        return int(self.num_steps)

    def validate(self) -> None:
        _require(self.stage in (1, 2, 3), f"stage must be 1, 2 or 3, got {self.stage}")
        _require(self.global_batch_size >= 1 and self.grad_accum_steps >= 1, "batch sizes must be >= 1")
        _require(self.global_batch_size % self.grad_accum_steps == 0,
                 f"global_batch_size {self.global_batch_size} must divide by grad_accum_steps {self.grad_accum_steps}")
        _require((self.num_steps is None or self.num_steps >= 1) and self.log_every >= 1, "num_steps and log_every must be >= 1")
        _require(self.loss_group_size >= 1, "loss_group_size must be >= 1")
        _require(self.vision_grad_max_frames >= 0, "vision_grad_max_frames must be >= 0 (0: train through all frames)")
        _require(self.loss_reduction != "per_device_group" or self.micro_batch_size % self.loss_group_size == 0,
                 f"loss_group_size {self.loss_group_size} must divide the micro-batch of {self.micro_batch_size} rows "
                 f"(global_batch_size / grad_accum_steps) for loss_reduction=per_device_group")
        bad = sorted(set(self.mesh) - set(MESH_AXES))
        _require(not bad, f"mesh: unknown axes {bad}; valid {list(MESH_AXES)}")
        for name, axes in self.rules.items():
            bad = sorted(set(axes) - set(MESH_AXES))
            _require(not bad, f"rules.{name}: unknown mesh axes {bad}")
        unknown = sorted(set(self.optim.modules) - set(MODULES))
        _require(not unknown, f"optim.modules: unknown module(s) {unknown}; Hour-LLaVA has {list(MODULES)}")


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Reads a train YAML (``configs/train/*.yaml`` or a path; a ``base:`` key names the file it
    extends, see ``config.base.load_yaml_with_bases``) and applies ``key=value`` overrides."""
    p = Path(path)
    if not p.is_file():
        from hourllava_jax.config import resolve_config_path

        p = resolve_config_path(str(path), "train")
    cfg = from_dict(TrainConfig, load_yaml_with_bases(p), where=str(p))
    return apply_overrides(cfg, overrides)


def model_config(cfg: TrainConfig):
    """The Hour-LLaVA config (``config.HourLlavaConfig``) a train config trains: preset +
    overrides, the stage's forgetting (design §3.1: spatial only in stage 1) and training spatial
    mode, max length and dtypes."""
    from hourllava_jax.config import load_model_config

    mcfg = load_model_config(cfg.model, list(cfg.model_overrides))
    memory = dataclasses.replace(mcfg.memory, temporal_forgetting=cfg.forgetting == "spatial+temporal",
                                 spatial_mode=cfg.spatial_mode)
    return dataclasses.replace(mcfg, memory=memory, max_length=cfg.max_length, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype)
