"""The model answerer of the evaluation protocol (``eval/items.py``): Hour-LLaVA over :class:`VideoQA`.

``load_answerer(checkpoint, ...)`` -> :class:`ModelAnswerer` over a
:class:`~hourllava_jax.infer.pipeline.VideoQA` whose parameters are sharded over the local
devices (``local_mesh``: a ``tensor`` x ``fsdp`` mesh, the project's logical-axis rules), so a
7B model in bf16 fits on a TPU v5e-8 or a few GPUs. Each process uses its own devices only: a
multi-host evaluation runs one such process per host on its own shards (``eval/sharding.py``).

* ``answer(item)``: the video is encoded once (memory cache; the runner sends a video's
  questions consecutively and calls ``release_video`` after the last), the user text is
  ``eval.prompt.build_prompt(item, timestamps, style)`` (lmms-eval's per-benchmark prompt by
  default; subtitles filtered to the sampled frames), the time instruction and ChatML are added
  by the pipeline (design §4), greedy generation.
* ``option_loglikelihoods(item)``: log p(continuation_i | video, prompt) for every option,
  teacher-forced: the prompt is prefilled once into the KV cache and all options go through one
  batched forward on top of it. The visual tokens come from the prompt alone (MemAug's query is
  the prompt, design §2.4, exactly as when generating); each option's tokens follow the prompt's
  last valid token. The continuation is ``"{letter}. {option}"`` by default (what the prompt
  asks for, followed by the option's own tokens; ``target="letter"`` / ``"option"`` score the
  letter or the text alone). Scores are sums over the continuation's tokens (lmms-eval's
  convention).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.eval.items import LETTERS, EvalItem, Prediction
from hourllava_jax.eval.prompt import Style, build_prompt
from hourllava_jax.infer.generate import prefill
from hourllava_jax.infer.pipeline import VideoQA
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings

Target = Literal["letter_option", "letter", "option"]


def continuation(letter: str, option: str, target: Target = "letter_option") -> str:
    """The text scored for one option in log-likelihood mode (module docstring)."""
    return {"letter_option": f"{letter}. {option}", "letter": letter, "option": option}[target]


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
    """Implements the ``Answerer`` protocol with a :class:`VideoQA` (module docstring).

    ``mesh``: the mesh the parameters live on; calls run under ``jax.set_mesh(mesh)`` so the
    model's logical sharding constraints resolve against it (None: no mesh, one device).
    """

    def __init__(self, qa: VideoQA, *, max_new_tokens: int = 16, target: Target = "letter_option", cont_bucket: int = 16,
                 prompt: Style = "llava_vid", mesh: jax.sharding.Mesh | None = None):  # fmt: skip
        if target not in ("letter_option", "letter", "option"):
            raise ValueError(f"target must be letter_option, letter or option, got {target!r}")
        self.qa, self.max_new_tokens, self.target, self.cont_bucket = qa, max_new_tokens, target, cont_bucket
        self.prompt, self.mesh = prompt, mesh

    def _on_mesh(self):
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def answer(self, item: EvalItem) -> Prediction:
        with self._on_mesh():
            enc, _ = self.qa.encode(item.video)
            text = build_prompt(item, enc.timestamps.tolist(), self.prompt)
            ans = self.qa.answer_encoded(enc, text, max_new_tokens=self.max_new_tokens)
        return Prediction(ans.text, tuple(int(i) for i in enc.frame_indices), tuple(float(t) for t in enc.timestamps))

    def continuation(self, letter: str, option: str) -> str:
        return continuation(letter, option, self.target)

    def option_loglikelihoods(self, item: EvalItem) -> Prediction:
        qa = self.qa
        with self._on_mesh():
            enc, _ = qa.encode(item.video)
            embeds, valid = qa.llm_inputs([qa.prompt_ids(build_prompt(item, enc.timestamps.tolist(), self.prompt), enc)], enc)
            conts = [qa.tokenizer.encode(self.continuation(LETTERS[i], o), add_special_tokens=False)
                     for i, o in enumerate(item.options)]
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


def local_mesh(shape: Mapping[str, int] | None = None) -> jax.sharding.Mesh:
    """A mesh over this process's devices (default ``{"tensor": -1}``: every local device splits
    heads, MLP and vocabulary; ``fsdp`` splits the model width instead). Sizes without a ``-1``
    take the first that many local devices (``{"tensor": 1}``: one device). Local devices only:
    the evaluation shards questions across processes, not one model across hosts."""
    shape = dict(shape) if shape else {"tensor": -1}
    devices = jax.local_devices()
    if -1 not in shape.values():
        n = int(np.prod(list(shape.values())))
        if n > len(devices):
            raise ValueError(f"mesh {shape} needs {n} devices; this process has {len(devices)}")
        devices = devices[:n]
    return make_mesh(shape, devices)


def shard_params(model: nnx.Module, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES) -> None:
    """Puts every ``nnx.Param`` of ``model`` on ``mesh`` with the sharding its logical axes map to
    under ``rules`` (a dimension a mesh axis does not divide stays replicated, parallel/rules.py)."""
    state = nnx.state(model, nnx.Param)
    placed = jax.tree.map(jax.device_put, nnx.to_pure_dict(state), state_shardings(state, mesh, rules))
    nnx.replace_by_pure_dict(state, placed)
    nnx.update(model, state)


def _on_host(path: Any, array: np.ndarray) -> np.ndarray:
    # Staged in host memory, then placed shard by shard: the whole model never lands on one device.
    return array


def load_answerer(checkpoint: str | Path, *, tokenizer_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                  dtype: Any = jnp.float32, max_frames: int | None = None, max_new_tokens: int = 16,
                  prompt: Style = "llava_vid", mesh: jax.sharding.Mesh | None = None, **kwargs) -> ModelAnswerer:
    """The evaluation answerer of an Hour-LLaVA HF checkpoint directory.

    Args:
      checkpoint: the HF directory (``convert.load_pretrained``); its tokenizer is read from
        ``tokenizer_dir`` (default: the checkpoint directory).
      cache_dir: on-disk cache of encoded videos (default: memory only).
      dtype: parameter and compute dtype (``"bfloat16"`` halves the memory).
      max_frames: cap on sampled frames (default: none, design §3).
      mesh: where the parameters go (default :func:`local_mesh`, all local devices).
      Other keyword arguments go to :class:`VideoQA`.
    """
    from hourllava_jax.config import HourLlavaConfig
    from hourllava_jax.convert import load_pretrained
    from hourllava_jax.data.tokenizer import load_tokenizer
    from hourllava_jax.infer.memory_cache import MemoryCache

    mesh = local_mesh() if mesh is None else mesh
    config, model = load_pretrained(checkpoint, jnp.dtype(dtype), place=_on_host)
    if not isinstance(config, HourLlavaConfig):
        raise ValueError(f"{checkpoint}: not an Hour-LLaVA checkpoint (loaded a {type(config).__name__})")
    shard_params(model, mesh)
    qa = VideoQA(model, config, load_tokenizer(tokenizer_dir or checkpoint), cache=MemoryCache(cache_dir),
                 max_frames=max_frames, **kwargs)
    return ModelAnswerer(qa, max_new_tokens=max_new_tokens, prompt=prompt, mesh=mesh)


__all__ = ["ModelAnswerer", "load_answerer", "local_mesh", "shard_params"]
