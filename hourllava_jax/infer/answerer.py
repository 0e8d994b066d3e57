"""The model answerer of the evaluation runner (docs/evaluation.md, ``eval/items.py`` protocol).

``load_answerer(checkpoint)`` -> :class:`ModelAnswerer` over a :class:`~hourllava_jax.infer.pipeline.VideoQA`:

* ``answer(item)``: the video is encoded once (memory cache; the runner sends a video's
  questions consecutively and calls ``release_video`` after the last), the user text is
  ``eval.prompt.build_prompt(item, timestamps)`` (subtitles filtered to the sampled frames),
  the time instruction and ChatML are added by the pipeline (design §4), greedy generation.
* ``option_loglikelihoods(item)``: log p(continuation_i | video, prompt) for every option,
  teacher-forced: the prompt is prefilled once into the KV cache and all options go through one
  batched forward on top of it. The visual tokens come from the prompt alone (MemAug's query is
  the prompt, design §2.4, exactly as when generating); each option's tokens follow the prompt's
  last valid token. The continuation is ``"{letter}. {option}"`` by default (what the prompt
  asks for, followed by the option's own tokens; ``target="letter"`` / ``"option"`` score the
  letter or the text alone). Scores are sums over the continuation's tokens (lmms-eval's
  convention).

Settings without a command-line flag in ``launch/evaluate.py`` come from the environment:
``HOURLLAVA_TOKENIZER`` (tokenizer directory, default: the checkpoint), ``HOURLLAVA_CACHE_DIR``
(on-disk feature cache, default: none), ``HOURLLAVA_MAX_NEW_TOKENS`` (default 16).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.eval.items import LETTERS, EvalItem, Prediction
from hourllava_jax.eval.prompt import build_prompt
from hourllava_jax.infer.generate import prefill
from hourllava_jax.infer.pipeline import VideoQA

Target = Literal["letter_option", "letter", "option"]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _continuation_logprobs(graphdef, state, embeds, valid, cont_ids, cont_mask):
    """Teacher-forced log-probabilities of B continuations of one prompt.

    embeds float[1, Lo, H] / valid bool[1, Lo]: the prompt's LLM input; cont_ids int32[B, Lc],
    cont_mask bool[B, Lc] (valid first). The prompt is prefilled once into the KV cache, which
    is shared by the B rows of one forward over the continuations. Returns float32[B, Lc]:
    log p(cont[b, j] | prompt, cont[b, :j]), 0 where masked.
    """
    llm = nnx.merge(graphdef, state)
    b, lc = cont_ids.shape
    logits0, cache, pos0 = prefill(llm, None, embeds, valid, embeds.shape[1] + lc)
    cache = jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape[1:]) if x.ndim else x, cache)
    positions = pos0[0] + jnp.broadcast_to(jnp.arange(lc, dtype=jnp.int32), (b, lc))
    hidden, _ = llm.hidden_states(inputs_embeds=llm.embed(cont_ids), positions=positions, attention_mask=cont_mask, cache=cache)
    # Token j is predicted by the prompt's last logits (j = 0) or by continuation token j - 1.
    first = jnp.broadcast_to(logits0[:, None, :], (b, 1, logits0.shape[-1]))
    logits = jnp.concatenate([first, llm.logits(hidden[:, :-1]).astype(jnp.float32)], axis=1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    tok = jnp.take_along_axis(logp, cont_ids[..., None], axis=-1)[..., 0]
    return jnp.where(cont_mask, tok, 0.0)


class ModelAnswerer:
    """Implements the ``Answerer`` protocol with a :class:`VideoQA` (module docstring)."""

    def __init__(self, qa: VideoQA, *, max_new_tokens: int = 16, target: Target = "letter_option", cont_bucket: int = 16):
        if target not in ("letter_option", "letter", "option"):
            raise ValueError(f"target must be letter_option, letter or option, got {target!r}")
        self.qa, self.max_new_tokens, self.target, self.cont_bucket = qa, max_new_tokens, target, cont_bucket

    def answer(self, item: EvalItem) -> Prediction:
        enc, _ = self.qa.encode(item.video)
        ans = self.qa.answer_encoded(enc, build_prompt(item, enc.timestamps.tolist()), max_new_tokens=self.max_new_tokens)
        return Prediction(ans.text, tuple(int(i) for i in enc.frame_indices), tuple(float(t) for t in enc.timestamps))

    def continuation(self, letter: str, option: str) -> str:
        return {"letter_option": f"{letter}. {option}", "letter": letter, "option": option}[self.target]

    def option_loglikelihoods(self, item: EvalItem) -> Prediction:
        qa = self.qa
        enc, _ = qa.encode(item.video)
        embeds, valid = qa.llm_inputs([qa.prompt_ids(build_prompt(item, enc.timestamps.tolist()), enc)], enc)
        conts = [qa.tokenizer.encode(self.continuation(LETTERS[i], o), add_special_tokens=False) for i, o in enumerate(item.options)]
        if not all(conts):
            raise ValueError(f"{item.key}: an option tokenizes to nothing")
        lc = max(self.cont_bucket, -(-max(map(len, conts)) // self.cont_bucket) * self.cont_bucket)
        ids = np.full((len(conts), lc), qa.pad_id, np.int32)
        mask = np.zeros((len(conts), lc), bool)
        for i, c in enumerate(conts):
            ids[i, : len(c)], mask[i, : len(c)] = c, True
        g, s = nnx.split(qa.model.llm)
        lp = _continuation_logprobs(g, s, embeds, valid, jnp.asarray(ids), jnp.asarray(mask))
        scores = np.asarray(lp, np.float64).sum(axis=1)
        return Prediction("", tuple(int(i) for i in enc.frame_indices), tuple(float(t) for t in enc.timestamps),
                          option_loglikelihoods=tuple(float(x) for x in scores))

    def release_video(self, video: str) -> None:
        self.qa.release_video(video)


def load_answerer(checkpoint: Path, *, tokenizer_dir: Path | None = None, cache_dir: Path | None = None,
                  max_new_tokens: int | None = None, **kwargs) -> ModelAnswerer:
    """The evaluation answerer of an Hour-LLaVA HF checkpoint directory (module docstring for
    the environment defaults). Extra keyword arguments go to :class:`VideoQA`."""
    tokenizer_dir = tokenizer_dir or os.environ.get("HOURLLAVA_TOKENIZER") or None
    cache_dir = cache_dir or os.environ.get("HOURLLAVA_CACHE_DIR") or None
    if max_new_tokens is None:
        max_new_tokens = int(os.environ.get("HOURLLAVA_MAX_NEW_TOKENS", "16"))
    qa = VideoQA.from_pretrained(checkpoint, tokenizer_dir, cache_dir=cache_dir, **kwargs)
    return ModelAnswerer(qa, max_new_tokens=max_new_tokens)


__all__ = ["ModelAnswerer", "load_answerer"]
