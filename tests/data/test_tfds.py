"""TFDS builder `videomarathon`: builds and reads back with no TensorFlow, into grain and the pipeline."""

from __future__ import annotations

import json
from collections import Counter
import sys

import grain
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from hourllava_jax.data import errors, synthetic  # noqa: E402
from hourllava_jax.data.features import FeatureStore, FeatureWriter  # noqa: E402
from hourllava_jax.data.records import load_records  # noqa: E402
from hourllava_jax.data.tfds_videomarathon import VideoMarathon  # noqa: E402
from hourllava_jax.data.video import decode_video  # noqa: E402


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Two synthetic videos with their records, features for one of them only, one malformed line."""
    root = tmp_path_factory.mktemp("vm_src")
    path, recs = synthetic.make_dataset(root, seed=1, num_videos=2, min_seconds=8, max_seconds=9, fps=2, size=32)
    with open(path, "a") as f:
        f.write("{not json\n")
    rng = np.random.default_rng(0)
    with FeatureWriter(root / "feature_store") as w:
        w.add(f"synthetic/{recs[0].video[:-4]}", rng.standard_normal((9, 16, 8)).astype(np.float32), 8.5)
    return root, recs


def test_features_config_builds_and_reads_without_tensorflow(src, tmp_path):
    root, recs = src
    b = VideoMarathon(data_dir=tmp_path, config="features", source_dir=root)
    b.download_and_prepare()
    assert "tensorflow" not in sys.modules
    with_feats = [r for r in recs if r.video == recs[0].video]
    assert b.skipped == {errors.MALFORMED_JSON: 1, errors.MISSING_FILE: len(recs) - len(with_feats)}
    ds = tfds.data_source("videomarathon/features", split="train", data_dir=tmp_path, download=False)
    assert len(ds) == len(with_feats)
    store = FeatureStore(root / "feature_store")
    for i in range(len(ds)):
        ex = ds[i]
        rec = json.loads(ex["record"])
        assert rec["video"] == recs[0].video and rec["id"] == ex["id"].decode()
        vf = store.get(f"synthetic/{rec['video'][:-4]}")
        np.testing.assert_array_equal(ex["features"], vf.features)
        assert ex["duration"] == np.float32(vf.duration)
    shapes = list(grain.MapDataset.source(ds).map(lambda e: e["features"].shape))
    assert shapes == [(9, 16, 8)] * len(ds)
    assert "tensorflow" not in sys.modules


def test_frames_config_builds_and_reads(src, tmp_path):
    root, recs = src
    b = VideoMarathon(data_dir=tmp_path, config="frames", source_dir=root)
    b.download_and_prepare()
    assert b.skipped == {errors.MALFORMED_JSON: 1}
    ds = tfds.data_source("videomarathon/frames", split="train", data_dir=tmp_path, download=False)
    assert len(ds) == len(recs)
    ex = ds[0]
    ref = decode_video(root / "videos" / "synthetic" / json.loads(ex["record"])["video"], size=64)
    np.testing.assert_array_equal(ex["frames"], ref.frames)
    assert ex["frames"].dtype == np.uint8 and ex["frames"].shape[1:] == (64, 64, 3)
    np.testing.assert_allclose(ex["timestamps"], ref.timestamps, rtol=1e-6)
    assert "tensorflow" not in sys.modules


def test_tfds_source_feeds_the_pipeline(src, tmp_path):
    from hourllava_jax.config import load_model_config
    from hourllava_jax.data.pipeline import PipelineConfig, TfdsSource, make_feature_pipeline
    from hourllava_jax.data.tokenizer import build_tokenizer

    root, recs = src
    VideoMarathon(data_dir=tmp_path, config="features", source_dir=root).download_and_prepare()
    ds = tfds.data_source("videomarathon/features", split="train", data_dir=tmp_path, download=False)
    texts = [t.value for r in load_records(root / "synthetic.jsonl", skipped=Counter()) for t in r.conversations]
    build_tokenizer(texts + ["The video lasts for 8.50 seconds, and 8 frames"], 300, tmp_path / "tok")
    cfg = PipelineConfig(batch_size=1, frame_buckets=(16,), text_multiple=64, long_video_seconds=1e9)
    pipe = make_feature_pipeline(TfdsSource(ds), tokenizer_dir=tmp_path / "tok", memory=load_model_config("tiny").memory,
                                 cfg=cfg, shard_options=grain.sharding.NoSharding())
    batches = list(pipe)
    assert len(batches) == len(ds)
    idx = np.linspace(0, 8, 8).astype(int)  # design §3: T = min(9, int(8.5)) = 8 of the 9 stored frames
    for b, batch in enumerate(batches):
        (i,) = pipe.plan.planned(b).rows
        np.testing.assert_array_equal(batch["features"][0, :8], ds[i]["features"][idx])
        assert batch["features"].shape == (1, 16, 16, 8)


def test_tfds_frames_feed_the_pipeline_as_pixels(src, tmp_path):
    """The ``frames`` config: stored 64x64 frames -> ``pixels`` at the tower's side (56 here, PIL
    bicubic), the time instruction naming the stored frame count, the max_frames cap applied."""
    from hourllava_jax.config import load_model_config
    from hourllava_jax.data.pipeline import PipelineConfig, TfdsSource, make_feature_pipeline
    from hourllava_jax.data.preprocess import preprocess_frames
    from hourllava_jax.data.tokenizer import build_tokenizer

    root, recs = src
    VideoMarathon(data_dir=tmp_path, config="frames", source_dir=root).download_and_prepare()
    ds = tfds.data_source("videomarathon/frames", split="train", data_dir=tmp_path, download=False)
    texts = [t.value for r in load_records(root / "synthetic.jsonl", skipped=Counter()) for t in r.conversations]
    build_tokenizer(texts + ["The video lasts for 8.50 seconds, and 12 frames"], 300, tmp_path / "tok")
    cfg = PipelineConfig(batch_size=1, frame_buckets=(16,), text_multiple=64, long_video_seconds=1e9, max_frames=12,
                         shuffle=False)
    pipe = make_feature_pipeline(TfdsSource(ds), tokenizer_dir=tmp_path / "tok", memory=load_model_config("tiny").memory,
                                 cfg=cfg, image_size=56, shard_options=grain.sharding.NoSharding())
    batches = list(pipe)
    assert len(batches) == len(ds) and pipe.skipped == {}
    from hourllava_jax.data.samples import load_light_tokenizer

    tok = load_light_tokenizer(tmp_path / "tok")
    for b, batch in enumerate(batches):
        (i,) = pipe.plan.planned(b).rows
        frames = ds[i]["frames"]
        idx = np.linspace(0, len(frames) - 1, 12).astype(np.int64)  # the max_frames cap
        assert "features" not in batch and batch["pixels"].shape == (1, 16, 56, 56, 3)
        np.testing.assert_array_equal(batch["pixels"][0, :12], preprocess_frames(frames[idx], 56))
        assert not batch["pixels"][0, 12:].any()
        ids = batch["input_ids"][0][batch["attention_mask"][0] & (batch["input_ids"][0] >= 0)]
        assert "and 12 frames are uniformly sampled" in tok._t.decode(ids.tolist())


def test_builds_from_the_manual_dir(src, tmp_path):
    root, recs = src
    b = VideoMarathon(data_dir=tmp_path, config="features")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    ds = tfds.data_source("videomarathon/features", split="train", data_dir=tmp_path, download=False)
    assert len(ds) == sum(r.video == recs[0].video for r in recs)
