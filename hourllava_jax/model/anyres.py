"""Images: ``anyres_max_9`` geometry, the image memory and its query (design §1.4).

Image side (pure functions on PIL images, as LLaVA-NeXT): pick the best pinpoint resolution,
resize keeping the aspect, pad black and centre, cut 384² crops, plus a base image resized
(distorted) to 384². Model side: the crops' g x g feature grids form an (nph*g, npw*g) grid,
padding is removed by the original aspect (``unpad``) and a grid larger than ``max_crops`` crops
is bilinear-resized down. Memory = g² base tokens + the grid with a newline after each row.

Sizes are (width, height) as PIL reports them, as in the release. Everything is parameterised
by the per-crop grid ``g`` (27 for SigLIP-384) so tests run on tiny grids. The query's length
depends on the image size and on the random draw, so these functions run eagerly (host side).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.model.forgetting import spatial_keep_indices
from hourllava_jax.model.memory import bilinear_resize

Size = tuple[int, int]  # (width, height)


# ------------------------------------------------------------------------------ image geometry


def grid_pinpoints(max_grid: int = 6, patch: int = 384) -> list[Size]:
    """anyres_max_9 pinpoints ``(i*patch, j*patch)`` for i, j in 1..max_grid, i outer (release order)."""
    return [(i * patch, j * patch) for i in range(1, max_grid + 1) for j in range(1, max_grid + 1)]


def select_best_resolution(original_size: Size, possible: list[Size]) -> Size:
    """LLaVA-NeXT's rule: the largest effective (downscaled, capped at original) area, then the
    least wasted area; the first candidate wins exact ties."""
    ow, oh = original_size
    if ow < 1 or oh < 1:
        raise ValueError(f"image size must be positive, got {original_size}")
    best, best_eff, best_waste = None, 0, math.inf
    for w, h in possible:
        scale = min(w / ow, h / oh)
        eff = min(int(ow * scale) * int(oh * scale), ow * oh)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (w, h), eff, waste
    return best


def anyres_grid_shape(image_size: Size, max_grid: int = 6, patch: int = 384) -> Size:
    """(num crops wide, num crops high) for an image of (width, height)."""
    w, h = select_best_resolution(image_size, grid_pinpoints(max_grid, patch))
    return w // patch, h // patch


def resize_and_pad_image(image, target: Size):
    """Aspect-preserving bicubic resize into ``target`` (w, h), pasted centred on black."""
    from PIL import Image

    ow, oh = image.size
    tw, th = target
    sw, sh = tw / ow, th / oh
    if sw < sh:
        nw, nh = tw, min(math.ceil(oh * sw), th)
    else:
        nw, nh = min(math.ceil(ow * sh), tw), th
    out = Image.new("RGB", (tw, th), (0, 0, 0))
    out.paste(image.convert("RGB").resize((nw, nh), Image.BICUBIC), ((tw - nw) // 2, (th - nh) // 2))
    return out


def divide_to_patches(image, patch: int) -> list:
    """Row-major ``patch``² crops of an image whose sides are multiples of ``patch``."""
    w, h = image.size
    return [image.crop((j, i, j + patch, i + patch)) for i in range(0, h, patch) for j in range(0, w, patch)]


def anyres_image_crops(image, max_grid: int = 6, patch: int = 384) -> tuple[list, Size]:
    """[base image resized to patch², crop_0, ..., crop_{nph*npw-1}] and (npw, nph) (design §1.4)."""
    from PIL import Image

    best = select_best_resolution(image.size, grid_pinpoints(max_grid, patch))
    crops = divide_to_patches(resize_and_pad_image(image, best), patch)
    base = image.convert("RGB").resize((patch, patch), Image.BICUBIC)
    return [base, *crops], (best[0] // patch, best[1] // patch)


def expand_to_square(image, fill: tuple[int, int, int] = (127, 127, 127)):
    """Multi-image preprocessing: pad to a square with grey, the image centred (LLaVA's expand2square)."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


# ------------------------------------------------------------------------------ model-side grid


def unpad_slices(cur_h: int, cur_w: int, original_size: Size) -> tuple[slice, slice]:
    """Row/column slices removing the padding of a (cur_h, cur_w) grid (LLaVA-NeXT ``unpad_image``)."""
    ow, oh = original_size
    if ow / oh > cur_w / cur_h:  # padding was added above and below
        new_h = int(oh * (cur_w / ow))
        pad = (cur_h - new_h) // 2
        return slice(pad, cur_h - pad), slice(0, cur_w)
    new_w = int(ow * (cur_h / oh))
    pad = (cur_w - new_w) // 2
    return slice(0, cur_h), slice(pad, cur_w - pad)


def anyres_grid_features(crop_feats: jax.Array, num_patches: Size, image_size: Size, max_crops: int = 9) -> jax.Array:
    """Crop features -> the unpadded (and possibly downscaled) grid (design §1.4).

    Args:
      crop_feats: float[nph*npw, g*g, C], crops row-major (the base image excluded).
      num_patches: (npw, nph) from :func:`anyres_grid_shape`.
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


def torch_linspace_f32(end: float, steps: int) -> np.ndarray:
    """``torch.linspace(0, end, steps)`` in float32, bit for bit (torch fills the first half from
    the start and the second from the end, with fused multiply-adds); the release rounds it to
    pick base-token ids, and a float64 linspace rounds differently for e.g. end = 7, 15, 53."""
    step = np.float64(np.float32(np.float32(end) / np.float32(max(steps - 1, 1))))
    i = np.arange(steps, dtype=np.float64)
    lo = (step * i).astype(np.float32)
    hi = (np.float64(np.float32(end)) - step * (steps - 1 - i)).astype(np.float32)
    return np.where(i < steps // 2, lo, hi)


def base_position_ids(h: int, w: int, g: int) -> np.ndarray:
    """int32[g, g]: each base token reuses the id of its nearest grid token,
    rows = round(linspace(0, h-1, g)), cols = round(linspace(0, w-1, g)) (round half to even)."""
    rows = np.round(torch_linspace_f32(h - 1, g)).astype(np.int64)
    cols = np.round(torch_linspace_f32(w - 1, g)).astype(np.int64)
    return (rows[:, None] * w + cols[None, :]).astype(np.int32)


# ------------------------------------------------------------------------------ memories


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


def _insert_row_newlines(ids: np.ndarray, w: int) -> np.ndarray:
    """Sorted grid ids -> the same with -1 (a newline) wherever the row changes, and at the end."""
    out = []
    for n, i in enumerate(ids):
        if n and i // w != ids[n - 1] // w:
            out.append(-1)
        out.append(int(i))
    out.append(-1)
    return np.asarray(out, np.int64)


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
    with_nl = _insert_row_newlines(sel_g, w)  # grid ids, -1 = newline
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


__all__ = [
    "ImageMemory", "MultiImageMemory", "anyres_grid_features", "anyres_grid_shape", "anyres_image_crops",
    "base_position_ids", "build_anyres_memory", "build_multi_image_memory", "divide_to_patches",
    "expand_to_square", "grid_pinpoints", "resize_and_pad_image", "select_best_resolution",
    "torch_linspace_f32", "unpad_slices",
]
