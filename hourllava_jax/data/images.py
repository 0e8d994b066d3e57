"""Image records (LLaVA-OneVision layout, design §1.4) -> pixel units and visual layouts.

One image: ``anyres_max_9``: the base image resized (distorted) to S², then the S² crops of the
best pinpoint resolution (aspect kept, black padding), row-major; the model sees them unpooled
and the layout (:func:`~hourllava_jax.memory.layout.image_layout`) places the unpadded grid.
Several images: each padded to a square with grey and resized to S², one unit each
(:func:`~hourllava_jax.memory.layout.multi_image_layout`).

S is the vision tower's input side (384 for SigLIP-384) and g = S / patch its tokens per side.
Planning needs only each image's size, read from the file header (:func:`image_size`); the
pixels are decoded when the batch is loaded. Bad files raise :class:`DataError` naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.preprocess import resize_rgb
from hourllava_jax.data.anyres import anyres_grid_shape, anyres_image_crops, expand_to_square
from hourllava_jax.memory.layout import VisualLayout, image_layout, image_layout_size, multi_image_layout, multi_image_layout_size

# Decompression bombs are an error of the file, not a reason to stop a run: PIL's default limit
# (~89 Mpx, a warning, then an error at twice that) is kept and reported as a corrupt image.
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only. Raises DataError (missing, not an image)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, errors.MISSING_FILE, "image file does not exist")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except _PIL_ERRORS as e:
        raise DataError(path, errors.CORRUPT_IMAGE, f"not a readable image ({type(e).__name__}: {e})") from e
    if w < 1 or h < 1:
        raise DataError(path, errors.CORRUPT_IMAGE, f"image has size {w}x{h}")
    return w, h


def load_image(path: str | Path) -> Image.Image:
    """The decoded RGB image. Raises DataError (missing, truncated, not an image)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, errors.MISSING_FILE, "image file does not exist")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not in a worker's resize
            return im.convert("RGB")
    except _PIL_ERRORS as e:
        raise DataError(path, errors.CORRUPT_IMAGE, f"cannot decode image ({type(e).__name__}: {e})") from e


@dataclasses.dataclass(frozen=True)
class ImageGeometry:
    """What planning needs of an image sample: ``units`` (crops + base, or images),
    ``num_memory`` slots, ``max_decayed`` (an upper bound per placeholder) and ``placeholders``."""

    units: int
    num_memory: int
    max_decayed: int
    placeholders: int


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """The vision tower's input: ``size`` S pixels a side, ``tokens_per_side`` g = S / patch."""

    size: int
    tokens_per_side: int


def single_image_geometry(size: tuple[int, int], spec: ImageSpec, memory: MemoryConfig) -> ImageGeometry:
    npw, nph = anyres_grid_shape(size, memory.image_grid_pinpoints_max, spec.size)
    m, n = image_layout_size(size, (npw, nph), spec.tokens_per_side, memory)
    return ImageGeometry(1 + npw * nph, m, n, 1)


def multi_image_geometry(num_images: int, spec: ImageSpec, memory: MemoryConfig) -> ImageGeometry:
    m, n = multi_image_layout_size(num_images, spec.tokens_per_side**2, memory)
    return ImageGeometry(num_images, m, n, num_images)


def single_image_units(image: Image.Image, spec: ImageSpec, memory: MemoryConfig, *,
                       key: jax.Array | None = None) -> tuple[np.ndarray, VisualLayout]:
    """uint8[1 + nph·npw, S, S, 3] ([base, crops...]) and the image's layout."""
    crops, num_patches = anyres_image_crops(image, memory.image_grid_pinpoints_max, spec.size)
    units = np.stack([np.asarray(c, np.uint8) for c in crops])
    return units, image_layout(image.size, num_patches, spec.tokens_per_side, memory, key=key)


def multi_image_units(images: list[Image.Image], spec: ImageSpec, memory: MemoryConfig, *,
                      key: jax.Array | None = None) -> tuple[np.ndarray, VisualLayout]:
    """uint8[N, S, S, 3] (grey-padded squares, bicubic to S) and the samples' layout."""
    units = np.stack([resize_rgb(np.asarray(expand_to_square(im), np.uint8), spec.size) for im in images])
    return units, multi_image_layout(len(images), spec.tokens_per_side**2, memory, key=key)


__all__ = [
    "ImageGeometry", "ImageSpec", "image_size", "load_image", "multi_image_geometry", "multi_image_units",
    "single_image_geometry", "single_image_units",
]
