"""grain feature pipeline: static shapes, streams, workers == no workers, resume, sharding, bad data."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import grain
import jax
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from hourllava_jax.config import load_model_config
from hourllava_jax.data import errors, samples
from hourllava_jax.data.chat import tokenize_record
from hourllava_jax.data.features import CORRUPT_FEATURES, FeatureStore, FeatureWriter
from hourllava_jax.data.frames import feature_indices
from hourllava_jax.data.pipeline import (
    LONG,
    DevicePrefetch,
    PipelineConfig,
    RecordSource,
    SampleBuilder,
    make_feature_pipeline,
)
from hourllava_jax.data.records import parse_record
from hourllava_jax.data.tokenizer import build_tokenizer, load_tokenizer

P, C = 16, 8  # tiny config: pool 4 -> 16 tokens per frame; channels kept small
MEMORY = dataclasses.replace(load_model_config("tiny").memory, spatial_mode="random")
BUCKETS = (16, 32, 64)


def _video_record(i: int, seconds: float) -> dict:
    return {"id": f"r{i}", "video": f"v{i}.mp4", "data_source": "syn",
            "conversations": [{"from": "human", "value": f"<image>\nWhat happens at second {i}?"},
                              {"from": "gpt", "value": f"A red square number {i}."},
                              {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "Nothing" + " more" * (i % 4)}]}


def _text_record(i: int) -> dict:
    return {"id": f"t{i}", "conversations": [{"from": "human", "value": f"Say {i}."}, {"from": "gpt", "value": f"{i}"}]}


def make_data(root: Path, *, bad: bool) -> dict:
    """16 video records (8 long >= 40 s, 8 short), 4 text-only; with ``bad``: a malformed line,
    a record without features and one whose stored features are corrupt."""
    rng = np.random.default_rng(0)
    lines, secs = [], {}
    with FeatureWriter(root / "store", shard_size=5) as w:
        for i in range(16):
            seconds = float(40 + i) if i % 2 else float(5 + i)
            secs[i] = seconds
            n = max(int(seconds), 16) + 1  # release rule: max(int(duration), 128 here 16) + last frame
            w.add(f"syn/v{i}", rng.standard_normal((n, P, C)).astype(np.float32), seconds + 0.37)
            lines.append(json.dumps(_video_record(i, seconds)))
    lines += [json.dumps(_text_record(i)) for i in range(4)]
    if bad:
        lines.insert(3, '{"id": "broken", "conversations": [')
        lines.append(json.dumps(_video_record(99, 10)))  # no features stored
        lines.append(json.dumps(_video_record(77, 10)))
        w = ArrayRecordWriter(str(root / "store" / "shards" / "bad-00000.array_record"), "group_size:1")
        w.write(b"HLVF1\n garbage that is not a feature record")
        w.close()
        entry = {"key": "syn/v77", "shard": "bad-00000.array_record", "pos": 0, "num_frames": 20, "duration": 20.0,
                 "shape": [20, P, C], "dtype": "float32"}
        (root / "store" / "index" / "bad.jsonl").write_text(json.dumps(entry) + "\n")
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    return secs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    make_data(root, bad=False)
    texts = [json.loads(line) for line in (root / "records.jsonl").read_text().splitlines()]
    corpus = [t["value"] for r in texts for t in r["conversations"]]
    corpus += ["The video lasts for 41.37 seconds, and 41 frames are uniformly sampled from it. "
               "Please answer the following questions related to this video."] * 4
    build_tokenizer(corpus, 300, root / "tok")
    bad_root = tmp_path_factory.mktemp("pipe_bad")
    make_data(bad_root, bad=True)
    return {"root": root, "bad": bad_root}


def _pipe(root, tok_root=None, memory=MEMORY, **kw):
    cfg = PipelineConfig(**{"batch_size": 2, "seed": 3, "frame_buckets": BUCKETS, "text_multiple": 32,
                            "long_video_seconds": 40.0, **kw})
    return make_feature_pipeline(RecordSource(root / "records.jsonl"), tokenizer_dir=(tok_root or root) / "tok",
                                 memory=memory, cfg=cfg, store_dir=root / "store",
                                 shard_options=grain.sharding.NoSharding())


def _pipe_sharded(root, index, count, **kw):
    cfg = PipelineConfig(**{"batch_size": 2, "seed": 3, "frame_buckets": BUCKETS, "text_multiple": 32,
                            "long_video_seconds": 40.0, **kw})
    return make_feature_pipeline(RecordSource(root / "records.jsonl"), tokenizer_dir=root / "tok", memory=MEMORY,
                                 cfg=cfg, store_dir=root / "store",
                                 shard_options=grain.sharding.ShardOptions(index, count, drop_remainder=True))


def _equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batches_are_static_single_stream_and_correct(data):
    root = data["root"]
    pipe = _pipe(root)
    batches = list(pipe)
    # 8 long, 8 short videos, 4 text: groups of 2 per (stream, bucket) -> 10 batches, maybe remainders
    assert len(batches) == len(pipe.plan) == (20 - sum(pipe.plan.dropped_per_epoch)) // 2 >= 8
    tok = samples.load_light_tokenizer(root / "tok")  # == transformers' (test below), without its import cost
    store = FeatureStore(root / "store")
    source = RecordSource(root / "records.jsonl")
    seen = set()
    for b, batch in enumerate(batches):
        pb = pipe.plan.planned(b)
        assert batch["input_ids"].shape == (2, pb.text_len) and pb.text_len % 32 == 0
        metas = [pipe.plan.metas[i] for i in pb.rows]
        assert {m.stream for m in metas} == {pb.stream}  # design §3.1 stage 3: one stream per micro-batch
        if pb.units == 0:
            assert "features" not in batch
        else:
            assert batch["features"].shape == (2, pb.units, P, C) and pb.units in BUCKETS
            assert batch["memory_src"].shape == (2, pb.memory) and batch["decayed"].shape == (2, 1, pb.decayed)
            assert {m.stream == LONG for m in metas} == {all(m.num_frames > 0 for m in metas) and pb.stream == LONG}
        for row, i in enumerate(pb.rows):
            seen.add(i)
            rec = parse_record(json.loads(source[i]["record"]), "x")
            if rec.video is None:
                ref = tokenize_record(rec, tok)
            else:
                vf = store.get(f"syn/{rec.video[:-4]}")
                idx = feature_indices(vf.num_frames, vf.duration)
                assert len(idx) == min(vf.num_frames, int(vf.duration))
                np.testing.assert_array_equal(batch["features"][row, : len(idx)], vf.features[idx])
                assert not batch["features"][row, len(idx):].any()
                ref = tokenize_record(rec, tok, seconds=vf.duration, n_frames=len(idx))
                assert f"and {len(idx)} frames" in tok._t.decode(ref.input_ids[ref.input_ids >= 0].tolist())
            n = len(ref.input_ids)
            np.testing.assert_array_equal(batch["input_ids"][row, :n], ref.input_ids)
            np.testing.assert_array_equal(batch["labels"][row, :n], ref.labels)
            assert batch["attention_mask"][row].sum() == n
    assert len(seen) == 2 * len(batches)  # no sample twice in an epoch
    assert pipe.skipped == {}


def test_two_workers_give_the_same_batches_as_none(data):
    root = data["root"]
    # Uniform forgetting: random keys would cost each worker process jax compilations (~10 s on
    # this shared machine); the per-sample keys are checked in-process below.
    memory = dataclasses.replace(MEMORY, spatial_mode="uniform")
    ref = list(_pipe(root, memory=memory))
    with _pipe(root, memory=memory, worker_count=2) as pipe:
        got = list(pipe)
    _equal(got, ref)


def test_resume_in_the_same_process(data):
    root = data["root"]
    full = [next(p) for p in [_pipe(root, num_epochs=None)] for _ in range(14)]  # crosses an epoch
    pipe = _pipe(root, num_epochs=None)
    first = [next(pipe) for _ in range(6)]
    state = json.loads(json.dumps(pipe.get_state()))
    fresh = _pipe(root, num_epochs=None)
    fresh.set_state(state)
    _equal(first + [next(fresh) for _ in range(8)], full)
    with pytest.raises(ValueError, match="another dataset"):
        _pipe(root, num_epochs=None, seed=4).set_state(state)


def test_epochs_are_reshuffled(data):
    pipe = _pipe(data["root"], num_epochs=None)
    n0 = len(pipe.plan._plan_epoch(0))
    rows = [pipe.plan.planned(b).rows for b in range(2 * n0)]
    assert rows[:n0] != rows[n0:]
    assert all(pipe.plan.planned(b).epoch == 1 for b in range(n0, 2 * n0))
    pipe.plan.planned(5 * n0)  # plans epochs 2..5; only the last two plans stay cached
    assert len(pipe.plan._epochs) == 2 and 0 not in pipe.plan._epochs
    assert [pipe.plan.planned(b).rows for b in range(n0)] == rows[:n0]  # recomputed identically


_RESUME_SCRIPT = """
import json, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_pipeline import _pipe
from pathlib import Path
pipe = _pipe(Path({root!r}), num_epochs=None)
pipe.set_state(json.loads(Path({state!r}).read_text()))
np.savez({out!r}, **{{f"{{b}}/{{k}}": v for b in range(3) for k, v in next(pipe).items()}})
"""


def test_resume_in_a_fresh_process(data, tmp_path):
    root = data["root"]
    pipe = _pipe(root, num_epochs=None)
    for _ in range(4):
        next(pipe)
    (tmp_path / "state.json").write_text(json.dumps(pipe.get_state()))
    expected = [next(pipe) for _ in range(3)]
    script = _RESUME_SCRIPT.format(tests=str(Path(__file__).parent), root=str(root), state=str(tmp_path / "state.json"),
                                   out=str(tmp_path / "out.npz"))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(Path(__file__).parents[2]), timeout=120)
    got = np.load(tmp_path / "out.npz")
    for b, batch in enumerate(expected):
        for k, v in batch.items():
            np.testing.assert_array_equal(got[f"{b}/{k}"], v)


def test_two_processes_are_disjoint_cover_and_agree_on_shapes(data):
    root = data["root"]
    whole = list(_pipe(root, batch_size=4))
    p0 = _pipe_sharded(root, 0, 2)
    p1 = _pipe_sharded(root, 1, 2)
    b0, b1 = list(p0), list(p1)
    assert len(b0) == len(b1) == len(whole)
    rows0 = [r for b in range(len(b0)) for r in p0.plan[b]["rows"]]
    rows1 = [r for b in range(len(b1)) for r in p1.plan[b]["rows"]]
    assert not set(rows0) & set(rows1)
    assert sorted(rows0 + rows1) == sorted(r for b in range(len(whole)) for r in p0.plan.planned(b).rows)
    for x, y, w in zip(b0, b1, whole):  # each process holds its half of the global batch
        for k in w:
            np.testing.assert_array_equal(np.concatenate([x[k], y[k]]), w[k], err_msg=k)


def test_bad_samples_are_skipped_counted_and_logged_once(data, caplog):
    bad = data["bad"]
    samples._LOGGED.clear()
    with caplog.at_level(logging.WARNING, logger="hourllava_jax.data.pipeline"):
        pipe = _pipe(bad, data["root"], batch_size=1)
        batches = list(pipe)
    assert pipe.plan_skipped == {errors.MALFORMED_JSON: 1, errors.MISSING_FILE: 1}
    assert pipe.skipped == {errors.MALFORMED_JSON: 1, errors.MISSING_FILE: 1, CORRUPT_FEATURES: 1}
    assert pipe.get_state()["load_skipped"] == {CORRUPT_FEATURES: 1}
    assert len(batches) == 21  # 20 good samples + the corrupt one as a filler row
    fillers = [b for b in batches if b["attention_mask"].sum() == 1]
    assert len(fillers) == 1 and (fillers[0]["labels"] == -100).all()
    assert fillers[0]["features"].shape[1:] == (32, P, C) and not fillers[0]["features"].any()
    messages = [r.getMessage() for r in caplog.records]
    for reason in (errors.MALFORMED_JSON, errors.MISSING_FILE, CORRUPT_FEATURES):
        assert sum(f"({reason};" in m for m in messages) == 1


def test_light_tokenizer_matches_transformers(data):
    tok = load_tokenizer(data["root"] / "tok")
    light = samples.load_light_tokenizer(data["root"] / "tok")
    rec = parse_record(_video_record(3, 41.0), "x")
    a = tokenize_record(rec, tok, seconds=41.37, n_frames=41)
    b = tokenize_record(rec, light, seconds=41.37, n_frames=41)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(light) == len(tok)


def test_random_forgetting_key_is_per_sample_and_reproducible(data):
    root = data["root"]
    pipe = _pipe(root)
    source = RecordSource(root / "records.jsonl")
    b = SampleBuilder(tokenizer_dir=root / "tok", memory=MEMORY, cfg=pipe.cfg, store_dir=root / "store")
    s1 = b.build(source[1], epoch=0, source_index=1)
    s2 = b.build(source[1], epoch=0, source_index=1)
    s3 = b.build(source[1], epoch=1, source_index=1)
    np.testing.assert_array_equal(s1.layout.decayed[0], s2.layout.decayed[0])
    assert not np.array_equal(s1.layout.decayed[0], s3.layout.decayed[0])


def test_device_prefetch_shards_batches_and_keeps_state(data):
    root = data["root"]
    ref = list(_pipe(root))
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2], axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    dev = DevicePrefetch(_pipe(root), sharding, size=2)
    first = next(dev)
    assert dev.get_state()["next_batch"] == 1  # the prefetched batch is not yet consumed
    assert first["input_ids"].sharding == sharding
    for k, v in ref[0].items():
        np.testing.assert_array_equal(np.asarray(first[k]), v)
    rest = list(dev)
    assert len(rest) == len(ref) - 1


def test_state_round_trips_through_orbax(data, tmp_path):
    import orbax.checkpoint as ocp

    root = data["root"]
    pipe = _pipe(root)
    next(pipe), next(pipe)
    ckpt = ocp.Checkpointer(ocp.JsonCheckpointHandler())
    ckpt.save(tmp_path / "data_state", args=ocp.args.JsonSave(pipe.get_state()))
    restored = ckpt.restore(tmp_path / "data_state", args=ocp.args.JsonRestore())
    fresh = _pipe(root)
    fresh.set_state(restored)
    _equal([next(fresh), next(fresh)], [next(pipe), next(pipe)])


def test_raw_video_mode_gives_pixels(data, tmp_path):
    from hourllava_jax.data import synthetic
    from hourllava_jax.data.preprocess import normalize
    from hourllava_jax.data.video import decode_video

    path, recs = synthetic.make_dataset(tmp_path, seed=2, num_videos=2, min_seconds=8, max_seconds=9, fps=2, size=32)
    cfg = PipelineConfig(batch_size=1, frame_buckets=(32,), text_multiple=64, long_video_seconds=1e9, shuffle=False)
    pipe = make_feature_pipeline(RecordSource(path), tokenizer_dir=data["root"] / "tok", memory=MEMORY, cfg=cfg,
                                 video_root=tmp_path, image_size=56, shard_options=grain.sharding.NoSharding())
    batches = list(pipe)
    assert len(batches) == len(recs)
    tok = samples.load_light_tokenizer(data["root"] / "tok")
    for b, batch in enumerate(batches):
        (i,) = pipe.plan.planned(b).rows
        ref = decode_video(tmp_path / "videos" / "synthetic" / recs[i].video, size=56)
        t = len(ref.indices)  # design §3.2 raw rule: < 128 s, so min(N, 128) = all N frames
        assert "features" not in batch and batch["pixels"].shape == (1, 32, 56, 56, 3)
        np.testing.assert_array_equal(batch["pixels"][0, :t], normalize(ref.frames))
        assert not batch["pixels"][0, t:].any()
        ids = batch["input_ids"][0][batch["attention_mask"][0] & (batch["input_ids"][0] >= 0)]
        assert f"and {t} frames are uniformly sampled" in tok._t.decode(ids.tolist())


def test_resume_on_another_process_count(data):
    """A state saved by 1 process (batch 4) resumes on 2 processes (batch 2 each): same global batches."""
    root = data["root"]
    one = _pipe(root, batch_size=4, num_epochs=None)
    next(one), next(one)
    state = json.loads(json.dumps(one.get_state()))
    following = [next(one) for _ in range(2)]
    halves = []
    for p in range(2):
        it = _pipe_sharded(root, p, 2, num_epochs=None)
        it.set_state(state)
        halves.append([next(it) for _ in range(2)])
    for b, whole in enumerate(following):
        for k in whole:
            np.testing.assert_array_equal(np.concatenate([halves[0][b][k], halves[1][b][k]]), whole[k], err_msg=k)


def test_record_source_reads_json_lists_and_reports_a_broken_one(tmp_path):
    good = [_text_record(0), _text_record(1)]
    (tmp_path / "a.json").write_text(json.dumps(good, indent=1))
    (tmp_path / "b.json").write_text('[{"id": "x", "conversations": [')
    src = RecordSource([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(src) == 3
    assert [json.loads(src[i]["record"])["id"] for i in range(2)] == ["t0", "t1"]
    b = SampleBuilder(tokenizer_dir="unused", memory=MEMORY, cfg=PipelineConfig(batch_size=1))
    with pytest.raises(errors.DataError) as e:
        b.record(src[2])
    assert e.value.reason == errors.MALFORMED_JSON and "b.json" in str(e.value)


def test_metadata_cache_is_reused_and_invalidated(data, tmp_path, monkeypatch):
    root = data["bad"]
    cache = tmp_path / "meta.json"
    kw = dict(batch_size=1, seed=3, frame_buckets=BUCKETS, text_multiple=32, long_video_seconds=40.0)

    def make(**over):
        return make_feature_pipeline(RecordSource(root / "records.jsonl"), tokenizer_dir=data["root"] / "tok",
                                     memory=MEMORY, cfg=PipelineConfig(**{**kw, **over}), store_dir=root / "store",
                                     shard_options=grain.sharding.NoSharding(), meta_cache=cache)

    first = make()
    assert cache.is_file()
    calls = []
    real = SampleBuilder.meta
    monkeypatch.setattr(SampleBuilder, "meta", lambda self, el: calls.append(1) or real(self, el))
    again = make()
    assert calls == []  # served from the cache
    assert again.plan_skipped == first.plan_skipped == {errors.MALFORMED_JSON: 1, errors.MISSING_FILE: 1}
    assert [again.plan.planned(b) for b in range(len(again.plan))] == [first.plan.planned(b) for b in range(len(first.plan))]
    _equal([next(again) for _ in range(3)], [next(first) for _ in range(3)])
    make(long_video_seconds=30.0)  # an option the metadata depends on: recomputed
    assert len(calls) == len(RecordSource(root / "records.jsonl"))


def test_mixing_interleaves_components_by_weight_and_resumes(data):
    """3:1 mix of two record sets (here one set under two shuffles): every mixed batch is the
    next batch of the component grain's mix picks, 6 of the first 8 from the first; resumes exactly."""
    from hourllava_jax.data.pipeline import mix_pipelines

    root = data["root"]

    def mixture():
        return mix_pipelines([_pipe(root, num_epochs=None), _pipe(root, num_epochs=None, seed=4)], [3, 1])

    mix = mixture()
    got = [next(mix) for _ in range(8)]
    comps = [iter(_pipe(root, num_epochs=None)), iter(_pipe(root, num_epochs=None, seed=4))]
    ref_a, ref_b = [next(comps[0]) for _ in range(8)], [next(comps[1]) for _ in range(8)]
    picks = []
    for batch in got:
        if ref_a and all(np.array_equal(batch[k], ref_a[0][k]) for k in batch) and batch.keys() == ref_a[0].keys():
            picks.append(0)
            ref_a.pop(0)
        else:
            _equal([batch], [ref_b.pop(0)])
            picks.append(1)
    assert picks.count(0) == 6 and picks.count(1) == 2
    state = json.loads(json.dumps(mix.get_state()))
    assert state["next_batch"] == 8 and state["fingerprint"]["weights"] == [3.0, 1.0]
    want = [next(mix) for _ in range(4)]
    fresh = mixture()
    fresh.set_state(state)
    _equal([next(fresh) for _ in range(4)], want)
    with pytest.raises(ValueError, match="another dataset"):
        mix_pipelines([_pipe(root, num_epochs=None), _pipe(root, num_epochs=None, seed=4)], [1, 1]).set_state(state)
    with pytest.raises(ValueError, match="positive weight"):
        mix_pipelines([_pipe(root)], [0])
