"""The memory stage's host plan: which token goes where in the memory and the query (design §2, §1.4).

The jitted model only gathers: it receives, per sample, integer maps saying which projected
token (or the ``image_newline``) fills each memory slot, each slot's RoPE position, and which
memory slots are decayed tokens for each ``<image>`` placeholder. Those maps depend on frame
counts and forgetting choices, not on data (``uniform`` temporal and both spatial modes), so
they are computed here in numpy, once per sample, and padded to static buckets by
:func:`collate_layouts`. This keeps every sample of a bucket on one compiled program. The
gather that follows in the graph is :mod:`hourllava_jax.memory.gather`; the single-sample
specification both are tested against is :mod:`hourllava_jax.memory.reference`.

Index conventions of ``memory_src``: ``>= 0`` a projected token of the sample's visual units
flattened as ``unit * tokens_per_unit + token``; :data:`NEWLINE` the learned newline;
:data:`PAD` an empty slot (masked out of attention).

Images (design §1.4) need more than a gather: an anyres grid larger than ``max_crops`` crops is
bilinear-downscaled after the projector, and a bilinear resize is a linear map in which each
output token mixes at most 2 x 2 input tokens. So an image layout carries a 4-tap map,
``memory_src`` int32[M, 4] and ``memory_w`` float32[M, 4]: slot = sum_t w_t * projected[src_t]
over taps with src_t >= 0, tap 0 also carrying NEWLINE / PAD. Videos keep the 1-tap int32[M]
map (their M reaches 234k, and 4 taps would gather 4x the memory).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.memory.forgetting import spatial_keep_count, spatial_keep_indices, temporal_frame_indices
from hourllava_jax.memory.image_grid import base_position_ids, insert_row_newlines, unpad_slices
from hourllava_jax.memory.resize import bilinear_matrix, repeat_indices

NEWLINE = -1
PAD = -2
TAPS = 4  # a bilinear output token mixes at most 2 x 2 input tokens


@dataclasses.dataclass(frozen=True)
class VisualLayout:
    """One sample. ``memory_src``/``memory_pos`` int32[M]; ``decayed``: one int32[N_k] array of
    memory slots per ``<image>`` placeholder, in placeholder order; ``frame_indices``: the input
    frames whose decayed tokens were kept (video only; for reports). With ``memory_w``
    float32[M, TAPS] (anyres images) ``memory_src`` is int32[M, TAPS] (see the module docstring)."""

    memory_src: np.ndarray
    memory_pos: np.ndarray
    decayed: tuple[np.ndarray, ...]
    frame_indices: np.ndarray | None = None
    memory_w: np.ndarray | None = None

    @property
    def num_memory(self) -> int:
        return int(self.memory_src.shape[0])


def video_layout(num_frames: int, cfg: MemoryConfig, *, key: jax.Array | None = None, frame_emb: np.ndarray | None = None) -> VisualLayout:
    """Layout of one video of ``num_frames`` pooled frames (design §1.2, §2).

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
    cfg.validate()  # rejects temporal mode 'question' (see MemoryConfig.validate)
    k_time, k_space = jax.random.split(key) if key is not None else (None, None)
    emb = None if frame_emb is None else np.asarray(frame_emb)[rep]
    frames = np.asarray(temporal_frame_indices(t, cfg, key=k_time, frame_emb=emb))
    tokens = np.asarray(spatial_keep_indices(len(frames), p, p, cfg.spatial_keep_ratio, cfg.spatial_mode, k_space))
    base = frames[:, None] * (p2 + 1)
    decayed = np.concatenate([base + tokens, base + p2], axis=1).reshape(-1).astype(np.int32)
    return VisualLayout(src.astype(np.int32), pos, (decayed,), rep[frames].astype(np.int32))


