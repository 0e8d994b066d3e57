"""The trainer tests' stand-in model: compiles in a second, same top-level sub-module names as
Hour-LLaVA (so per-module freezing and learning rates apply), fed by the in-memory synthetic
iterator (``data.source: synthetic``). :data:`BUILDERS` plugs both into ``hourllava_jax.cli.train``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hourllava_jax.cli.train import Builders
from hourllava_jax.config.base import ConfigError
from hourllava_jax.parallel import axes as ax
from hourllava_jax.parallel.rules import constrain
from hourllava_jax.train.config import TrainConfig
from hourllava_jax.train.data_iter import InMemoryIterator, synthetic_records

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
    """Mean token cross-entropy over labels != -100 (design §4.4 'Loss') plus the per-row terms the
    trainer's ``loss_reduction`` reduces; ``rng`` unused here."""
    del rng
    logits = model(batch["input_ids"], batch["features"].astype(model.image_newline[...].dtype))
    labels = batch["labels"]
    mask = labels != -100
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, labels, 0))
    row_ce, row_n = (ce * mask).sum(-1), mask.sum(-1).astype(jnp.float32)
    n = jnp.maximum(mask.sum(), 1)
    return row_ce.sum() / n, {"tokens": row_n.sum(), "sample_ce": row_ce, "sample_tokens": row_n}


def build_model_and_loss(cfg: TrainConfig):
    """``(model_factory(rngs) -> StandInModel, standin_loss)`` for ``model: standin``."""
    if cfg.model != "standin":
        raise ConfigError(f"model={cfg.model!r}: the stand-in builders serve only model: standin")
    vocab = cfg.data.vocab_size
    return (lambda rngs: StandInModel(rngs, vocab=vocab)), standin_loss


def build_data(cfg: TrainConfig, process_index: int, process_count: int):
    """The in-memory synthetic iterator (``data.source: synthetic``)."""
    d = cfg.data
    if d.source != "synthetic":
        raise ConfigError(f"data.source={d.source!r}: the stand-in reads only data.source=synthetic")
    records = synthetic_records(d.num_records, d.seq_len, d.vocab_size, feature_shape=STANDIN_FEATURES, seed=d.seed)
    return InMemoryIterator(records, cfg.global_batch_size, process_index=process_index,
                            process_count=process_count, shuffle=d.shuffle, seed=d.seed)


BUILDERS = Builders(model_and_loss=build_model_and_loss, data=build_data, hf_params=None)
