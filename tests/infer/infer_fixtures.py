"""Shared fixtures of the inference tests: the tiny model (random init), a small BPE tokenizer
with the Qwen2 special tokens, and tiny PyAV videos. Imported after ``sys.path`` has this folder
(the test tree has no packages), as ``tests/data/video_fixtures.py`` is."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
from flax import nnx

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from video_fixtures import write_video  # noqa: E402

from hourllava_jax.config import load_model_config  # noqa: E402
from hourllava_jax.data.tokenizer import build_tokenizer  # noqa: E402
from hourllava_jax.model.hour_llava import HourLlava  # noqa: E402

CORPUS = [
    "The video lasts for 4.00 seconds, and 16 frames are uniformly sampled from it.",
    "Please answer the following questions related to this video.",
    "What colour is the square? Where does the square move? How many frames are there?",
    "A. red B. green C. blue D. yellow. Answer with the option's letter from the given choices directly.",
    "The square is red and moves to the right. It is a small video about a moving square.",
]


def tiny_model(seed: int = 0, llm_scale: float = 8.0):
    """(config, HourLlava) of ``configs/model/tiny.yaml``, random init. The LLM's matrices are
    scaled by ``llm_scale``: greedy decoding of an N(0, 0.02) model repeats one token, and the
    tests want varied answers (as tests/model/qwen2_ref.py's ``weight_scale``)."""
    cfg = load_model_config("tiny")
    model = HourLlava(cfg, rngs=nnx.Rngs(seed))
    if llm_scale != 1.0:
        st = nnx.state(model.llm, nnx.Param)
        nnx.update(model.llm, jax.tree.map(lambda x: x * llm_scale if x.ndim == 2 else x, st))
    return cfg, model


def tiny_tokenizer(out_dir: Path):
    """A 400-token byte-level BPE (ids 0/1/2 = <|endoftext|>/<|im_start|>/<|im_end|>)."""
    return build_tokenizer(CORPUS * 4, 400, out_dir)


def tiny_video(path: Path, *, seconds: float = 4, fps: int = 4, size=(48, 40)) -> Path:
    """A CFR H.264 clip, 1 s GOP: 16 frames at 4 fps by default (all sampled: 16 < 128)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, fps=fps, num_frames=int(seconds * fps), size=size, gop=fps, options={"preset": "ultrafast"})
