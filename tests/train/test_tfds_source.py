"""``data.source: tfds``: build a tiny ``videomarathon`` dataset with ``hourllava-build-tfds``, read it
through the grain pipeline (sharded over processes, resumable) and train the tiny Hour-LLaVA from
it, killed with SIGKILL part-way and resumed exactly (``launch/train.py`` in subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from hourllava_jax.cli import build_tfds  # noqa: E402
from hourllava_jax.config import load_model_config  # noqa: E402
from hourllava_jax.data.features import FeatureWriter  # noqa: E402
from hourllava_jax.data.pipeline import PipelineConfig  # noqa: E402
from hourllava_jax.data.tfds_pipeline import make_tfds_pipeline, open_tfds_source  # noqa: E402
from hourllava_jax.train.metrics import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NAME = "videomarathon/features"
TIMEOUT = 300
COLOURS = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 records over 6 videos (features of the tiny tower: float32[N, 16, 32]), one record whose
    features are missing, a tokenizer; built into a TFDS data_dir by the console script's main."""
    from hourllava_jax.data.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("tfds_src")
    rng = np.random.default_rng(0)
    recs = []
    with FeatureWriter(root / "feature_store") as w:
        for v in range(6):
            n = 16 + 2 * v
            w.add(f"synthetic/v{v}", rng.standard_normal((n, 16, 32)).astype(np.float32), float(n))
            for q in range(2):
                recs.append({"id": f"v{v}q{q}", "video": f"v{v}.mp4", "data_source": "synthetic", "conversations": [
                    {"from": "human", "value": f"<image>\nWhich colour is shown {'first' if q else 'last'}?"},
                    {"from": "gpt", "value": COLOURS[(v + q) % 4]}]})
    missing = {**recs[0], "id": "nofeat", "video": "absent.mp4"}
    (root / "records.jsonl").write_text("\n".join(json.dumps(r) for r in [*recs, missing]) + "\n")
    texts = [t["value"].replace("<image>", "") for r in recs for t in r["conversations"]]
    build_tokenizer(texts, 300, root / "tokenizer")
    out = root.parent / f"{root.name}_tfds"
    assert build_tfds.main(["--source", str(root), "--out", str(out)]) == 0
    return root, out, recs


def test_build_counts_and_skips(dataset, capsys, tmp_path):
    root, out, recs = dataset
    src = open_tfds_source(NAME, out)
    assert len(src) == len(recs)  # the record without features was skipped
    assert {json.loads(src[i]["record"])["id"] for i in range(len(src))} == {r["id"] for r in recs}
    assert build_tfds.main(["--source", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # no records
    assert "no *.jsonl records" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="data.tfds_dir="):
        open_tfds_source(NAME, tmp_path / "nothing_built_here")


def _pipeline(dataset, batch_size: int, index: int = 0, count: int = 1):
    import grain

    root, out, _ = dataset
    memory = load_model_config("tiny").memory
    cfg = PipelineConfig(batch_size=batch_size, seed=3, num_epochs=None, frame_buckets=(16, 32),
                         text_multiple=64, decayed_multiple=32, pad_id=0)
    return make_tfds_pipeline(NAME, out, tokenizer_dir=root / "tokenizer", memory=memory, cfg=cfg, image_size=112,
                              shard_options=grain.sharding.ShardOptions(index, count, drop_remainder=True))


def test_processes_share_each_global_batch_and_resume(dataset):
    whole = _pipeline(dataset, 4)
    halves = [_pipeline(dataset, 2, p, 2) for p in range(2)]
    for _ in range(4):  # two epochs of 3 global batches, reshuffled: the rows of each process are disjoint
        full, parts = next(whole), [next(h) for h in halves]
        assert "features" in full
        for k in full:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), full[k], err_msg=k)
    state = whole.get_state()
    want = [next(whole) for _ in range(2)]
    again = _pipeline(dataset, 4)
    again.set_state(json.loads(json.dumps(state)))
    for w in want:
        got = next(again)
        for k in w:
            np.testing.assert_array_equal(got[k], w[k], err_msg=k)


def _launch(work: Path, dataset, *args: str) -> subprocess.Popen:
    root, out, _ = dataset
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(jax.config.jax_compilation_cache_dir or REPO / ".jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               JAX_DEFAULT_MATMUL_PRECISION="highest",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(REPO / "launch" / "train.py"), "--config", "tiny", "--workdir", str(work), *args,
           "--set", "data.source=tfds", f"data.tfds_name={NAME}", f"data.tfds_dir={out}",
           f"data.tokenizer={root / 'tokenizer'}", "global_batch_size=4", "num_steps=3", "checkpoint.every=1",
           "checkpoint.async_save=false", "tensorboard=false"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_train_from_tfds_sigkill_and_resume_exactly(dataset, tmp_path):
    ref = tmp_path / "uninterrupted"
    _finish(_launch(ref, dataset))
    want = read_metrics(ref / "metrics.jsonl")
    assert sorted(want) == [1, 2, 3] and all(np.isfinite(m["loss"]) and m["skipped"] == 0 for m in want.values())

    work = tmp_path / "killed"
    proc = _launch(work, dataset, "--debug-step-sleep", "3")
    deadline = time.time() + TIMEOUT
    while not (work / "checkpoints" / "1").is_dir():  # step 1 committed, step 2 sleeping
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    assert max(read_metrics(work / "metrics.jsonl")) < 3
    out = _finish(_launch(work, dataset))
    assert int(out.split("resumed from checkpoint ")[1].split()[0]) >= 1
    got = read_metrics(work / "metrics.jsonl")
    assert sorted(got) == [1, 2, 3]
    for s in (1, 2, 3):  # bitwise: same program, same data position after the restart
        assert got[s]["loss"] == want[s]["loss"], s
        assert got[s].get("grad_norm") == want[s].get("grad_norm"), s


def test_config_names_the_missing_key():
    from hourllava_jax.train.config import ConfigError, load_train_config

    cfg = load_train_config(REPO / "configs" / "train" / "tiny.yaml", ["data.source=tfds", "data.tokenizer=t"])
    with pytest.raises(ConfigError, match="data.tfds_name"):
        cfg.data.check_sources()
    cfg = load_train_config(REPO / "configs" / "train" / "tiny.yaml",
                            ["data.source=tfds", "data.tokenizer=t", f"data.tfds_name={NAME}", "data.records=[a.jsonl]"])
    with pytest.raises(ConfigError, match="data.records"):
        cfg.data.check_sources()
