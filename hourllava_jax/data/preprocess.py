"""SigLIP pixel preprocessing exactly as the release (design §1.1).

RGB; resize straight to 384x384 (aspect ratio not kept) with PIL's bicubic filter on the uint8
image; x / 255; (x - 0.5) / 0.5. PIL is used rather than an equivalent resampler because its
bicubic (a = -0.5, antialiased support when downscaling, uint8 rounding) is what the
checkpoints saw; libswscale's bicubic differs by up to 42/255 (design §8.4).

The two halves are separate so a decoder can keep uint8 frames (4x smaller) until the model
needs them: ``resize_rgb`` (uint8 -> uint8) and ``normalize`` (uint8 -> float32 in [-1, 1]).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIGLIP_SIZE = 384  # so400m-patch14-384 input side
SIGLIP_MEAN = 0.5
SIGLIP_STD = 0.5


def resize_rgb(rgb: np.ndarray, size: int | None = SIGLIP_SIZE) -> np.ndarray:
    """uint8[H, W, 3] -> uint8[size, size, 3] by PIL bicubic (``size=None``: unchanged)."""
    if size is None:
        return rgb
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8[H, W, 3] RGB, got {rgb.dtype}{list(rgb.shape)}")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8[..., 3] -> float32[..., 3]: ``(x / 255 - 0.5) / 0.5`` (SigLIP mean/std 0.5)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    return (x - np.float32(SIGLIP_MEAN)) / np.float32(SIGLIP_STD)


def preprocess_frames(frames: np.ndarray, size: int = SIGLIP_SIZE) -> np.ndarray:
    """uint8[T, H, W, 3] RGB video frames -> float32[T, size, size, 3] SigLIP input."""
    if frames.ndim != 4:
        raise ValueError(f"expected uint8[T, H, W, 3] frames, got shape {list(frames.shape)}")
    if frames.shape[1:3] == (size, size) or len(frames) == 0:
        # Already at size (decode_video resizes per frame); PIL's resize is the identity there.
        return normalize(frames.reshape(len(frames), size, size, 3))
    return normalize(np.stack([resize_rgb(f, size) for f in frames]))


def preprocess_image(image: Image.Image | np.ndarray, size: int = SIGLIP_SIZE) -> np.ndarray:
    """One image (PIL in any mode, or uint8[H, W, 3]) -> float32[size, size, 3], distorted resize.

    This is the resize-to-square used for video frames and for the anyres base image (design §1.4);
    the anyres crops and padding live with the image pipeline.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return normalize(resize_rgb(np.ascontiguousarray(image), size))


__all__ = ["SIGLIP_MEAN", "SIGLIP_SIZE", "SIGLIP_STD", "normalize", "preprocess_frames", "preprocess_image", "resize_rgb"]
