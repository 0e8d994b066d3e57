"""Host-side visual layouts: which token goes where in the memory and the query (SPEC §1.3, §1.6).

The jitted model only gathers: it receives, per sample, integer maps saying which projected
token (or the ``image_newline``) fills each memory slot, each slot's RoPE position, and which
memory slots are decayed tokens for each ``<image>`` placeholder. Those maps depend on frame
counts and forgetting choices, not on data (``uniform`` temporal and both spatial modes), so
they are computed here in numpy, once per sample, and padded to static buckets by
:func:`collate_layouts`. This keeps every sample of a bucket on one compiled program.

Index conventions of ``memory_src``: ``>= 0`` a projected token of the sample's visual units
flattened as ``unit * tokens_per_unit + token``; :data:`NEWLINE` the learned newline;
:data:`PAD` an empty slot (masked out of attention).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.model.forgetting import spatial_keep_indices, temporal_frame_indices
from hourllava_jax.model.memory import repeat_indices

NEWLINE = -1
PAD = -2


@dataclasses.dataclass(frozen=True)
class VisualLayout:
    """One sample. ``memory_src``/``memory_pos`` int32[M]; ``decayed``: one int32[N_k] array of
    memory slots per ``<image>`` placeholder, in placeholder order; ``frame_indices``: the input
    frames whose decayed tokens were kept (video only; for reports)."""

    memory_src: np.ndarray
    memory_pos: np.ndarray
    decayed: tuple[np.ndarray, ...]
    frame_indices: np.ndarray | None = None

    @property
    def num_memory(self) -> int:
        return int(self.memory_src.shape[0])


def video_layout(num_frames: int, cfg: MemoryConfig, *, key: jax.Array | None = None, frame_emb: np.ndarray | None = None) -> VisualLayout:
    """Layout of one video of ``num_frames`` pooled frames (SPEC §1.2–1.3).

    Memory: the frames after repetition to ``cfg.min_frames``, per frame its p² tokens then the
    newline, positions ``arange``. Decayed: for each kept frame (temporal forgetting) its kept
    tokens (spatial forgetting) then its newline; a decayed token's memory slot equals its
    position ``t·(p²+1) + i``. ``key`` drives the ``random`` modes; ``frame_emb`` float[T, D]
    (e.g. mean pooled features per input frame) drives ``keyframe``.
    """
    p = cfg.pool_size
    p2 = p * p
    rep = repeat_indices(num_frames, cfg.min_frames)  # input frame of each memory frame
    t = rep.shape[0]
    src = np.concatenate([rep[:, None] * p2 + np.arange(p2)[None, :], np.full((t, 1), NEWLINE)], axis=1).reshape(-1)
    pos = np.arange(t * (p2 + 1), dtype=np.int32)
    if cfg.temporal_forgetting and cfg.temporal_mode == "question":
        raise ValueError("temporal mode 'question' depends on the question's embeddings: use "
                         "hourllava_jax.model.memory.build_video_memory (single-sample path)")
    k_time, k_space = jax.random.split(key) if key is not None else (None, None)
    emb = None if frame_emb is None else np.asarray(frame_emb)[rep]
    frames = np.asarray(temporal_frame_indices(t, cfg, key=k_time, frame_emb=emb))
    tokens = np.asarray(spatial_keep_indices(len(frames), p, p, cfg.spatial_keep_ratio, cfg.spatial_mode, k_space))
    base = frames[:, None] * (p2 + 1)
    decayed = np.concatenate([base + tokens, base + p2], axis=1).reshape(-1).astype(np.int32)
    return VisualLayout(src.astype(np.int32), pos, (decayed,), rep[frames].astype(np.int32))


def multi_image_layout(num_images: int, tokens_per_image: int, cfg: MemoryConfig, *, key: jax.Array | None = None) -> VisualLayout:
    """Several images in one sample (SPEC §1.6): each its tokens then a newline; ids
    ``arange(N·tokens)`` and one newline id ``N·tokens`` shared by all; each placeholder's query
    block is a random ceil(25%) of its own image's tokens (ascending) plus its newline."""
    n, m = num_images, tokens_per_image
    src = np.concatenate([np.arange(n * m).reshape(n, m), np.full((n, 1), NEWLINE)], axis=1).reshape(-1)
    pos = np.concatenate([np.arange(n * m).reshape(n, m), np.full((n, 1), n * m)], axis=1).reshape(-1)
    k = int(np.ceil(cfg.spatial_keep_ratio * m))
    if key is None:  # deterministic: evenly spaced tokens
        keep = np.stack([np.linspace(0, m - 1, k).astype(int)] * n)
    else:
        keep = np.sort(np.asarray(jax.random.uniform(key, (n, m))).argsort(-1)[:, :k], axis=-1)
    blocks = tuple(np.concatenate([i * (m + 1) + keep[i], [i * (m + 1) + m]]).astype(np.int32) for i in range(n))
    return VisualLayout(src.astype(np.int32), pos.astype(np.int32), blocks)


@dataclasses.dataclass(frozen=True)
class LayoutBatch:
    """Layouts padded to static shapes: ``memory_src``/``memory_pos`` int32[B, M],
    ``decayed`` int32[B, K, N] (-1 = padding)."""

    memory_src: np.ndarray
    memory_pos: np.ndarray
    decayed: np.ndarray


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def collate_layouts(layouts: list[VisualLayout | None], *, memory_multiple: int = 128, decayed_multiple: int = 64,
                    max_placeholders: int | None = None) -> LayoutBatch:
    """Pads per-sample layouts (None = text-only sample) to multiples of the given sizes."""
    m = _bucket(max((l.num_memory for l in layouts if l is not None), default=1), memory_multiple)
    k = max_placeholders or max((len(l.decayed) for l in layouts if l is not None), default=1)
    n = _bucket(max((len(d) for l in layouts if l is not None for d in l.decayed), default=1), decayed_multiple)
    b = len(layouts)
    src = np.full((b, m), PAD, np.int32)
    pos = np.zeros((b, m), np.int32)
    dec = np.full((b, max(k, 1), n), -1, np.int32)
    for i, l in enumerate(layouts):
        if l is None:
            continue
        if len(l.decayed) > dec.shape[1]:
            raise ValueError(f"sample {i}: {len(l.decayed)} placeholders exceed max_placeholders={dec.shape[1]}")
        src[i, : l.num_memory] = l.memory_src
        pos[i, : l.num_memory] = l.memory_pos
        for j, d in enumerate(l.decayed):
            dec[i, j, : len(d)] = d
    return LayoutBatch(src, pos, dec)
