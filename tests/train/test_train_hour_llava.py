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
