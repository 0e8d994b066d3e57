"""Spatial and temporal forgetting: which memory entries become MemAug query tokens (design §2).

Spatial: per frame (or image grid) keep a subset of the h x w tokens, ``random`` (independent
per row, sorted; an explicit key replaces the release's unseeded draw) or ``uniform`` (the grid
``[::2, ::2]``, as the release does; it keeps ceil(h/2)*ceil(w/2) tokens, which equals
ceil(0.25*h*w) only for even h, w, e.g. 16 of 8x8, but 196 (not 183) of 27x27 images).

Temporal: which frames keep decayed tokens, F = min(max_decayed_frames, T // temporal_ratio).
``uniform`` (the release's rule) depends only on T and is computed on the host with numpy;
``random`` / ``keyframe`` / ``question`` are jnp with a static F (keyframe and question depend
on the data). All return ascending frame indices.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.config import MemoryConfig

SPATIAL_MODES = ("random", "uniform")
TEMPORAL_MODES = ("uniform", "random", "keyframe", "question")


def spatial_keep_count(h: int, w: int, ratio: float, mode: str) -> int:
    """Tokens kept per h x w grid (see the module docstring for ``uniform``)."""
    if mode == "uniform":
        return ((h + 1) // 2) * ((w + 1) // 2)
    if mode == "random":
        return math.ceil(h * w * ratio)
    raise ValueError(f"spatial mode {mode!r} is not one of {SPATIAL_MODES}")


def spatial_keep_indices(num: int, h: int, w: int, ratio: float, mode: str, key: jax.Array | None = None) -> jax.Array:
    """Row-major token indices kept in each of ``num`` grids of h x w -> int32[num, k], ascending.

    ``random`` draws an independent subset per grid (needs ``key``), like the release's
    ``topk(rand, k, largest=False)`` followed by a sort.
    """
    k = spatial_keep_count(h, w, ratio, mode)
    if mode == "uniform":
        ii, jj = np.meshgrid(np.arange(0, h, 2), np.arange(0, w, 2), indexing="ij")
        grid = (ii * w + jj).reshape(-1).astype(np.int32)
        return jnp.broadcast_to(jnp.asarray(grid), (num, k))
    if key is None:
        raise ValueError("spatial mode 'random' needs an explicit RNG key")
    order = jnp.argsort(jax.random.uniform(key, (num, h * w)), axis=-1)[:, :k]
    return jnp.sort(order, axis=-1).astype(jnp.int32)


def num_decayed_frames(num_frames: int, cfg: MemoryConfig) -> int:
    """F = min(max_decayed_frames, T // temporal_ratio) (design §2.3)."""
    return min(cfg.max_decayed_frames, num_frames // cfg.temporal_ratio)


def uniform_frame_indices(num_frames: int, num_keep: int) -> np.ndarray:
    """The release's rule: ``np.linspace(0, T-1, F, dtype=int)`` (truncation), plus T-1 if missing.

    numpy semantics matter: a float32 ``torch.linspace`` truncates differently for some T (e.g. 95).
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    idx = np.linspace(0, num_frames - 1, num_keep, dtype=int)
    if num_frames - 1 not in idx:
        idx = np.append(idx, num_frames - 1)
    return idx.astype(np.int32)


def random_frame_indices(key: jax.Array, num_frames: int, num_keep: int) -> jax.Array:
    """``num_keep`` distinct frames drawn uniformly -> int32[num_keep], ascending."""
    order = jnp.argsort(jax.random.uniform(key, (num_frames,)))[:num_keep]
    return jnp.sort(order).astype(jnp.int32)


def local_avg_cosine(emb: jax.Array, window: int) -> jax.Array:
    """float[T, D] -> float[T]: mean cosine similarity of each frame with its neighbours within
    ``window // 2`` frames (itself excluded; fewer neighbours at the ends), as the release's
    ``local_avg_cosine``."""
    if window % 2 != 1:
        raise ValueError(f"keyframe window must be odd, got {window}")
    t = emb.shape[0]
    r = window // 2
    e = emb.astype(jnp.float32)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    idx = jnp.arange(t)
    total = jnp.zeros((t,), jnp.float32)
    for off in range(1, r + 1):  # banded: O(T * window * D), never the T x T matrix
        sim = jnp.sum(e[:-off] * e[off:], axis=-1) if off < t else jnp.zeros((0,), jnp.float32)
        total = total + jnp.pad(sim, (0, min(off, t))) + jnp.pad(sim, (min(off, t), 0))
    count = jnp.minimum(idx + r, t - 1) - jnp.maximum(idx - r, 0)
    return total / jnp.maximum(count, 1)


def keyframe_frame_indices(frame_emb: jax.Array, num_keep: int, window: int) -> jax.Array:
    """The ``num_keep`` frames least similar to their neighbours (scene changes) -> int32[F], ascending."""
    score = local_avg_cosine(frame_emb, window)
    return jnp.sort(jnp.argsort(score, stable=True)[:num_keep]).astype(jnp.int32)


def question_frame_indices(frame_emb: jax.Array, question_emb: jax.Array, num_keep: int) -> jax.Array:
    """The ``num_keep`` frames whose embedding is most cosine-similar to the mean question
    embedding. frame_emb float[T, D]; question_emb float[Lt, D] -> int32[F], ascending."""
    f = frame_emb.astype(jnp.float32)
    q = jnp.mean(question_emb.astype(jnp.float32), axis=0)
    sim = (f @ q) / jnp.maximum(jnp.linalg.norm(f, axis=-1) * jnp.linalg.norm(q), 1e-12)
    return jnp.sort(jnp.argsort(-sim, stable=True)[:num_keep]).astype(jnp.int32)


def temporal_frame_indices(num_frames: int, cfg: MemoryConfig, *, key: jax.Array | None = None,
                           frame_emb: jax.Array | None = None, question_emb: jax.Array | None = None) -> jax.Array:
    """Frames that keep decayed tokens, by ``cfg.temporal_mode`` -> int32[F'] ascending.

    With ``cfg.temporal_forgetting`` False (stage 1) every frame is kept. ``uniform`` returns
    F or F+1 frames (the appended last frame); the other modes exactly F.
    """
    if not cfg.temporal_forgetting:
        return jnp.arange(num_frames, dtype=jnp.int32)
    f = num_decayed_frames(num_frames, cfg)
    mode = cfg.temporal_mode
    if mode == "uniform":
        return jnp.asarray(uniform_frame_indices(num_frames, f))
    if f < 1:
        raise ValueError(f"temporal mode {mode!r} keeps no frame of a {num_frames}-frame video (F = {f})")
    if mode == "random":
        if key is None:
            raise ValueError("temporal mode 'random' needs an explicit RNG key")
        return random_frame_indices(key, num_frames, f)
    if frame_emb is None or frame_emb.shape[0] != num_frames:
        raise ValueError(f"temporal mode {mode!r} needs frame embeddings float[{num_frames}, D]")
    if mode == "keyframe":
        return keyframe_frame_indices(frame_emb, f, cfg.keyframe_window)
    if mode == "question":
        if question_emb is None or question_emb.ndim != 2 or question_emb.shape[0] == 0:
            raise ValueError("temporal mode 'question' needs question embeddings float[Lt >= 1, D]")
        return question_frame_indices(frame_emb, question_emb, f)
    raise ValueError(f"temporal mode {mode!r} is not one of {TEMPORAL_MODES}")


__all__ = [
    "SPATIAL_MODES", "TEMPORAL_MODES", "keyframe_frame_indices", "local_avg_cosine", "num_decayed_frames",
    "question_frame_indices", "random_frame_indices", "spatial_keep_count", "spatial_keep_indices",
    "temporal_frame_indices", "uniform_frame_indices",
]
