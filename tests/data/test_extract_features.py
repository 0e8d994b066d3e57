"""Pre-extraction (data/extract.py, cli/extract.py) on tiny generated videos: the release's frame
indices, shapes, durations, resume, bad video, records and callback, process split, CLI, and
equality with a direct computation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

from hourllava_jax.cli import extract as cli
from hourllava_jax.config import load_model_config
from hourllava_jax.data import errors, synthetic
from hourllava_jax.data.extract import build_encoder, extract_features, list_videos, record_videos
from hourllava_jax.data.features import FeatureStore, feature_key, read_failed
from hourllava_jax.data.frames import extraction_indices, feature_indices
from hourllava_jax.data.preprocess import normalize
from hourllava_jax.data.records import load_records
from hourllava_jax.data.video import decode_video, probe_video
from hourllava_jax.memory.resize import pool_frames
from hourllava_jax.model.siglip import SiglipVisionTower

MIN_FRAMES = 6  # the release's 128, shrunk so the tiny videos stay cheap
NTSC = 30000 / 1001  # 29.97 fps as a float, as the release reads float(stream.average_rate)


def release_indices(total_frames: int, fps: float, num_frm: int = 128) -> np.ndarray:
    """The release's extraction script (read_video_pyav, mp4 branch), line for line."""
    duration = int(total_frames / fps)
    sampled_frm = max(duration, num_frm)
    if num_frm > total_frames:
        indices = np.arange(total_frames, dtype=int)
    else:
        indices = np.linspace(0, total_frames - 1, sampled_frm, dtype=int)
    if total_frames - 1 not in indices:
        indices = np.append(indices, total_frames - 1)
    return indices


# (N, fps) -> number of stored frames: all N below 128, else max(int(N / fps), 128)
EXPECTED_K = {(50, 25): 50, (127, 25): 127, (128, 25): 128, (129, 25): 128, (1799, 25): 128, (3601, 25): 144,
              (50, NTSC): 50, (127, NTSC): 127, (128, NTSC): 128, (129, NTSC): 128, (1799, NTSC): 128,
              (3601, NTSC): 128}


@pytest.mark.parametrize("n,fps", sorted(EXPECTED_K, key=lambda x: (x[1], x[0])))
def test_extraction_indices_are_the_releases(n, fps):
    idx = extraction_indices(n, fps)
    assert idx.dtype == np.int64 and len(idx) == EXPECTED_K[(n, fps)]
    np.testing.assert_array_equal(idx, release_indices(n, fps))
    assert idx[0] == 0 and idx[-1] == n - 1 and np.all(np.diff(idx) > 0)  # nothing appended, no repeats
    if n < 128:
        np.testing.assert_array_equal(idx, np.arange(n))
    else:
        np.testing.assert_array_equal(idx, np.linspace(0, n - 1, len(idx)).astype(np.int64))


def test_extraction_indices_hand_values():
    # 3601 frames at 25 fps (144.04 s): 144 frames, step 3600 / 143 = 25.17
    assert extraction_indices(3601, 25.0)[:4].tolist() == [0, 25, 50, 75]
    # 129 frames: 128 of them; exactly one frame is skipped
    assert len(set(range(129)) - set(extraction_indices(129, 25.0).tolist())) == 1
    assert extraction_indices(0, 25.0).shape == (0,)
    with pytest.raises(ValueError, match="native_fps"):
        extraction_indices(10, 0.0)