def multi_image_layout(num_images: int, tokens_per_image: int, cfg: MemoryConfig, *, key: jax.Array | None = None) -> VisualLayout:
    """Several images in one sample (design §1.4), the batched form of
    :func:`~hourllava_jax.memory.reference.build_multi_image_memory`: each image's g² tokens then a
    newline; ids ``arange(N·g²)`` and one newline id ``N·g²`` shared by all; each placeholder's
    query block is its own image's kept tokens (``cfg.spatial_mode``: ``random`` ceil(25%) drawn
    from ``key`` as that function draws them, or ``uniform`` [::2, ::2]) plus its newline.
    Features: units = the N images, g² tokens each."""
    n, m = num_images, tokens_per_image
    g = int(round(m**0.5))
    if n < 1 or g * g != m:
        raise ValueError(f"multi-image layout: need >= 1 image of a square token grid, got {n} x {m}")
    src = np.concatenate([np.arange(n * m).reshape(n, m), np.full((n, 1), NEWLINE)], axis=1).reshape(-1)
    pos = np.concatenate([np.arange(n * m).reshape(n, m), np.full((n, 1), n * m)], axis=1).reshape(-1)
    keep = np.asarray(spatial_keep_indices(n, g, g, cfg.spatial_keep_ratio, cfg.spatial_mode, key))
    blocks = tuple(np.concatenate([i * (m + 1) + keep[i], [i * (m + 1) + m]]).astype(np.int32) for i in range(n))
    return VisualLayout(src.astype(np.int32), pos.astype(np.int32), blocks)


