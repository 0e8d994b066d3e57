"""launch/extract_features.py on tiny generated videos: shapes, resume, bad video, equality with a direct computation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.data import errors, synthetic
from hourllava_jax.data.features import FeatureStore, read_failed
from hourllava_jax.data.preprocess import normalize
from hourllava_jax.data.video import decode_video, probe_video
from hourllava_jax.memory.resize import pool_frames
from hourllava_jax.model.siglip import SiglipVisionTower

_spec = importlib.util.spec_from_file_location("extract_features", Path(__file__).parents[2] / "launch" / "extract_features.py")
ef = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ef)

MIN_FRAMES = 6  # the release's 128, shrunk so the tiny videos stay cheap


def test_extraction_indices_release_rule():
    # 200 s, 6000 frames: 200 uniform indices (every 30th) plus the last frame
    idx = ef.extraction_indices(6000, 200.4)
    assert len(idx) == 201 and idx[0] == 0 and idx[1] == 30 and idx[-2] == 5970 and idx[-1] == 5999
    # a 60 s clip is sampled at 128 frames, plus the last
    idx = ef.extraction_indices(1800, 60.0)
    assert len(idx) == 129 and idx[-1] == 1799 and np.all(np.diff(idx) > 0)
    # fewer frames than needed: indices repeat (as the release does)
    idx = ef.extraction_indices(10, 3.0, min_frames=16)
    assert len(idx) == 17 and idx.min() == 0 and idx.max() == 9


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    synthetic.make_dataset(root, seed=0, num_videos=3, min_seconds=8, max_seconds=10, fps=2, size=32)
    (root / "videos" / "synthetic" / "zz_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 200)
    return root


def test_extract_shapes_resume_bad_video_and_direct_equality(videos, tmp_path):
    cfg = load_model_config("tiny")
    tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(0))
    enc = ef.FrameEncoder(tower, pool_size=cfg.memory.pool_size, image_size=cfg.vision.image_size, batch_frames=4)
    store = tmp_path / "store"
    counts = ef.extract_features(videos / "videos", store, enc, min_frames=MIN_FRAMES, shard_size=2, progress=False)
    assert counts == {"extracted": 3, errors.CORRUPT_VIDEO: 1}
    assert read_failed(store)["synthetic/zz_corrupt"]["reason"] == errors.CORRUPT_VIDEO

    fs = FeatureStore(store)
    keys = [k for k, _ in ef.list_videos(videos / "videos") if not k.endswith("zz_corrupt")]
    assert fs.keys() == keys
    p2, c = cfg.memory.pool_size**2, cfg.vision.hidden_size
    for key in keys:
        path = videos / "videos" / f"{key}.mp4"
        index = probe_video(path)
        idx = ef.extraction_indices(index.num_frames, index.duration, MIN_FRAMES)
        got = fs.get(key)
        assert got.features.shape == (len(idx), p2, c) and got.features.dtype == np.float32
        assert got.duration == round(index.duration, 2)
        # direct computation: decode, normalise, tower, bilinear pool (no sharding, no batching)
        frames = decode_video(path, indices=idx, size=cfg.vision.image_size).frames
        direct = np.asarray(pool_frames(tower(normalize(frames)), cfg.memory.pool_size))
        np.testing.assert_allclose(got.features, direct, rtol=1e-5, atol=1e-5)

    again = ef.extract_features(videos / "videos", store, enc, min_frames=MIN_FRAMES, progress=False)
    assert again == {"skipped_done": 3, "skipped_failed": 1}
    retry = ef.extract_features(videos / "videos", store, enc, min_frames=MIN_FRAMES, retry_failed=True, progress=False)
    assert retry == {"skipped_done": 3, errors.CORRUPT_VIDEO: 1}


def test_two_processes_split_the_videos(videos, tmp_path):
    cfg = load_model_config("tiny")
    tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(0))
    enc = ef.FrameEncoder(tower, pool_size=cfg.memory.pool_size, image_size=cfg.vision.image_size, batch_frames=8)
    store = tmp_path / "store"
    c0 = ef.extract_features(videos / "videos", store, enc, min_frames=MIN_FRAMES, process_index=0, process_count=2, progress=False)
    c1 = ef.extract_features(videos / "videos", store, enc, min_frames=MIN_FRAMES, process_index=1, process_count=2, progress=False)
    assert c0.get("extracted", 0) + c1.get("extracted", 0) == 3
    assert sorted(p.name for p in (store / "index").iterdir()) == ["p00000.jsonl", "p00001.jsonl"]
    assert len(FeatureStore(store)) == 3


def test_cli_tiny(videos, tmp_path, capsys):
    summary = ef.main(["--videos", str(videos / "videos"), "--out", str(tmp_path / "s"), "--tiny", "--min-frames",
                       str(MIN_FRAMES), "--batch-frames", "8", "--no-progress", "--process-index", "0", "--process-count", "1"])
    assert summary["counts"]["extracted"] == 3
    assert FeatureStore(tmp_path / "s").get(ef.list_videos(videos / "videos")[0][0]).features.shape[1:] == (16, 32)


def test_end_to_end_video_to_features_to_batch_to_loss(videos, tmp_path):
    """Extracted features -> grain pipeline -> the tiny HourLlava's loss (the batch contract holds)."""
    import grain
    import jax

    from hourllava_jax.data.pipeline import PipelineConfig, RecordSource, make_feature_pipeline
    from hourllava_jax.data.records import load_records
    from hourllava_jax.data.tokenizer import build_tokenizer
    from hourllava_jax.model.hour_llava import HourLlava, loss_fn

    cfg = load_model_config("tiny")
    enc = ef.build_encoder(None, tiny=True, batch_frames=8)
    ef.extract_features(videos / "videos", tmp_path / "store", enc, min_frames=MIN_FRAMES, progress=False)
    recs = load_records(videos / "synthetic.jsonl")
    build_tokenizer(synthetic.corpus_texts(recs), cfg.llm.vocab_size, tmp_path / "tok")
    pcfg = PipelineConfig(batch_size=2, frame_buckets=(16,), text_multiple=64, long_video_seconds=1e9)
    pipe = make_feature_pipeline(RecordSource(videos / "synthetic.jsonl"), tokenizer_dir=tmp_path / "tok",
                                 memory=cfg.memory, cfg=pcfg, store_dir=tmp_path / "store",
                                 shard_options=grain.sharding.NoSharding())
    batch = next(pipe)
    assert batch["features"].shape == (2, 16, 16, cfg.vision.hidden_size)
    model = HourLlava(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    loss, aux = jax.jit(lambda s, b: loss_fn(nnx.merge(graphdef, s), b))(state, batch)
    assert np.isfinite(float(loss)) and int(aux["tokens"]) > 0


def test_encoder_from_a_saved_siglip_checkpoint(tmp_path):
    """``--model DIR`` goes through ``load_pretrained``; the encoder equals that model + pooling.
    (A bare SigLIP directory is read the release's way, e.g. the penultimate layer: convert's rule.)"""
    from hourllava_jax.convert import load_pretrained, save_pretrained

    cfg = load_model_config("tiny")
    save_pretrained(SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(3)), cfg.vision, tmp_path / "siglip")
    enc = ef.build_encoder(str(tmp_path / "siglip"), pool_size=cfg.memory.pool_size, batch_frames=8)
    _, loaded = load_pretrained(tmp_path / "siglip")
    frames = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    direct = np.asarray(pool_frames(loaded(normalize(frames)), cfg.memory.pool_size))
    got = enc(frames)
    assert got.shape == (5, 16, cfg.vision.hidden_size)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)
