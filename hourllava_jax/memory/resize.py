"""Bilinear resizing as torch computes it, and the repetition of short videos (design §1.2, §1.4).

Used on both sides of the memory stage: the model pools every frame's SigLIP grid to p x p
(:func:`pool_frames`), the host plan builds its bilinear tap maps from :func:`bilinear_matrix`
and its frame repetition from :func:`repeat_indices`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
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
    mh = jnp.asarray(bilinear_matrix(h, out_h))
    mw = jnp.asarray(bilinear_matrix(w, out_w))
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


__all__ = ["bilinear_matrix", "bilinear_resize", "pool_frames", "repeat_indices", "repeat_to_min_frames"]
