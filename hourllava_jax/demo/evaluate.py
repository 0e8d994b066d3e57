"""Held-out needle accuracy by option scoring.

Each held-out item is fed in its training form (question and answer, teacher-forced). The LLM
is causal and MemAug's query holds only unlabelled tokens (design §2.4), so nothing at or after
the answer reaches the logit that predicts it: the log-likelihood of each single-token option
read at that logit is exactly the option's score, and the prediction is the best option.
(The release would query MemAug with the whole prompt at inference; here the query is the
training one, so evaluation measures what training taught.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.demo.dataset import NeedleItem, answer_options, by_length, needle_kept, option_token_ids, to_sample
from hourllava_jax.model.inputs import collate
from hourllava_jax.model.splice import IGNORE

# The assistant turn ends "<answer><|im_end|>\n": the answer is the third supervised token from the end.
_ANSWER_FROM_END = 3


@dataclasses.dataclass(frozen=True)
class Prediction:
    item_id: str
    length: int
    depth: float
    needle_frame: int
    kept: bool  # the needle's frame survives temporal forgetting
    correct: bool
    predicted: int
    answer: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@jax.jit
def answer_logits(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits float[B, V] predicting each sample's answer token, that token int32[B])."""
    sup = labels != IGNORE
    from_end = jnp.cumsum(sup[:, ::-1], axis=1)[:, ::-1]  # supervised tokens at or after each position
    pos = jnp.argmax(sup & (from_end == _ANSWER_FROM_END), axis=1)
    rows = jnp.arange(labels.shape[0])
    return logits[rows, pos - 1], labels[rows, pos]


def evaluate(items: Sequence[NeedleItem], forward: Callable, tokenizer, cfg: HourLlavaConfig, answer_format: str,
             collate_kw: dict[int, dict], *, batch_size: int = 16, on_batch: Callable[[int], None] | None = None
             ) -> list[Prediction]:
    """Predictions for every item, batched per length bucket (``collate_kw[T]``); a bucket's last
    batch is padded with repeats of its last item so every batch of a bucket has one shape."""
    out: list[Prediction] = []
    for t, group in by_length(items).items():
        out += _evaluate_bucket(group, forward, tokenizer, cfg, answer_format, collate_kw[t], batch_size, on_batch)
    return out


def _evaluate_bucket(items, forward, tokenizer, cfg, answer_format, collate_kw, batch_size, on_batch) -> list[Prediction]:
    out: list[Prediction] = []
    for i in range(0, len(items), batch_size):
        chunk = list(items[i : i + batch_size])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        batch = collate([to_sample(it, tokenizer, cfg, answer_format) for it in padded], **collate_kw)
        logits, labels = forward(batch)
        ans_logits, ans_tok = jax.device_get(answer_logits(logits, labels))
        for j, it in enumerate(chunk):
            opts, right = answer_options(it, answer_format)
            ids = option_token_ids(tokenizer, opts)
            if ans_tok[j] != ids[right]:
                raise AssertionError(f"{it.record.id}: scored position holds token {ans_tok[j]}, not the answer {ids[right]}")
            pred = int(np.argmax(ans_logits[j][ids]))
            out.append(Prediction(it.record.id, it.length, it.depth, it.needle_frame, needle_kept(it, cfg),
                                  pred == right, pred, right))
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def accuracy(preds: Sequence[Prediction]) -> float:
    return float(np.mean([p.correct for p in preds])) if preds else float("nan")
