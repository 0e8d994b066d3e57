"""The per-video feature cache: keys, LRU, disk round trip (no pickle), atomicity, corruption."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import load_file

from hourllava_jax.data.errors import DataError
from hourllava_jax.infer.memory_cache import EncodedVideo, MemoryCache, video_key, vision_fingerprint

sys.path.insert(0, str(Path(__file__).parent))
from infer_fixtures import tiny_model  # noqa: E402

SETTINGS = {"fps": 1.0, "min_frames": 128, "max_frames": None, "size": 112}


def _video(path: Path, n: int = 3 << 20, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def _encoded(path: Path, t: int = 5, seed: int = 0) -> EncodedVideo:
    r = np.random.default_rng(seed)
    return EncodedVideo(r.standard_normal((t, 16, 32)).astype(np.float32), np.arange(t, dtype=np.int64) * 4,
                        np.arange(t) * 1.0 + 1 / 3, 5.25, str(path))


class Counter:
    def __init__(self, enc: EncodedVideo):
        self.enc, self.calls = enc, 0

    def __call__(self) -> EncodedVideo:
        self.calls += 1
        return self.enc


def _same(a: EncodedVideo, b: EncodedVideo) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)  # float64 round trip is exact
    assert (a.duration, a.path) == (b.duration, b.path)
    assert a.features.dtype == np.float32 and b.frame_indices.dtype == np.int64


def test_video_key_tracks_content_and_names_missing_files(tmp_path):
    v = _video(tmp_path / "a.mp4")
    k_quick, k_full = video_key(v), video_key(v, full=True)
    assert k_quick != k_full and len(k_quick) == 64
    assert video_key(v) == k_quick and video_key(v, full=True) == k_full
    # A byte changed in the middle: the full hash sees it; the quick key sees the new mtime.
    data = bytearray(v.read_bytes())
    data[len(data) // 2] ^= 0xFF
    v.write_bytes(bytes(data))
    os.utime(v, ns=(1, 1))
    assert video_key(v, full=True) != k_full
    assert video_key(v) != k_quick
    # A copy with the same bytes and mtime has the same key (content, not path).
    w = tmp_path / "copy.mp4"
    w.write_bytes(v.read_bytes())
    os.utime(w, ns=(1, 1))
    assert video_key(w) == video_key(v) and video_key(w, full=True) == video_key(v, full=True)
    with pytest.raises(DataError, match="nope.mp4: missing_file"):
        video_key(tmp_path / "nope.mp4")


def test_memory_lru_release_and_eviction(tmp_path):
    cache = MemoryCache(None, max_in_memory=2)
    vids = [_video(tmp_path / f"{i}.mp4", 1000, seed=i) for i in range(3)]
    fns = [Counter(_encoded(v, seed=i)) for i, v in enumerate(vids)]
    e0, src = cache.get_or_compute(vids[0], "m", SETTINGS, fns[0])
    assert src == "computed" and fns[0].calls == 1
    e0b, src = cache.get_or_compute(vids[0], "m", SETTINGS, fns[0])
    assert src == "memory" and e0b is e0 and fns[0].calls == 1
    cache.release(vids[0])
    assert len(cache) == 0
    assert cache.get_or_compute(vids[0], "m", SETTINGS, fns[0])[1] == "computed"
    cache.get_or_compute(vids[1], "m", SETTINGS, fns[1])
    cache.get_or_compute(vids[0], "m", SETTINGS, fns[0])  # 0 becomes most recent
    cache.get_or_compute(vids[2], "m", SETTINGS, fns[2])  # evicts 1
    assert len(cache) == 2
    assert cache.get_or_compute(vids[0], "m", SETTINGS, fns[0])[1] == "memory"
    assert cache.get_or_compute(vids[1], "m", SETTINGS, fns[1])[1] == "computed"
    # Another model or other sampling settings are other entries.
    assert cache.get_or_compute(vids[1], "m2", SETTINGS, fns[1])[1] == "computed"
    assert cache.get_or_compute(vids[1], "m", {**SETTINGS, "max_frames": 64}, fns[1])[1] == "computed"


def test_disk_round_trip_is_exact_and_pickle_free(tmp_path):
    v = _video(tmp_path / "a.mp4")
    enc = _encoded(v)
    fn = Counter(enc)
    store = tmp_path / "store"
    MemoryCache(store).get_or_compute(v, "f" * 64, SETTINGS, fn)
    files = list(store.rglob("*"))
    entries = [f for f in files if f.is_file()]
    assert len(entries) == 1 and entries[0].suffix == ".safetensors"  # no temporary file left behind
    arrays = load_file(str(entries[0]))  # plain safetensors: no pickle anywhere
    assert set(arrays) == {"features", "frame_indices", "timestamps"}
    with safe_open(str(entries[0]), framework="numpy") as f:
        meta = json.loads(f.metadata()["hourllava"])
    assert meta["duration"] == 5.25 and meta["num_frames"] == 5 and meta["settings"]["size"] == 112
    # A new process (fresh cache object) reads it back without computing.
    fresh = MemoryCache(store)
    got, src = fresh.get_or_compute(v, "f" * 64, SETTINGS, fn)
    assert src == "disk" and fn.calls == 1
    _same(got, enc)
    assert fresh.get_or_compute(v, "f" * 64, SETTINGS, fn)[1] == "memory"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_entry_is_recomputed_and_replaced(tmp_path, damage):
    v = _video(tmp_path / "a.mp4")
    enc = _encoded(v)
    store = tmp_path / "store"
    MemoryCache(store).get_or_compute(v, "f" * 64, SETTINGS, Counter(enc))
    (entry,) = [f for f in store.rglob("*.safetensors")]
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 64)
    else:  # a valid safetensors file of another entry copied over this one
        from safetensors.numpy import save_file

        save_file({"features": np.zeros((1, 2, 3), np.float32)}, str(entry), metadata={"hourllava": "{}"})
    cache = MemoryCache(store)
    fn = Counter(enc)
    got, src = cache.get_or_compute(v, "f" * 64, SETTINGS, fn)
    assert src == "computed" and fn.calls == 1 and cache.stats["corrupt"] == 1
    _same(got, enc)
    assert MemoryCache(store).get_or_compute(v, "f" * 64, SETTINGS, fn)[1] == "disk"  # repaired


def test_failed_compute_leaves_nothing(tmp_path):
    v = _video(tmp_path / "a.mp4")
    store = tmp_path / "store"
    cache = MemoryCache(store)

    def boom():
        raise DataError(v, "corrupt_video", "bad")

    with pytest.raises(DataError, match="a.mp4: corrupt_video"):
        cache.get_or_compute(v, "f" * 64, SETTINGS, boom)
    assert len(cache) == 0 and not [f for f in store.rglob("*") if f.is_file()]


def test_vision_fingerprint_depends_on_the_vision_tower_only():
    _, m = tiny_model(0, llm_scale=1.0)
    fp = vision_fingerprint(m)
    assert fp == vision_fingerprint(m)
    # Another LLM (a later training stage with the frozen tower) shares the cached features.
    emb = m.llm.embed_tokens.embedding
    emb[...] = emb[...] + 1.0
    assert vision_fingerprint(m) == fp
    # Any change to the tower invalidates them.
    param = next(v for _, v in nnx.iter_graph(m.vision_tower) if isinstance(v, nnx.Param))
    param[...] = param[...] + 1e-3
    assert vision_fingerprint(m) != fp