def _row_taps(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32[n_out, n_in] interpolation matrix (<= 2 non-zeros a row) -> (int[n_out, 2] columns,
    float32[n_out, 2] weights); a row with one non-zero gets a second tap of weight 0."""
    idx = np.argsort(m == 0, axis=1, kind="stable")[:, :2]  # non-zero columns first, in order
    return idx, np.take_along_axis(m, idx, axis=1)


def image_layout(image_size: tuple[int, int], num_patches: tuple[int, int], tokens_per_side: int, cfg: MemoryConfig, *,
                 key: jax.Array | None = None) -> VisualLayout:
    """One anyres_max_9 image (design §1.4), the batched form of
    :func:`~hourllava_jax.memory.reference.build_anyres_memory` (same slots, positions and draw).

    Args:
      image_size: original (width, height); num_patches: (npw, nph) crops, from
        :func:`~hourllava_jax.data.anyres.anyres_grid_shape`; tokens_per_side: g (27 for SigLIP-384).
      cfg: ``spatial_keep_ratio``, ``spatial_mode`` (``random`` needs ``key``), ``image_max_crops``.
    Features: units = [base image, crop_0, ..., crop_{nph*npw-1}], g² tokens each (row-major).
    Memory: g² base tokens, then the unpadded (possibly downscaled) h x w grid, each row followed
    by the newline; memory_src/memory_w int32/float32[g² + h*(w+1), 4]. Decayed: one block, the
    kept base tokens then the kept grid tokens with a newline at each row change and at the end.
    """
    (npw, nph), g = num_patches, tokens_per_side
    if min(npw, nph, g) < 1:
        raise ValueError(f"image layout: num_patches {num_patches} and tokens_per_side {g} must be positive")
    gg = g * g
    r0, c0 = _unpadded_grid(image_size, num_patches, g)
    h, w = len(r0), len(c0)
    small = _downscaled_size(h, w, g, cfg.image_max_crops)
    if small is not None:  # bilinear downscale (anyres_grid_features): 2 taps per axis
        rh, wh = _row_taps(bilinear_matrix(h, small[0]))
        rw, ww = _row_taps(bilinear_matrix(w, small[1]))
        r_src, c_src = r0[rh], c0[rw]  # [h', 2], [w', 2]
    else:
        r_src, c_src = r0[:, None], c0[:, None]
        wh, ww = np.ones((h, 1), np.float32), np.ones((w, 1), np.float32)
    h, w = len(r_src), len(c_src)  # the final grid
    # token of padded-grid (R, C): crop (R // g, C // g), after the base unit, at (R % g, C % g)
    rr, cc = r_src[:, None, :, None], c_src[None, :, None, :]  # [h, w, a, b]
    tok = (1 + (rr // g) * npw + cc // g) * gg + (rr % g) * g + cc % g
    wt = (wh[:, None, :, None] * ww[None, :, None, :]).astype(np.float32)
    tok = np.where(wt != 0, tok, PAD).reshape(h, w, -1)
    wt = wt.reshape(h, w, -1)
    taps = tok.shape[-1]
    grid_src = np.full((h, w + 1, TAPS), PAD, np.int64)
    grid_w = np.zeros((h, w + 1, TAPS), np.float32)
    grid_src[:, :w, :taps], grid_w[:, :w, :taps] = tok, wt
    grid_src[:, w, 0], grid_w[:, w, 0] = NEWLINE, 1.0
    base_src = np.full((gg, TAPS), PAD, np.int64)
    base_src[:, 0] = np.arange(gg)
    base_w = np.zeros((gg, TAPS), np.float32)
    base_w[:, 0] = 1.0
    src = np.concatenate([base_src, grid_src.reshape(-1, TAPS)]).astype(np.int32)
    wts = np.concatenate([base_w, grid_w.reshape(-1, TAPS)])
    base_ids = base_position_ids(h, w, g).reshape(-1)
    grid_ids = np.concatenate([np.arange(h * w).reshape(h, w), np.full((h, 1), h * w)], axis=1).reshape(-1)
    pos = np.concatenate([base_ids, grid_ids]).astype(np.int32)

    # The same draw as build_anyres_memory: split the key, base first, then the grid.
    k_base, k_grid = jax.random.split(key) if key is not None else (None, None)
    sel_b = np.asarray(spatial_keep_indices(1, g, g, cfg.spatial_keep_ratio, cfg.spatial_mode, k_base))[0]
    sel_g = np.asarray(spatial_keep_indices(1, h, w, cfg.spatial_keep_ratio, cfg.spatial_mode, k_grid))[0]
    with_nl = insert_row_newlines(sel_g, w)  # grid ids, -1 = newline
    # Grid id i sits in slot g² + row*(w+1) + col; a newline takes the newline slot of the row
    # before it (every newline slot holds the same vector and the same id h*w).
    prev = np.maximum.accumulate(np.where(with_nl < 0, -1, with_nl))
    slot_nl = gg + (np.maximum(prev, 0) // w) * (w + 1) + w
    slot_tok = gg + (with_nl // w) * (w + 1) + with_nl % w
    decayed = np.concatenate([sel_b, np.where(with_nl < 0, slot_nl, slot_tok)]).astype(np.int32)
    return VisualLayout(src, pos, (decayed,), memory_w=wts)


def _unpadded_grid(image_size: tuple[int, int], num_patches: tuple[int, int], g: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (int[h], int[w]) of the (nph·g, npw·g) crop grid kept by unpadding."""
    npw, nph = num_patches
    rows, cols = unpad_slices(nph * g, npw * g, image_size)
    return np.arange(nph * g)[rows], np.arange(npw * g)[cols]


def _downscaled_size(h: int, w: int, g: int, max_crops: int) -> tuple[int, int] | None:
    """The bilinear target of an h x w grid larger than ``max_crops`` crops (design §1.4:
    ``s = sqrt(h·w / (max_crops·g²)) > 1.1`` -> (h // s, w // s)), else None."""
    times = np.sqrt(h * w / (max_crops * g * g))
    return (int(h // times), int(w // times)) if times > 1.1 else None


def image_grid_size(image_size: tuple[int, int], num_patches: tuple[int, int], tokens_per_side: int,
                    max_crops: int) -> tuple[int, int]:
    """(h, w) of an anyres image's final token grid: unpadded, then downscaled when larger than
    ``max_crops`` crops (the grid :func:`image_layout` lays out; no features needed)."""
    r0, c0 = _unpadded_grid(image_size, num_patches, tokens_per_side)
    return _downscaled_size(len(r0), len(c0), tokens_per_side, max_crops) or (len(r0), len(c0))


def image_layout_size(image_size: tuple[int, int], num_patches: tuple[int, int], tokens_per_side: int,
                      cfg: MemoryConfig) -> tuple[int, int]:
    """(memory slots M, an upper bound on the decayed block's length) of :func:`image_layout`,
    from the image's size alone: what a data pipeline plans static shapes with. The block holds
    the kept base and grid tokens and one newline per distinct kept row, which depends on the
    random draw; the bound is ``min(h, kept grid tokens)`` newlines."""
    g = tokens_per_side
    h, w = image_grid_size(image_size, num_patches, g, cfg.image_max_crops)
    kept = spatial_keep_count(h, w, cfg.spatial_keep_ratio, cfg.spatial_mode)
    base = spatial_keep_count(g, g, cfg.spatial_keep_ratio, cfg.spatial_mode)
    return g * g + h * (w + 1), base + kept + min(h, kept)


def multi_image_layout_size(num_images: int, tokens_per_image: int, cfg: MemoryConfig) -> tuple[int, int]:
    """(memory slots M, decayed tokens per placeholder) of :func:`multi_image_layout` (exact)."""
    g = int(round(tokens_per_image**0.5))
    return num_images * (tokens_per_image + 1), spatial_keep_count(g, g, cfg.spatial_keep_ratio, cfg.spatial_mode) + 1


@dataclasses.dataclass(frozen=True)
class LayoutBatch:
    """Layouts padded to static shapes: ``memory_src``/``memory_pos`` int32[B, M],
    ``decayed`` int32[B, K, N] (-1 = padding). When any sample carries taps (anyres images),
    ``memory_src`` is int32[B, M, TAPS] and ``memory_w`` float32[B, M, TAPS] for every sample."""

    memory_src: np.ndarray
    memory_pos: np.ndarray
    decayed: np.ndarray
    memory_w: np.ndarray | None = None


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def collate_layouts(layouts: list[VisualLayout | None], *, memory_multiple: int = 128, decayed_multiple: int = 64,
                    max_placeholders: int | None = None) -> LayoutBatch:
    """Pads per-sample layouts (None = text-only sample) to multiples of the given sizes."""
    m = _bucket(max((l.num_memory for l in layouts if l is not None), default=1), memory_multiple)
    k = max_placeholders or max((len(l.decayed) for l in layouts if l is not None), default=1)
    n = _bucket(max((len(d) for l in layouts if l is not None for d in l.decayed), default=1), decayed_multiple)
    b = len(layouts)
    tapped = any(l is not None and l.memory_w is not None for l in layouts)
    src = np.full((b, m, TAPS) if tapped else (b, m), PAD, np.int32)
    wts = np.zeros((b, m, TAPS), np.float32) if tapped else None
    pos = np.zeros((b, m), np.int32)
    dec = np.full((b, max(k, 1), n), -1, np.int32)
    for i, l in enumerate(layouts):
        if l is None:
            continue
        if len(l.decayed) > dec.shape[1]:
            raise ValueError(f"sample {i}: {len(l.decayed)} placeholders exceed max_placeholders={dec.shape[1]}")
        if not tapped:
            src[i, : l.num_memory] = l.memory_src
        elif l.memory_w is None:  # a 1-tap sample in a tapped batch: tap 0, weight 1
            src[i, : l.num_memory, 0] = l.memory_src
            wts[i, : l.num_memory, 0] = 1.0
        else:
            if l.memory_w.shape != l.memory_src.shape or l.memory_src.shape[1:] != (TAPS,):
                raise ValueError(f"sample {i}: memory_src {l.memory_src.shape} / memory_w {l.memory_w.shape} are not [M, {TAPS}]")
            src[i, : l.num_memory] = l.memory_src
            wts[i, : l.num_memory] = l.memory_w
        pos[i, : l.num_memory] = l.memory_pos
        for j, d in enumerate(l.decayed):
            dec[i, j, : len(d)] = d
    return LayoutBatch(src, pos, dec, wts)
