"""The demo's public-weights stand-in: tiny SigLIP and Qwen2 Hugging Face directories, composed
into the stage-1 start exactly as ``hourllava-convert compose`` does for the real ones.

There are no public tiny weights (and no network), so the demo writes its own: a randomly
initialised SigLIP with one layer more than the tiny preset uses (compose drops the last layer,
as the release does, design §1.1) and a Qwen2 with the tiny preset's shapes, its matrices drawn
at std ``1 / sqrt(hidden)`` (:func:`standin_llm`) instead of the 0.02 that Qwen2 checkpoints are
initialised with for widths of 896 and more. ``fold_feature_norm``
then standardises the frozen tower's features per channel inside the projector's first Linear:
the random tower's outputs share a large common offset, and this data-dependent
re-initialisation of one layer speeds up learning (docs/demo.md) while the checkpoint stays an
ordinary Hour-LLaVA directory that every entry point reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from flax import nnx

from hourllava_jax.config import HourLlavaConfig, LLMConfig
from hourllava_jax.convert import load_pretrained, save_pretrained
from hourllava_jax.convert.cli import compose
from hourllava_jax.model.qwen2 import QWEN2_INIT_STD, Qwen2
from hourllava_jax.model.siglip import SiglipVisionTower


def pretrained_dirs(root: str | Path, cfg: HourLlavaConfig, seed: int) -> tuple[Path, Path]:
    """Writes (or reuses) ``root/siglip`` and ``root/qwen2``: random weights in the HF layout."""
    root = Path(root)
    vision, llm = root / "siglip", root / "qwen2"
    if not (vision / "config.json").is_file():
        vcfg = dataclasses.replace(cfg.vision, num_hidden_layers=cfg.vision.num_used_layers + 1, feature_layer=-2)
        save_pretrained(SiglipVisionTower(vcfg, rngs=nnx.Rngs(seed)), vcfg, vision, overwrite=True)
    if not (llm / "config.json").is_file():
        save_pretrained(standin_llm(cfg.llm, seed + 1), cfg.llm, llm, overwrite=True)
    return vision, llm


def standin_llm(cfg: LLMConfig, seed: int) -> Qwen2:
    """A random Qwen2 whose weight matrices and embedding have std ``1 / sqrt(hidden)``.

    Qwen2's init std of 0.02 is ``~1 / sqrt(hidden)`` at the widths it was made for; at the tiny
    width (64) it leaves every attention uniform, and the LLM then learns so slowly that in 1,500
    demo steps it never even learned that ``red`` follows ``A.`` in the answer (docs/demo.md).
    Norm weights (ones) and biases (zeros) are as initialised."""
    model = Qwen2(cfg, rngs=nnx.Rngs(seed))
    scale = (1.0 / np.sqrt(cfg.hidden_size)) / QWEN2_INIT_STD
    for _, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param) and param[...].ndim == 2:
            param.set_value(param[...] * scale)
    return model


def composed(root: str | Path, cfg: HourLlavaConfig, seed: int) -> Path:
    """``root/composed``: SigLIP + Qwen2 + a fresh projector, newline and MemAug (``compose``)."""
    out = Path(root) / "composed"
    if not (out / "config.json").is_file():
        vision, llm = pretrained_dirs(root, cfg, seed)
        compose(vision, llm, out, memaug_depth=cfg.memaug.depth, seed=seed, dtype="float32")
    return out


def fold_feature_norm(src: str | Path, dst: str | Path, mean: np.ndarray, std: np.ndarray) -> Path:
    """``dst`` = ``src`` with the projector's first Linear reading standardised features:
    ``W' = W / std`` (per input channel), ``b' = b - (mean / std) @ W``. mean, std: float32[C]."""
    cfg, model = load_pretrained(src)
    lin = model.projector.linear_0
    w = np.asarray(lin.kernel[...], np.float64)  # [C, H]
    b = np.asarray(lin.bias[...], np.float64)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    lin.kernel.set_value(np.asarray(w / std[:, None], np.float32))
    lin.bias.set_value(np.asarray(b - (mean / std) @ w, np.float32))
    return save_pretrained(model, cfg, dst, overwrite=True)


def feature_stats(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32[C] each) of float32[T, P, C] feature arrays."""
    flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features]).astype(np.float64)
    return flat.mean(0).astype(np.float32), np.maximum(flat.std(0), 1e-6).astype(np.float32)
