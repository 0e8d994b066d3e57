"""The real model through the real trainer: synthetic mp4s -> features -> grain -> Hour-LLaVA.

The trainer's mechanics (sharding equivalence, multi-host, exact resume, corrupt checkpoints)
are tested on the stand-in model; this checks that Hour-LLaVA, its loss and the grain pipeline
plug into it: loss finite and falling, metrics and checkpoints written, a restart resumes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    py = sys.executable
    subprocess.run([py, str(REPO / "launch/make_synthetic.py"), "--out", str(root), "--num-videos", "8",
                    "--min-seconds", "16", "--max-seconds", "40", "--needle-lengths", "16", "--needle-depths", "0.5",
                    "--tokenizer-vocab", "512"], check=True, capture_output=True)
    subprocess.run([py, str(REPO / "launch/extract_features.py"), "--videos", str(root / "videos"), "--out",
                    str(root / "features"), "--tiny", "--min-frames", "16", "--no-progress"], check=True, capture_output=True)
    return root


def _overrides(root: Path, workdir: Path) -> list[str]:
    return ["--set", f"data.records=[{root / 'synthetic.jsonl'}]", f"data.feature_store={root / 'features'}",
            f"data.tokenizer={root / 'tokenizer'}"]


def test_hour_llava_trains_and_resumes(data, tmp_path):
    from hourllava_jax.cli.train import main

    work = tmp_path / "run"
    assert main(["--config", "tiny", "--workdir", str(work), *_overrides(data, work), "num_steps=6", "checkpoint.every=3",
                 "--stop-after", "3"]) == 0
    first = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in first] == [1, 2, 3]
    assert all(m["loss"] > 0 for m in first) and all(m["skipped"] == 0 for m in first)
    assert (work / "checkpoints" / "3").is_dir()
    assert main(["--config", "tiny", "--workdir", str(work), *_overrides(data, work), "num_steps=6", "checkpoint.every=3"]) == 0
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows][-3:] == [4, 5, 6]
    assert (work / "checkpoints" / "6").is_dir()
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_images_and_a_weighted_mixture_train(data, tmp_path, capsys):
    """Stage-1/3 data through the trainer: a video record file mixed 1:1 with a file of
    anyres and multi-image records (their own batches and compiled programs) and text."""
    import numpy as np
    from PIL import Image

    from hourllava_jax.cli.train import main

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    recs = []
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (80 + i, 100, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        recs.append({"id": f"i{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich colour dominates?"}, {"from": "gpt", "value": "red"}]})
    for i in range(8):
        recs.append({"id": f"m{i}", "image": [f"{i}.png", f"{i + 8}.png"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nAre they the same?"}, {"from": "gpt", "value": "no"}]})
    (tmp_path / "images.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    work = tmp_path / "run"
    args = ["--config", "tiny", "--workdir", str(work), "--set",
            f"data.records=[{data / 'synthetic.jsonl'},{tmp_path / 'images.jsonl'}]", "data.record_weights=[1,1]",
            f"data.image_root={tmp_path}", f"data.feature_store={data / 'features'}",
            f"data.tokenizer={data / 'tokenizer'}", "num_steps=4", "checkpoint.every=4"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(m["loss"]) and m["loss"] > 0 and m["skipped"] == 0 for m in rows)
    out = capsys.readouterr().out
    assert "image_pixels" in out and "memory_w" in out  # the anyres program was compiled
    assert out.count("compiled train step #") >= 2  # video and image batches: their own programs


def test_sigkill_resume_is_bitwise_exact_with_random_spatial_forgetting(data, tmp_path):
    """SIGKILL part-way and restart == the uninterrupted run, bit for bit, with the training
    default of random spatial forgetting (keyed by seed, epoch and record, issue 13)."""
    import signal
    import time

    import jax
    import numpy as np
    from train_harness import host_tree, subprocess_env

    from hourllava_jax.parallel.mesh import make_mesh
    from hourllava_jax.train.checkpoint import Checkpointer
    from hourllava_jax.train.config import load_train_config
    from hourllava_jax.train.metrics import read_metrics
    from hourllava_jax.train.state import create_train_state
    from hourllava_jax.cli.train import build_model_and_loss
    from hourllava_jax.train.config import model_config

    sets = ["--set", f"data.records=[{data / 'synthetic.jsonl'}]", f"data.feature_store={data / 'features'}",
            f"data.tokenizer={data / 'tokenizer'}", "num_steps=6", "checkpoint.every=2", "mesh={data: 2}"]
    cfg = load_train_config(REPO / "configs/train/tiny.yaml", [s for s in sets[1:]])
    assert model_config(cfg).memory.spatial_mode == "random"

    def launch(workdir, *extra):
        cmd = [sys.executable, str(REPO / "launch/train.py"), "--config", "tiny", "--workdir", str(workdir), *extra, *sets]
        return subprocess.Popen(cmd, env=subprocess_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(proc):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        return out

    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    finish(launch(ref_dir))
    proc = launch(run_dir, "--debug-step-sleep", "1.0")
    deadline = time.time() + 600
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if (run_dir / "metrics.jsonl").exists() and max(read_metrics(run_dir / "metrics.jsonl") or [0]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert max(read_metrics(run_dir / "metrics.jsonl")) < 6
    out = finish(launch(run_dir))
    assert "resumed from checkpoint 2" in out or "resumed from checkpoint 4" in out
    ref, got = read_metrics(ref_dir / "metrics.jsonl"), read_metrics(run_dir / "metrics.jsonl")
    for s in range(1, 7):
        assert got[s]["loss"] == ref[s]["loss"], s

    def params(workdir):
        ini = create_train_state(cfg, make_mesh({"data": 1}, devices=jax.devices()[:1]), build_model_and_loss(cfg)[0])
        ck = Checkpointer(workdir / "checkpoints", every=2, keep=3)
        state, data_state, step = ck.restore_latest(ini.abstract_state)
        ck.close()
        assert step == 6
        return host_tree(state.params), data_state

    (p1, d1), (p2, d2) = params(ref_dir), params(run_dir)
    assert d1 == d2
    jax.tree.map(np.testing.assert_array_equal, p1, p2)


def test_num_steps_is_one_epoch_of_the_records_when_not_given(data, tmp_path, capsys):
    """Stage configs give data.num_epochs: 1 and no num_steps: the launcher counts the global
    batches of one pass over the record files, logs it, and trains that many steps."""
    from hourllava_jax.train.config import load_train_config
    from hourllava_jax.cli.train import build_data, main

    work = tmp_path / "run"
    sets = [*_overrides(data, work), "num_steps=null", "data.num_epochs=1", "checkpoint.every=100"]
    assert main(["--config", "tiny", "--workdir", str(work), *sets, "--stop-after", "1"]) == 0
    out = capsys.readouterr().out
    cfg = load_train_config(REPO / "configs/train/tiny.yaml", sets[1:] + ["num_steps=1"])
    want = len(build_data(cfg, 0, 1).plan)
    assert want >= 2 and f"num_steps: {want} derived from the data" in out
    saved = (work / "train_config.yaml").read_text()
    assert f"num_steps: {want}" in saved


def test_mixture_components_have_their_own_seeds(data, tmp_path):
    """Each record file of a ``record_weights`` mixture shuffles and draws its random forgetting
    from its own seed: with one shared seed, two files of the same size got the same order and
    the same spatial draws record for record."""
    from hourllava_jax.cli.train import build_data, component_seed
    from hourllava_jax.train.config import load_train_config

    copy = tmp_path / "copy.jsonl"
    copy.write_text((data / "synthetic.jsonl").read_text())
    cfg = load_train_config("tiny", [f"data.records=[{data / 'synthetic.jsonl'},{copy}]", "data.record_weights=[1,1]",
                                     f"data.feature_store={data / 'features'}", f"data.tokenizer={data / 'tokenizer'}",
                                     "num_steps=4", "global_batch_size=2"])
    pipe = build_data(cfg, 0, 1)
    seeds = [c.cfg.seed for c in pipe.components]
    assert seeds == [component_seed(cfg.data.seed, 0), component_seed(cfg.data.seed, 1)] and seeds[0] != seeds[1]
    assert seeds == [c.cfg.seed for c in build_data(cfg, 0, 1).components]  # stable across builds
    # The same records, shuffled by the two seeds: the components' first batches differ.
    first = [next(iter(c)) for c in pipe.components]
    assert not all(np.array_equal(np.asarray(first[0][k]), np.asarray(first[1][k])) for k in first[0] if k in first[1])