def test_load_time_rule_over_stored_frames():
    """What the data pipeline then takes (design §3): T = min(k, int(duration)) stored rows."""
    for n, fps in EXPECTED_K:
        k, duration = len(extraction_indices(n, fps)), n / fps
        rows = feature_indices(k, duration)
        assert len(rows) == max(1, min(k, int(duration))) and rows[-1] == (k - 1 if len(rows) > 1 else 0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    synthetic.make_dataset(root, seed=0, num_videos=3, min_seconds=8, max_seconds=10, fps=2, size=32)
    (root / "videos" / "synthetic" / "zz_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 200)
    return root


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(None, tiny=True, chunk=4)


def test_extract_shapes_resume_bad_video_and_direct_equality(videos, encoder, tmp_path):
    cfg = load_model_config("tiny")
    tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(0))  # build_encoder(tiny=True)'s tower
    store = tmp_path / "store"
    counts = extract_features(videos / "videos", store, encoder, min_frames=MIN_FRAMES, shard_size=2)
    assert counts == {"extracted": 3, errors.CORRUPT_VIDEO: 1}
    assert read_failed(store)["synthetic/zz_corrupt"]["reason"] == errors.CORRUPT_VIDEO

    fs = FeatureStore(store)
    keys = [k for k, _ in list_videos(videos / "videos") if not k.endswith("zz_corrupt")]
    assert fs.keys() == keys
    for key in keys:
        path = videos / "videos" / f"{key}.mp4"
        index = probe_video(path)
        idx = extraction_indices(index.num_frames, index.native_fps, MIN_FRAMES)
        assert len(idx) == max(int(index.num_frames / 2), MIN_FRAMES)  # 2-fps videos of 8-10 s
        got = fs.get(key)
        assert got.features.shape == (len(idx), encoder.tokens_per_frame, encoder.hidden_size)
        assert got.features.dtype == np.float32
        # the stored duration is the stream's, N / fps on these constant-rate files (the release's)
        assert got.duration == round(index.num_frames / 2, 2) == round(index.duration, 2)
        # direct computation: decode, normalise, tower, bilinear pool (no chunking, no padding)
        frames = decode_video(path, indices=idx, size=encoder.image_size).frames
        direct = np.asarray(pool_frames(tower(normalize(frames)), encoder.pool_size))
        np.testing.assert_allclose(got.features, direct, rtol=1e-5, atol=1e-5)

    again = extract_features(videos / "videos", store, encoder, min_frames=MIN_FRAMES)
    assert again == {"skipped_done": 3, "skipped_failed": 1}
    retry = extract_features(videos / "videos", store, encoder, min_frames=MIN_FRAMES, retry_failed=True)
    assert retry == {"skipped_done": 3, errors.CORRUPT_VIDEO: 1}


def test_records_callback_and_resume(videos, encoder, tmp_path):
    """Only the records' videos (each once), ``on_video`` for every one, a missing file recorded."""
    recs = load_records(videos / "synthetic.jsonl")
    first = feature_key(recs[0])
    chosen = [r for r in recs if feature_key(r) == first]
    assert len(chosen) >= 1
    missing = [dataclasses.replace(chosen[0], id="gone", video="gone.mp4")]
    seen: list[tuple[str, str]] = []
    store = tmp_path / "store"
    counts = extract_features(videos / "videos", store, encoder, records=chosen + missing, min_frames=MIN_FRAMES,
                              on_video=lambda k, o: seen.append((k, o)), writer="demo")
    assert counts == {"extracted": 1, errors.MISSING_FILE: 1}
    assert seen == [("synthetic/gone", errors.MISSING_FILE), (first, "extracted")]
    assert FeatureStore(store).keys() == [first] and (store / "index" / "demo.jsonl").is_file()
    seen.clear()
    counts = extract_features(videos / "videos", store, encoder, records=recs, min_frames=MIN_FRAMES,
                              on_video=lambda k, o: seen.append((k, o)), writer="demo")
    assert counts == {"extracted": 2, "skipped_done": 1}
    assert [k for k, _ in seen] == [first] + [k for k, _ in record_videos(videos / "videos", recs) if k != first]


def test_two_processes_split_the_videos(videos, encoder, tmp_path):
    store = tmp_path / "store"
    c0 = extract_features(videos / "videos", store, encoder, min_frames=MIN_FRAMES, process_index=0, process_count=2)
    c1 = extract_features(videos / "videos", store, encoder, min_frames=MIN_FRAMES, process_index=1, process_count=2)
    assert c0.get("extracted", 0) + c1.get("extracted", 0) == 3
    assert sorted(p.name for p in (store / "index").iterdir()) == ["p00000.jsonl", "p00001.jsonl"]
    assert len(FeatureStore(store)) == 3
    with pytest.raises(ValueError, match="process_index"):
        extract_features(videos / "videos", store, encoder, process_index=2, process_count=2)


def test_cli_tiny_over_local_devices(videos, tmp_path, capsys):
    """The CLI splits each chunk over the 8 virtual CPU devices; same features as one device."""
    args = ["--videos", str(videos / "videos"), "--out", str(tmp_path / "s"), "--tiny", "--min-frames",
            str(MIN_FRAMES), "--chunk", "8", "--no-progress", "--process-index", "0", "--process-count", "1",
            "--records", str(videos / "synthetic.jsonl")]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"] == {"extracted": 3} and summary["process"] == "0/1"  # the corrupt file has no record
    key = list_videos(videos / "videos")[0][0]
    one_device = tmp_path / "one"
    extract_features(videos / "videos", one_device, build_encoder(None, tiny=True, chunk=8), min_frames=MIN_FRAMES)
    np.testing.assert_allclose(FeatureStore(tmp_path / "s").get(key).features, FeatureStore(one_device).get(key).features,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit, match="--model DIR or --tiny"):
        cli.main(["--videos", str(videos / "videos"), "--out", str(tmp_path / "x")])


def test_end_to_end_video_to_features_to_batch_to_loss(videos, tmp_path):
    """Extracted features -> grain pipeline -> the tiny HourLlava's loss (the batch contract holds)."""
    import grain
    import jax

    from hourllava_jax.data.pipeline import PipelineConfig, RecordSource, make_feature_pipeline
    from hourllava_jax.data.tokenizer import build_tokenizer
    from hourllava_jax.model.hour_llava import HourLlava, loss_fn

    cfg = load_model_config("tiny")
    enc = build_encoder(None, tiny=True, chunk=8)
    extract_features(videos / "videos", tmp_path / "store", enc, min_frames=MIN_FRAMES)
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


def test_console_script_and_launch_wrapper_point_at_the_cli():
    import importlib
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    target = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["hourllava-extract"]
    module, func = target.split(":")
    assert getattr(importlib.import_module(module), func) is cli.main
    assert "from hourllava_jax.cli.extract import main" in (root / "launch" / "extract_features.py").read_text()
