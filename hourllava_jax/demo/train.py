"""The demo's training loop: stage-3 recipe on in-memory batches, one compiled step.

Stage 3 (design §3.1): projector, MemAug, LLM and ``image_newline`` train, the vision tower is
frozen (features are pre-extracted, so it is not even on the path). The optimizer is the
project's (``train/optimizer.py``: per-module AdamW groups, warmup + cosine, global-norm clip).
The step follows design §7.1: ``nnx.split`` into trained params and the rest,
``jax.value_and_grad`` of a function that merges them, inside one ``jax.jit`` with the params
and optimizer state donated.

Kept deliberately small instead of running ``train/loop.py``: the demo trains two variants
back to back on a CPU in minutes, with all data in memory; metrics go to the same
``metrics.jsonl`` / TensorBoard writer the trainer uses and the final state to an orbax
checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.model.hour_llava import HourLlava, loss_fn
from hourllava_jax.train.config import ModuleOptim, OptimConfig, TrainConfig
from hourllava_jax.train.metrics import MetricsLogger
from hourllava_jax.train.optimizer import current_lrs, make_optimizer

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the demo trains with (the values found by prototyping are the defaults)."""

    steps: int = 1500
    batch_size: int = 16
    lr_projector: float = 3e-3
    lr_memaug: float = 3e-3
    lr_llm: float = 3e-3
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    # Adam's second-moment decay. With 0.999 the large gradients of the first steps (while the
    # chat-format tokens are learned) keep shrinking later updates for ~1000 steps; 0.95 forgets
    # them in ~20. A small gain in prototyping (docs/demo.md), kept.
    b2: float = 0.95

    def train_config(self) -> TrainConfig:
        """The trainer's config for these values (only the optimizer fields are read here)."""
        mods = {
            "vision_tower": ModuleOptim(trainable=False),
            "projector": ModuleOptim(True, self.lr_projector),
            "memaug": ModuleOptim(True, self.lr_memaug),
            "llm": ModuleOptim(True, self.lr_llm),
            "image_newline": ModuleOptim(True, self.lr_llm),
        }
        optim = OptimConfig(modules=mods, warmup_ratio=self.warmup_ratio, schedule="cosine", grad_clip=self.grad_clip,
                            b2=self.b2)
        return TrainConfig(stage=3, model="tiny", optim=optim, global_batch_size=self.batch_size, num_steps=self.steps,
                           remat="none", compute_dtype="float32")


def _trained(path: tuple[Any, ...], _value: Any) -> bool:
    return "vision_tower" not in [str(p) for p in path]


TRAINED = nnx.All(nnx.Param, _trained)


def build_model(cfg: HourLlavaConfig, seed: int) -> HourLlava:
    """The tiny model; the same seed gives the same (frozen) vision tower with or without MemAug,
    since the tower is created first."""
    return HourLlava(cfg, rngs=nnx.Rngs(seed))


class Trainer:
    """Owns the split model and optimizer state; ``step(batch) -> metrics``."""

    def __init__(self, model: HourLlava, recipe: Recipe):
        self.recipe = recipe
        self.graphdef, self.params, self.rest = nnx.split(model, TRAINED, ...)
        self.tx = make_optimizer(recipe.train_config(), self.params)
        self.opt_state = self.tx.init(self.params)
        graphdef, tx = self.graphdef, self.tx

        def train_step(params, opt_state, rest, batch):
            def loss_of(p):
                loss, aux = loss_fn(nnx.merge(graphdef, p, rest), batch)
                return loss, aux

            (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "tokens": aux["tokens"]}
            metrics.update({f"lr/{k}": v for k, v in current_lrs(opt_state).items()})
            return params, opt_state, metrics

        self._step = jax.jit(train_step, donate_argnums=(0, 1))

    def step(self, batch: Batch) -> dict[str, jax.Array]:
        self.params, self.opt_state, metrics = self._step(self.params, self.opt_state, self.rest, batch)
        return metrics

    def model(self) -> HourLlava:
        return nnx.merge(self.graphdef, self.params, self.rest)

    def save(self, directory: str | Path) -> Path:
        """Orbax checkpoint of the trained params, the frozen rest and the optimizer state."""
        path = Path(directory).resolve()
        ckpt = ocp.StandardCheckpointer()
        state = {"params": nnx.to_pure_dict(self.params), "rest": nnx.to_pure_dict(self.rest), "opt_state": self.opt_state}
        ckpt.save(path, state, force=True)
        ckpt.wait_until_finished()
        ckpt.close()
        return path


def fit(trainer: Trainer, batches: Iterator[Batch], workdir: str | Path, *, log_every: int = 10,
        on_step: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Runs ``trainer.recipe.steps`` steps; metrics.jsonl + TensorBoard under ``workdir``."""
    steps = trainer.recipe.steps
    logger = MetricsLogger(workdir, total_steps=steps, tensorboard=True, progress=progress)
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    try:
        for step in range(1, steps + 1):
            ts = time.perf_counter()
            metrics = trainer.step(next(batches))
            if step % log_every == 0 or step == steps or step == 1:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last["step_time_s"] = time.perf_counter() - ts
                logger.log(step, last)
            logger.advance()
            if on_step is not None:
                on_step(step, last)
    finally:
        logger.close()
    return {"train_time_s": time.perf_counter() - t0, **last}


def forward_logits(model: HourLlava) -> Callable[[Batch], tuple[jax.Array, jax.Array]]:
    """Jitted ``batch -> (logits, labels)`` of ``model`` for evaluation."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b))
    return lambda batch: fn(state, batch)


__all__ = ["Recipe", "Trainer", "build_model", "fit", "forward_logits"]
