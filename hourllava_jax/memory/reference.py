"""The memory stage's executable specification: one sample at a time, written as the paper and
the release describe it (design §1.2, §1.4). Nothing in training or inference runs this module; the
tests compare it against the batched path (:mod:`~hourllava_jax.memory.layout` on the host plus
:mod:`~hourllava_jax.memory.gather` in the graph), which must give the same memory, the same
decayed tokens and the same positions.

* Video: projected, pooled frame tokens -> :func:`build_video_memory` (repetition to
  ``min_frames``, memory = frames with a newline each, spatial/temporal forgetting; also the
  ``question`` temporal mode, which the batched path rejects).
* One anyres image: :func:`anyres_grid_features` (unpad, downscale) -> :func:`build_anyres_memory`.
* Several images: :func:`build_multi_image_memory`.
* The MemAug query's RoPE ids: :func:`query_positions`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.memory.forgetting import spatial_keep_indices, temporal_frame_indices
from hourllava_jax.memory.image_grid import Size, base_position_ids, insert_row_newlines, unpad_slices
from hourllava_jax.memory.resize import bilinear_resize, repeat_to_min_frames


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["memory", "memory_positions", "decayed", "decayed_positions", "frame_indices", "token_indices"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class VideoMemory:
    """One video's memory repository and decayed tokens (design §2). p2 = pool_size², k = kept per frame.

    memory: float[T*(p2+1), H], per frame its p2 tokens then the newline.
    memory_positions: int32[T*(p2+1)] = arange.
    decayed: float[F*(k+1), H], per kept frame its k kept tokens then the newline.
    decayed_positions: int32[F*(k+1)]: each token's memory position t*(p2+1) + i (newline: + p2).
    frame_indices: int32[F] kept frames (ascending); token_indices: int32[F, k] kept tokens per frame.
    """

    memory: jax.Array
    memory_positions: jax.Array
    decayed: jax.Array
    decayed_positions: jax.Array
    frame_indices: jax.Array
    token_indices: jax.Array


def build_video_memory(frame_tokens: jax.Array, newline: jax.Array, cfg: MemoryConfig, *,
                       rng: jax.Array | None = None, question_emb: jax.Array | None = None) -> VideoMemory:
    """Memory repository + spatial/temporal forgetting for one video (design §1.2, §2).

    Args:
      frame_tokens: float[T, p*p, H] projected, pooled frame tokens (before repetition).
      newline: float[H] the learned ``image_newline``.
      cfg: pool size, min_frames, spatial/temporal modes.
      rng: key for ``random`` spatial or temporal modes (split internally).
      question_emb: float[Lt, H] question token embeddings for temporal mode ``question``.
    Returns:
      :class:`VideoMemory` over the T' = max(T, min_frames) frames after repetition.
    """
    p2 = cfg.pool_size**2
    if frame_tokens.ndim != 3 or frame_tokens.shape[1] != p2:
        raise ValueError(f"build_video_memory: expected frame_tokens float[T, {p2}, H], got {frame_tokens.shape}")
    if newline.shape != frame_tokens.shape[-1:]:
        raise ValueError(f"build_video_memory: newline {newline.shape} must be [{frame_tokens.shape[-1]}]")
    x = repeat_to_min_frames(frame_tokens, cfg.min_frames)
    t, _, h = x.shape
    nl = jnp.broadcast_to(newline.astype(x.dtype), (t, 1, h))
    memory = jnp.concatenate([x, nl], axis=1).reshape(t * (p2 + 1), h)
    memory_positions = jnp.arange(t * (p2 + 1), dtype=jnp.int32)

    k_time, k_space = jax.random.split(rng) if rng is not None else (None, None)
    frame_emb = jnp.mean(x.astype(jnp.float32), axis=1) if cfg.temporal_mode in ("keyframe", "question") else None
    frames = temporal_frame_indices(t, cfg, key=k_time, frame_emb=frame_emb, question_emb=question_emb)
    f = frames.shape[0]
    tokens = spatial_keep_indices(f, cfg.pool_size, cfg.pool_size, cfg.spatial_keep_ratio, cfg.spatial_mode, k_space)
    kept = jnp.take_along_axis(x[frames], tokens[..., None], axis=1)  # [F, k, H]
    decayed = jnp.concatenate([kept, jnp.broadcast_to(newline.astype(x.dtype), (f, 1, h))], axis=1)
    base = frames[:, None] * (p2 + 1)
    pos = jnp.concatenate([base + tokens, base + p2], axis=1).astype(jnp.int32)
    return VideoMemory(memory, memory_positions, decayed.reshape(-1, h), pos.reshape(-1), frames, tokens)


# ------------------------------------------------------------------------------ images


def anyres_grid_features(crop_feats: jax.Array, num_patches: Size, image_size: Size, max_crops: int = 9) -> jax.Array:
    """Crop features -> the unpadded (and possibly downscaled) grid (design §1.4).

    Args:
      crop_feats: float[nph*npw, g*g, C], crops row-major (the base image excluded).
      num_patches: (npw, nph) from :func:`~hourllava_jax.data.anyres.anyres_grid_shape`.
      image_size: original (width, height).
    Returns:
      float[h, w, C]; bilinear-resized to (int(h // s), int(w // s)) when
      s = sqrt(h*w / (max_crops*g²)) > 1.1.
    """
    npw, nph = num_patches
    n, gg, c = crop_feats.shape
    g = int(round(gg**0.5))
    if n != npw * nph or g * g != gg:
        raise ValueError(f"anyres: {crop_feats.shape} is not {nph}x{npw} crops of a square grid")
    grid = crop_feats.reshape(nph, npw, g, g, c).transpose(0, 2, 1, 3, 4).reshape(nph * g, npw * g, c)
    rows, cols = unpad_slices(nph * g, npw * g, image_size)
    grid = grid[rows, cols]
    h, w = grid.shape[:2]
    times = math.sqrt(h * w / (max_crops * g * g))
    if times > 1.1:
        grid = bilinear_resize(grid, int(h // times), int(w // times))
    return grid


@dataclasses.dataclass(frozen=True)
class ImageMemory:
    """One single image's memory and query (design §1.4).

    memory: float[g² + h*(w+1), H]: base tokens, then grid rows each followed by the newline.
    memory_positions: int32[same]: base ids, then grid ids arange(h*w) with every newline = h*w.
    query: float[Q, H]: kept base tokens, then kept grid tokens with a newline at every row
      change and one final newline. query_positions: int32[Q], their memory ids.
    """

    memory: jax.Array
    memory_positions: jax.Array
    query: jax.Array
    query_positions: jax.Array


def build_anyres_memory(base: jax.Array, grid: jax.Array, newline: jax.Array, *, keep_ratio: float = 0.25,
                        mode: str = "random", rng: jax.Array | None = None) -> ImageMemory:
    """Memory and query of one anyres image.

    Args:
      base: float[g, g, H] or float[g*g, H] base-image tokens; grid: float[h, w, H] from
        :func:`anyres_grid_features` (after the projector); newline: float[H].
      keep_ratio / mode / rng: spatial forgetting (``random`` keeps ceil(ratio*n) of each part).
    """
    h, w, dim = grid.shape
    if base.ndim == 2:
        g = int(round(base.shape[0] ** 0.5))
        base = base.reshape(g, g, dim)
    g = base.shape[0]
    if base.shape != (g, g, dim) or newline.shape != (dim,):
        raise ValueError(f"anyres memory: base {base.shape}, grid {grid.shape}, newline {newline.shape} disagree")
    base_ids = base_position_ids(h, w, g).reshape(-1)
    nl_id = h * w
    grid_ids = np.concatenate([np.arange(h * w).reshape(h, w), np.full((h, 1), nl_id)], axis=1).reshape(-1)
    nl = newline.astype(grid.dtype)
    grid_nl = jnp.concatenate([grid, jnp.broadcast_to(nl, (h, 1, dim))], axis=1).reshape(-1, dim)
    memory = jnp.concatenate([base.reshape(-1, dim), grid_nl], axis=0)
    memory_positions = jnp.asarray(np.concatenate([base_ids, grid_ids]), jnp.int32)

    k_base, k_grid = jax.random.split(rng) if rng is not None else (None, None)
    sel_b = np.asarray(spatial_keep_indices(1, g, g, keep_ratio, mode, k_base))[0]
    sel_g = np.asarray(spatial_keep_indices(1, h, w, keep_ratio, mode, k_grid))[0]
    with_nl = insert_row_newlines(sel_g, w)  # grid ids, -1 = newline
    flat_grid = jnp.concatenate([grid.reshape(-1, dim), nl[None]], axis=0)  # index h*w = newline
    gather = np.where(with_nl < 0, h * w, with_nl)
    query = jnp.concatenate([base.reshape(-1, dim)[sel_b], flat_grid[gather]], axis=0)
    query_positions = np.concatenate([base_ids[sel_b], np.where(with_nl < 0, nl_id, with_nl)])
    return ImageMemory(memory, memory_positions, query, jnp.asarray(query_positions, jnp.int32))


@dataclasses.dataclass(frozen=True)
class MultiImageMemory:
    """N images of g² tokens (design §1.4, also the single-crop image with N = 1).

    memory: float[N*(g²+1), H], each image's tokens then the newline; memory_positions: image n's
    tokens n*g² + arange(g²), every newline N*g². query: float[N, k+1, H], each image's kept
    tokens then the newline (one block per ``<image>`` placeholder); query_positions: int32[N, k+1].
    """

    memory: jax.Array
    memory_positions: jax.Array
    query: jax.Array
    query_positions: jax.Array


def build_multi_image_memory(images: jax.Array, newline: jax.Array, *, keep_ratio: float = 0.25,
                             mode: str = "random", rng: jax.Array | None = None) -> MultiImageMemory:
    """images float[N, g*g, H] (or [N, g, g, H]); newline float[H]. Jittable (static shapes)."""
    if images.ndim == 4:
        images = images.reshape(images.shape[0], -1, images.shape[-1])
    n, gg, dim = images.shape
    g = int(round(gg**0.5))
    if g * g != gg or newline.shape != (dim,):
        raise ValueError(f"multi-image memory: images {images.shape} / newline {newline.shape} invalid")
    nl = jnp.broadcast_to(newline.astype(images.dtype), (n, 1, dim))
    memory = jnp.concatenate([images, nl], axis=1).reshape(-1, dim)
    ids = jnp.arange(n * gg, dtype=jnp.int32).reshape(n, gg)
    nl_id = jnp.full((n, 1), n * gg, jnp.int32)
    memory_positions = jnp.concatenate([ids, nl_id], axis=1).reshape(-1)
    sel = spatial_keep_indices(n, g, g, keep_ratio, mode, rng)  # [N, k]
    query = jnp.concatenate([jnp.take_along_axis(images, sel[..., None], axis=1), nl], axis=1)
    query_positions = jnp.concatenate([jnp.take_along_axis(ids, sel, axis=1), nl_id], axis=1)
    return MultiImageMemory(memory, memory_positions, query, query_positions)


# ------------------------------------------------------------------------------ the MemAug query


def query_positions(text_lengths: Sequence[int], visual_positions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """RoPE ids of one sample's MemAug query (design §2.4), on the host.

    The query is text segment 0, visual block 0, text segment 1, ..., text segment n. Each text
    segment continues from the running maximum id; each visual block is its memory ids shifted
    by (running maximum + 1), so a decayed token sits a constant offset ahead of its memory entry.

    Args:
      text_lengths: n+1 kept-text lengths (tokens with label -100; the whole prompt at inference).
      visual_positions: n int arrays, the memory ids of each placeholder's query tokens
        (``VideoMemory.decayed_positions``, ``ImageMemory.query_positions``, ...).
    Returns:
      positions int32[sum of all lengths]; visual_index int32[sum of visual lengths], where the
      visual tokens sit in the query (MemAug's output rows that replace the placeholders).
    """
    if len(text_lengths) != len(visual_positions) + 1:
        raise ValueError(f"query_positions: {len(text_lengths)} text segments for {len(visual_positions)} visual blocks (need n+1 for n)")
    parts, visual_index, maxp, n = [], [], -1, 0
    for i, length in enumerate(text_lengths):
        if length < 0:
            raise ValueError(f"query_positions: negative text length {length}")
        parts.append(np.arange(length, dtype=np.int64) + maxp + 1)
        maxp, n = (maxp + length if length else maxp), n + length
        if i < len(visual_positions):
            vis = np.asarray(visual_positions[i], np.int64).reshape(-1)
            if vis.size and vis.min() < 0:
                raise ValueError("query_positions: memory ids must be non-negative")
            parts.append(vis + maxp + 1)
            visual_index.append(np.arange(vis.size) + n)
            maxp, n = (max(maxp, int(parts[-1].max())) if vis.size else maxp), n + vis.size
    pos = np.concatenate(parts) if parts else np.zeros((0,), np.int64)
    vis_idx = np.concatenate(visual_index) if visual_index else np.zeros((0,), np.int64)
    return pos.astype(np.int32), vis_idx.astype(np.int32)


__all__ = [
    "ImageMemory", "MultiImageMemory", "VideoMemory", "anyres_grid_features", "build_anyres_memory",
    "build_multi_image_memory", "build_video_memory", "query_positions",
]
