"""The demo's public-weights stand-in: tiny SigLIP and Qwen2 Hugging Face directories, composed
into the stage-1 start exactly as ``hourllava-convert compose`` does for the real ones.

There are no public tiny weights (and no network), so the demo writes its own: a randomly
initialised SigLIP with one layer more than the tiny preset uses (compose drops the last layer,
as the release does, design §1.1) and a Qwen2 with the tiny preset's shapes. ``fold_feature_norm``
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

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.convert import load_pretrained, save_pretrained
from hourllava_jax.convert.cli import compose
from hourllava_jax.model.qwen2 import Qwen2
from hourllava_jax.model.siglip import SiglipVisionTower


def pretrained_dirs(root: str | Path, cfg: HourLlavaConfig, seed: int) -> tuple[Path, Path]:
    """Writes (or reuses) ``root/siglip`` and ``root/qwen2``: random weights in the HF layout."""
    root = Path(root)
    vision, llm = root / "siglip", root / "qwen2"
    if not (vision / "config.json").is_file():
        vcfg = dataclasses.replace(cfg.vision, num_hidden_layers=cfg.vision.num_used_layers + 1, feature_layer=-2)
        save_pretrained(SiglipVisionTower(vcfg, rngs=nnx.Rngs(seed)), vcfg, vision, overwrite=True)
    if not (llm / "config.json").is_file():
        save_pretrained(Qwen2(cfg.llm, rngs=nnx.Rngs(seed + 1)), cfg.llm, llm, overwrite=True)
    return vision, llm


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
