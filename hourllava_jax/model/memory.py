"""The video memory repository and its decayed tokens (design §1.2, §2), as pure array functions.

Flow for one video: SigLIP features float[T, 27, 27, C] -> :func:`pool_frames` (bilinear to
p x p, before the projector) -> projector -> :func:`repeat_to_min_frames` (T < 128 -> 128) ->
:func:`build_video_memory`, which returns the memory (keys/values of MemAug's cross-attention)
and the decayed tokens (the visual part of MemAug's query), each with its RoPE position ids.

Static shapes: everything here is jittable for a fixed T (frame-count buckets give the static
shapes); only ``uniform`` temporal indices are computed on the host, from T alone.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.model.forgetting import spatial_keep_indices, temporal_frame_indices


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """float32[n_out, n_in] weights of torch's bilinear interpolation, align_corners=False.

    torch: src = (dst + 0.5) * n_in / n_out - 0.5, clamped at 0; i1 = min(i0 + 1, n_in - 1).
    """
    # float32 as torch's kernel computes it: a float32 scale, then one fused multiply-add
    # (emulated exactly in float64, rounded once), so the weights agree to the last bit.
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0.astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def bilinear_resize(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
    """float[..., h, w, C] -> float[..., out_h, out_w, C], equal to
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (no antialias).

    Separable: two small interpolation matrices, so it is a pair of matmuls (fast, exact).
    """
    h, w = x.shape[-3], x.shape[-2]
    if out_h < 1 or out_w < 1:
        raise ValueError(f"bilinear_resize: output size ({out_h}, {out_w}) must be positive")
    mh = jnp.asarray(_bilinear_matrix(h, out_h))
    mw = jnp.asarray(_bilinear_matrix(w, out_w))
    y = jnp.einsum("ah,...hwc->...awc", mh, x.astype(jnp.float32), precision="highest")
    y = jnp.einsum("bw,...awc->...abc", mw, y, precision="highest")
    return y.astype(x.dtype)


def pool_frames(features: jax.Array, size: int) -> jax.Array:
    """Per-frame bilinear resize (design §1.2): float[T, g, g, C] or float[T, g*g, C] -> float[T, size*size, C]."""
    if features.ndim == 3:
        g = int(round(features.shape[1] ** 0.5))
        if g * g != features.shape[1]:
            raise ValueError(f"pool_frames: {features.shape[1]} tokens per frame is not a square grid")
        features = features.reshape(features.shape[0], g, g, features.shape[-1])
    if features.ndim != 4:
        raise ValueError(f"pool_frames: expected float[T, g, g, C] or float[T, g*g, C], got {features.shape}")
    out = bilinear_resize(features, size, size)
    return out.reshape(features.shape[0], size * size, features.shape[-1])


def repeat_indices(num_frames: int, min_frames: int) -> np.ndarray:
    """Frame indices bringing T < min_frames up to min_frames: ``np.linspace(0, T-1, min_frames,
    dtype=int)`` (truncation, as the release); identity when T >= min_frames or min_frames == 0."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if num_frames >= min_frames:
        return np.arange(num_frames, dtype=np.int32)
    return np.linspace(0, num_frames - 1, min_frames, dtype=int).astype(np.int32)


def repeat_to_min_frames(x: jax.Array, min_frames: int) -> jax.Array:
    """float[T, ...] -> float[max(T, min_frames), ...] (design §1.2)."""
    return x[repeat_indices(x.shape[0], min_frames)]


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


__all__ = ["VideoMemory", "bilinear_resize", "build_video_memory", "pool_frames", "repeat_indices", "repeat_to_min_frames"]
