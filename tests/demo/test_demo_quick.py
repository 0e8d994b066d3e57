"""``launch/demo.py --quick`` end to end in a subprocess: data, features, both trainings,
held-out evaluation, report files. Accuracy values are not asserted beyond being valid
fractions: the smoke run is too short to learn (the full run's numbers are in docs/demo.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs it
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    proc = subprocess.run([sys.executable, str(ROOT / "launch/demo.py"), "--quick", "--workdir", str(work), "--seed", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr

    # The results table is printed, with both variants and the control's bound.
    assert "Held-out needle accuracy" in out
    for row in ("memaug", "control", "control bound"):
        assert row in out

    res = json.loads((work / "results.json").read_text())
    n_held = res["held_out_videos"]
    assert n_held == len((work / "data/held_out/needle.jsonl").read_text().splitlines()) > 0
    for variant in ("memaug", "control"):
        r = res[variant]
        assert r["n"] == n_held and 0.0 <= r["accuracy"] <= 1.0
        # metrics.jsonl: training steps logged with finite losses, then the held-out accuracy.
        lines = [json.loads(x) for x in (work / variant / "metrics.jsonl").read_text().splitlines()]
        losses = [x["loss"] for x in lines if "loss" in x]
        assert losses and all(isinstance(v, float) and v == v for v in losses)
        assert lines[-1]["eval/accuracy"] == pytest.approx(r["accuracy"])
        assert list((work / variant / "tensorboard").glob("events.out.tfevents.*"))
        assert any((work / variant / "checkpoint").iterdir())  # orbax checkpoint written
    assert 0.25 <= res["control_bound"] <= 1.0
    # Held-out videos are not training videos (different seeds, disjoint names).
    train_ids = {json.loads(x)["video"] for x in (work / "data/train/needle.jsonl").read_text().splitlines()}
    held_ids = {json.loads(x)["video"] for x in (work / "data/held_out/needle.jsonl").read_text().splitlines()}
    assert not train_ids & held_ids
    png = (work / "needle_heatmaps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    preds = (work / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 2 * n_held


# ------------------------------------------------------------------ fast unit checks of the task


def _item(t: int, needle: int, colour: str):
    import numpy as np

    from hourllava_jax.data.records import Record, Turn
    from hourllava_jax.demo.dataset import NeedleItem

    feats = np.stack([np.full((16, 4), i, np.float32) for i in range(t)])
    qa = [{"options": ["yellow", "red", "blue", "green"]}]
    rec = Record("r", (Turn("human", "<image>\nq"), Turn("gpt", "?")), "v.mp4", "needle", extra={"qa": qa})
    return NeedleItem(rec, feats, float(t), needle, colour, needle / (t - 1), t)


def test_with_needle_splices_one_frame_and_relabels() -> None:
    import numpy as np

    from hourllava_jax.demo.dataset import answer_options, conversation

    hay, donor = _item(32, needle=5, colour="red"), _item(32, needle=9, colour="blue")
    mixed = hay.with_needle(donor, 20)
    assert mixed.needle_frame == 20 and mixed.colour == "blue"
    np.testing.assert_array_equal(mixed.features[20], donor.features[9])  # donor's needle frame
    np.testing.assert_array_equal(mixed.features[5], hay.features[4])  # own needle replaced by its neighbour
    untouched = [i for i in range(32) if i not in (5, 20)]
    np.testing.assert_array_equal(mixed.features[untouched], hay.features[untouched])
    assert conversation(mixed, "word").conversations[1].value == "blue"
    assert conversation(mixed, "letter").conversations[1].value == "C"  # options: yellow red BLUE green
    assert answer_options(mixed, "letter") == (["A", "B", "C", "D"], 2)


def test_control_bound_counts_kept_needles() -> None:
    from hourllava_jax.config import load_model_config
    from hourllava_jax.demo.dataset import control_bound, kept_frames

    cfg = load_model_config("tiny")
    kept = kept_frames(32, cfg)
    assert list(kept) == [0, 4, 8, 13, 17, 22, 26, 31]  # linspace(0, 31, 32 // 4), design §2
    items = [_item(32, n, "red") for n in (22, 3, 16, 9)]  # one of four needles kept
    assert control_bound(items, cfg) == 0.25 + 0.75 / 4
