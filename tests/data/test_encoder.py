"""The one frame encoder (data/encoder.py): chunking, padding, sharding, unpooled mode, and the
towers it loads from SigLIP and Hour-LLaVA checkpoints, each against a direct computation."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.data.encoder import FrameEncoder, _encode_chunk
from hourllava_jax.data.preprocess import normalize
from hourllava_jax.memory.resize import pool_frames
from hourllava_jax.model.siglip import SiglipVisionTower

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    cfg = load_model_config("tiny")
    tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(0))
    frames = np.random.default_rng(0).integers(0, 256, (11, 112, 112, 3), dtype=np.uint8)
    direct = np.asarray(pool_frames(tower(normalize(frames)), cfg.memory.pool_size))  # one batch, no padding
    return cfg, tower, frames, direct


def test_chunks_padding_and_input_dtypes_match_one_direct_batch(tiny):
    cfg, tower, frames, direct = tiny
    p = cfg.memory.pool_size
    for chunk in (4, 11, 16):  # 11 = 2x4 + 3 (padded), exact, one padded chunk
        enc = FrameEncoder(tower, pool_size=p, chunk=chunk)
        got = enc(frames)
        assert got.shape == (11, p * p, cfg.vision.hidden_size) and got.dtype == np.float32
        np.testing.assert_allclose(got, direct, **TOL)
    # normalised float pixels are taken as they are
    np.testing.assert_allclose(FrameEncoder(tower, pool_size=p, chunk=4)(normalize(frames)), direct, **TOL)
    enc = FrameEncoder(tower, pool_size=p, chunk=4)
    assert (enc.image_size, enc.tokens_per_frame, enc.hidden_size) == (112, p * p, cfg.vision.hidden_size)


def test_one_compile_for_every_length(tiny):
    cfg, tower, frames, _ = tiny
    enc = FrameEncoder(tower, pool_size=cfg.memory.pool_size, chunk=4)
    enc(frames[:1])
    size = _encode_chunk._cache_size()
    for n in (3, 4, 5, 11):
        enc(frames[:n])
    FrameEncoder(tower, pool_size=cfg.memory.pool_size, chunk=4)(frames[:2])  # a second encoder shares it
    assert _encode_chunk._cache_size() == size


def test_unpooled_features(tiny):
    cfg, tower, frames, _ = tiny
    enc = FrameEncoder(tower, pool_size=None, chunk=8)
    g2 = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
    got = enc(frames[:5])
    assert got.shape == (5, g2, cfg.vision.hidden_size) and enc.tokens_per_frame == g2
    np.testing.assert_allclose(got, np.asarray(tower(normalize(frames[:5]))), **TOL)


def test_sharded_over_devices_equals_one_device(tiny):
    cfg, tower, frames, direct = tiny
    devices = jax.local_devices()
    if len(devices) < 2:
        pytest.skip("needs several devices (tests/conftest.py sets 8 virtual CPU devices)")
    enc = FrameEncoder(tower, pool_size=cfg.memory.pool_size, chunk=6, devices=devices)
    assert enc.chunk % len(devices) == 0  # 6 rounded up to the device count
    np.testing.assert_allclose(enc(frames), direct, **TOL)


def test_bad_input_is_a_clear_error(tiny):
    cfg, tower, frames, _ = tiny
    enc = FrameEncoder(tower, pool_size=cfg.memory.pool_size, chunk=4)
    with pytest.raises(ValueError, match=r"expected frames \[N, 112, 112, 3\]"):
        enc(frames[:, :64])
    with pytest.raises(ValueError, match="no frames"):
        enc(frames[:0])
    with pytest.raises(ValueError, match="uint8 RGB or normalised floats"):
        enc(frames.astype(np.int32))
    with pytest.raises(ValueError, match="chunk"):
        FrameEncoder(tower, pool_size=4, chunk=0)


def test_from_siglip_and_hour_llava_checkpoints(tiny, tmp_path):
    """A bare SigLIP directory (pool 8 unless given) and an Hour-LLaVA one (its vision tower only,
    its pool size) give what the loaded model computes; an LLM directory is refused."""
    from hourllava_jax.convert import load_pretrained, save_pretrained
    from hourllava_jax.convert.mapping import ConversionError
    from hourllava_jax.model.hour_llava import HourLlava

    cfg, tower, frames, direct = tiny
    save_pretrained(tower, cfg.vision, tmp_path / "siglip")
    _, loaded = load_pretrained(tmp_path / "siglip")
    enc = FrameEncoder.from_checkpoint(tmp_path / "siglip", chunk=4)
    assert enc.pool_size == 8
    np.testing.assert_allclose(enc(frames), np.asarray(pool_frames(loaded(normalize(frames)), 8)), **TOL)

    model = HourLlava(cfg, rngs=nnx.Rngs(5))
    save_pretrained(model, cfg, tmp_path / "hour_llava")
    enc = FrameEncoder.from_checkpoint(tmp_path / "hour_llava", chunk=4)
    assert enc.pool_size == cfg.memory.pool_size
    np.testing.assert_allclose(enc(frames), np.asarray(model.encode_frames(normalize(frames))), **TOL)
    # and the encoder of the in-memory model equals HourLlava.encode_frames (what inference runs)
    np.testing.assert_allclose(FrameEncoder(model.vision_tower, pool_size=cfg.memory.pool_size, chunk=4)(frames),
                               np.asarray(model.encode_frames(normalize(frames))), **TOL)

    save_pretrained(model.llm, cfg.llm, tmp_path / "llm")
    with pytest.raises(ConversionError, match="no vision tower"):
        FrameEncoder.from_checkpoint(tmp_path / "llm")
