"""Feature store: round trip (f32/bf16), resumable writing, crash safety, corruption, .pt converter."""

from __future__ import annotations

import pickle

import ml_dtypes
import numpy as np
import pytest

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import (
    CORRUPT_FEATURES,
    FeatureStore,
    FeatureWriter,
    convert_pt_features,
    decode_features,
    encode_features,
    feature_key,
    pt_feature_files,
    read_failed,
)
from hourllava_jax.data.records import Record, Turn


def _feat(rng, n, p=4, c=8):
    return rng.standard_normal((n, p, c)).astype(np.float32)


def test_encode_decode_round_trip(rng):
    x = _feat(rng, 5)
    out = decode_features(encode_features("ds/a", x, 12.345))
    assert out.key == "ds/a" and out.duration == 12.35 and out.features.dtype == np.float32
    np.testing.assert_array_equal(out.features, x)
    b = decode_features(encode_features("ds/a", x, 3.0, dtype="bfloat16"))
    assert b.features.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(b.features, x.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("mangle", [lambda b: b[:-3], lambda b: b"XXXX" + b[4:], lambda b: b[:10], lambda b: b[:6] + b"\xff\xff\xff\x00" + b[10:]])
def test_decode_rejects_corrupt_blobs(rng, mangle):
    blob = encode_features("ds/a", _feat(rng, 2), 1.0)
    with pytest.raises(DataError) as e:
        decode_features(mangle(blob), "where")
    assert e.value.reason == CORRUPT_FEATURES


def test_encode_rejects_bad_arrays():
    with pytest.raises(ValueError):
        encode_features("k", np.zeros((0, 4, 8), np.float32), 1.0)
    with pytest.raises(ValueError):
        encode_features("k", np.full((1, 4, 8), np.nan, np.float32), 1.0)


def test_feature_key_matches_release_layout():
    r = Record("x", (Turn("human", "<image>\nq"), Turn("gpt", "a")), "sub/clip.mp4", "panda")
    assert feature_key(r) == "panda/sub/clip"


def test_store_write_read_resume(tmp_path, rng):
    feats = {f"ds/v{i}": _feat(rng, 3 + i) for i in range(5)}
    with FeatureWriter(tmp_path, shard_size=2) as w:
        for k in list(feats)[:3]:
            assert w.add(k, feats[k], 10.0 + int(k[-1]))
        assert not w.add("ds/v0", feats["ds/v0"], 1.0)  # duplicate in the same session
    # 3 videos, shards of 2: two committed shards
    assert len(list((tmp_path / "shards").glob("*.array_record"))) == 2
    w = FeatureWriter(tmp_path, shard_size=2)
    assert w.done == {"ds/v0", "ds/v1", "ds/v2"}
    added = [k for k in feats if w.add(k, feats[k], 10.0 + int(k[-1]))]
    w.close()
    assert added == ["ds/v3", "ds/v4"]
    store = FeatureStore(tmp_path)
    assert store.keys() == sorted(feats) and len(store) == 5
    for k, x in feats.items():
        got = store.get(k)
        np.testing.assert_array_equal(got.features, x)
        assert got.duration == 10.0 + int(k[-1])
        assert store.meta(k)["num_frames"] == x.shape[0]
    np.testing.assert_array_equal(store[0].features, feats["ds/v0"])
    # picklable for grain workers (readers are reopened)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get("ds/v4").features, feats["ds/v4"])


def test_crash_mid_shard_loses_only_the_open_shard(tmp_path, rng):
    w = FeatureWriter(tmp_path, shard_size=2)
    for i in range(3):
        w.add(f"ds/v{i}", _feat(rng, 2), 5.0)
    # no close(): simulate a crash; the third video sits in an uncommitted .tmp shard
    del w
    assert len(list((tmp_path / "shards").glob("*.tmp"))) == 1
    with open(tmp_path / "index" / "p00000.jsonl", "a") as f:
        f.write('{"key": "ds/torn"')  # torn last line of the index
    w2 = FeatureWriter(tmp_path, shard_size=2)
    assert w2.done == {"ds/v0", "ds/v1"}
    assert not list((tmp_path / "shards").glob("*.tmp"))
    assert w2.add("ds/v2", _feat(rng, 2), 5.0)
    w2.close()
    assert set(FeatureStore(tmp_path).keys()) == {"ds/v0", "ds/v1", "ds/v2"}


def test_missing_and_corrupt_entries_raise_data_error(tmp_path, rng):
    with FeatureWriter(tmp_path) as w:
        w.add("ds/a", _feat(rng, 2), 2.0)
        w.add("ds/b", _feat(rng, 2), 2.0)
    store = FeatureStore(tmp_path)
    with pytest.raises(DataError) as e:
        store.get("ds/none")
    assert e.value.reason == errors.MISSING_FILE
    # an index pointing at the wrong record is caught by the key check
    store._index["ds/a"] = dict(store._index["ds/a"], pos=1)
    with pytest.raises(DataError) as e:
        store.get("ds/a")
    assert e.value.reason == CORRUPT_FEATURES
    (shard,) = (tmp_path / "shards").glob("*.array_record")
    shard.unlink()
    with pytest.raises(DataError) as e:
        FeatureStore(tmp_path).get("ds/b")
    assert e.value.reason == errors.MISSING_FILE


def test_convert_release_pt_files(tmp_path, rng, torch_fp32):
    torch = torch_fp32
    src = tmp_path / "features" / "panda"
    src.mkdir(parents=True)
    good = _feat(rng, 4)
    torch.save({"vid_feat": torch.from_numpy(good), "duration": 130.57}, src / "a.pt")
    torch.save({"vid_feat": torch.from_numpy(good).to(torch.bfloat16), "duration": torch.tensor(7.0)}, src / "b.pt")
    (src / "bad.pt").write_bytes(b"not a zip file")
    torch.save({"something": 1}, src / "wrong.pt")
    files = pt_feature_files(tmp_path / "features")
    assert [k for k, _ in files] == ["panda/a", "panda/b", "panda/bad", "panda/wrong"]
    counts = convert_pt_features(files, tmp_path / "store", shard_size=1)
    assert counts == {"converted": 2, "skipped_done": 0, CORRUPT_FEATURES: 2}
    assert set(read_failed(tmp_path / "store")) == {"panda/bad", "panda/wrong"}
    store = FeatureStore(tmp_path / "store")
    np.testing.assert_array_equal(store.get("panda/a").features, good)
    assert store.get("panda/a").duration == 130.57
    np.testing.assert_array_equal(store.get("panda/b").features, good.astype(ml_dtypes.bfloat16).astype(np.float32))
    again = convert_pt_features(files[:2], tmp_path / "store")
    assert again == {"converted": 0, "skipped_done": 2}


@pytest.mark.parametrize("compression", ["uncompressed", "zstd:3", "snappy"])
def test_compression_options_round_trip(tmp_path, rng, compression):
    x = _feat(rng, 3)
    with FeatureWriter(tmp_path, compression=compression) as w:
        w.add("ds/a", x, 4.0)
    np.testing.assert_array_equal(FeatureStore(tmp_path).get("ds/a").features, x)
