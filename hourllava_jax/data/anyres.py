"""Images: ``anyres_max_9`` geometry on the image side (design §1.4).

Pure functions on PIL images, as LLaVA-NeXT: pick the best pinpoint resolution, resize keeping
the aspect, pad black and centre, cut 384² crops, plus a base image resized (distorted) to 384².
Sizes are (width, height) as PIL reports them, as in the release. The model side (unpadding the
crops' feature grid, the image memory) is :mod:`hourllava_jax.memory.image_grid` and
:mod:`hourllava_jax.memory.layout`.
"""

from __future__ import annotations

import math

from hourllava_jax.memory.image_grid import Size


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


__all__ = [
    "Size", "anyres_grid_shape", "anyres_image_crops", "divide_to_patches", "expand_to_square", "grid_pinpoints",
    "resize_and_pad_image", "select_best_resolution",
]
