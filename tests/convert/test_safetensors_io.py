"""Streamed reading and atomic, sharded writing of Hugging Face safetensors directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from hourllava_jax.convert.mapping import ConversionError
from hourllava_jax.convert.safetensors_io import INDEX_NAME, SINGLE_NAME, CheckpointReader, write_checkpoint


def _tensors(rng, n=6):
    return {f"layer.{i}.weight": rng.standard_normal((4, 3 + i)).astype(np.float32) for i in range(n)}


def test_single_file_round_trip(tmp_path, rng):
    t = _tensors(rng)
    out = write_checkpoint(tmp_path / "ckpt", t.items(), {"model_type": "x"})
    assert (out / SINGLE_NAME).is_file() and not (out / INDEX_NAME).exists()
    with CheckpointReader(out) as r:
        assert sorted(r.keys()) == sorted(t)
        for k, v in t.items():
            np.testing.assert_array_equal(r.get(k), v)
            assert r.shape(k) == v.shape
        assert r.config() == {"model_type": "x"}


def test_sharded_write_has_index_and_reads_back(tmp_path, rng):
    t = _tensors(rng)
    out = write_checkpoint(tmp_path / "ckpt", t.items(), {}, max_shard_bytes=100)
    index = json.loads((out / INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in t.values())
    with CheckpointReader(out) as r:
        for k, v in t.items():
            np.testing.assert_array_equal(r.get(k), v)


def test_loose_shards_without_index(tmp_path, rng):
    d = tmp_path / "loose"
    d.mkdir()
    save_file({"a": np.ones(2, np.float32)}, str(d / "x.safetensors"))
    save_file({"b": np.zeros(3, np.float32)}, str(d / "y.safetensors"))
    with CheckpointReader(d) as r:
        assert sorted(r.keys()) == ["a", "b"]


def test_failed_export_leaves_nothing(tmp_path, rng):
    def gen():
        yield "a", np.ones(3, np.float32)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_checkpoint(tmp_path / "ckpt", gen(), {})
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(tmp_path):
    write_checkpoint(tmp_path / "c", [("a", np.ones(1, np.float32))], {})
    with pytest.raises(ConversionError, match="already exists"):
        write_checkpoint(tmp_path / "c", [("a", np.ones(1, np.float32))], {})


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ConversionError, match="not found"):
        CheckpointReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no \\*.safetensors"):
        CheckpointReader(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConversionError, match="model.safetensors"):
        CheckpointReader(bad)
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / INDEX_NAME).write_text(json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ConversionError, match="model-00001-of-00002.safetensors"):
        CheckpointReader(idx)
    ok = write_checkpoint(tmp_path / "noconf", [("a", np.ones(1, np.float32))], {})
    (ok / "config.json").unlink()
    with pytest.raises(ConversionError, match="config.json"):
        CheckpointReader(ok).config()
