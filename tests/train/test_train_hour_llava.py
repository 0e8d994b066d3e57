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
    from launch.train import main

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
