"""``launch/demo.py --quick`` end to end in a subprocess, on the product's path: data, compose,
extraction, the trainer (init from the composed start), export, the evaluation runner, report.
Accuracy values are not asserted beyond being valid fractions: the smoke run is too short to
learn (the full run's numbers are in docs/demo.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert n_held == len(json.loads((work / "data/held_out/needle.json").read_text())) > 0
    for variant in ("memaug", "control"):
        r = res[variant]
        assert r["n"] == n_held and 0.0 <= r["accuracy"] <= 1.0
        vdir = work / variant
        # The trainer's own outputs: metrics with finite losses, TensorBoard, an orbax checkpoint.
        lines = [json.loads(x) for x in (vdir / "metrics.jsonl").read_text().splitlines()]
        losses = [x["loss"] for x in lines if "loss" in x]
        assert losses and all(isinstance(v, float) and v == v for v in losses)
        assert list((vdir / "tensorboard").glob("events.out.tfevents.*"))
        assert (vdir / "checkpoints").is_dir() and any((vdir / "checkpoints").iterdir())
        # The export is a complete Hugging Face directory with the run's tokenizer.
        assert (vdir / "hf/config.json").is_file() and (vdir / "hf/tokenizer.json").is_file()
        hf = json.loads((vdir / "hf/config.json").read_text())
        assert hf["hourllava"]["memory"]["pool_size"] == 4  # the trained (tiny) model's config, not compose's
        assert (variant == "memaug") == ("model.vision_resampler.layers.0.self_attn.Wqkv.weight" in _hf_keys(vdir / "hf"))
        # The evaluation runner scored every held-out question.
        recs = [json.loads(x) for f in sorted((vdir / "eval/results/needle").glob("shard-*.jsonl"))
                for x in f.read_text().splitlines()]
        assert len(recs) == n_held and all(x["status"] == "ok" for x in recs)
    assert 0.25 <= res["control_bound"] <= 1.0
    # Held-out videos are not training videos (different seeds, disjoint names).
    train_ids = {json.loads(x)["video"] for x in (work / "data/train/needle.jsonl").read_text().splitlines()}
    held_ids = {json.loads(x)["video"] for x in (work / "data/held_out/needle.jsonl").read_text().splitlines()}
    assert not train_ids & held_ids
    png = (work / "needle_heatmaps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    preds = (work / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 2 * n_held


def _hf_keys(path: Path) -> set[str]:
    from hourllava_jax.convert.safetensors_io import CheckpointReader

    with CheckpointReader(path) as r:
        return set(r.keys())


# ------------------------------------------------------------------ fast unit checks of the task


def _item(t: int, needle: int, colour: str):
    from hourllava_jax.data.records import Record, Turn
    from hourllava_jax.demo.dataset import NeedleItem

    feats = np.stack([np.full((16, 4), i, np.float32) for i in range(t)])
    meta = {"needle": {"frame": needle, "colour": colour, "depth": needle / (t - 1), "length_seconds": t, "n_frames": t}}
    rec = Record("r", (Turn("human", "<image>\nq"), Turn("gpt", "?")), "v.mp4", "needle", extra={"duration": float(t), **meta})
    return NeedleItem(rec, feats, float(t), needle, colour)


def test_with_needle_splices_one_frame() -> None:
    hay, donor = _item(32, needle=5, colour="red"), _item(32, needle=9, colour="blue")
    mixed = hay.with_needle(donor, 20)
    assert mixed.needle_frame == 20 and mixed.colour == "blue"
    np.testing.assert_array_equal(mixed.features[20], donor.features[9])  # donor's needle frame
    np.testing.assert_array_equal(mixed.features[5], hay.features[4])  # own needle replaced by its neighbour
    untouched = [i for i in range(32) if i not in (5, 20)]
    np.testing.assert_array_equal(mixed.features[untouched], hay.features[untouched])


def test_training_questions_are_the_evaluation_runner_s() -> None:
    """A spliced training record asks what the runner asks a needle item and answers with the
    continuation the runner scores, so training and evaluation read the same text."""
    from hourllava_jax.data.records import IMAGE_TOKEN
    from hourllava_jax.demo.data import eval_item
    from hourllava_jax.demo.dataset import spliced_record
    from hourllava_jax.eval.prompt import build_prompt

    hay, donor = _item(32, needle=5, colour="red"), _item(32, needle=9, colour="yellow")
    rec = spliced_record(7, hay.with_needle(donor, 12))
    assert rec.video == "splice000007.mp4" and rec.extra["needle"]["frame"] == 12
    item = eval_item(rec, "v.mp4")
    assert item.options == ("red", "green", "blue", "yellow") and item.answer == "D"
    assert rec.conversations[0].value == f"{IMAGE_TOKEN}\n{build_prompt(item)}"
    assert rec.conversations[1].value == "D. yellow"  # the runner's default continuation "{letter}. {option}"


def test_control_bound_counts_kept_needles() -> None:
    from hourllava_jax.config import load_model_config
    from hourllava_jax.demo.dataset import control_bound, kept_frames, needle_kept

    mem = load_model_config("tiny").memory
    assert list(kept_frames(32, mem)) == [0, 4, 8, 13, 17, 22, 26, 31]  # linspace(0, 31, 32 // 4), design §2
    kept = [needle_kept(32, n, mem) for n in (22, 3, 16, 9)]  # one of four needles kept
    assert kept == [True, False, False, False]
    assert control_bound(kept) == 0.25 + 0.75 / 4


def test_fold_feature_norm_equals_standardising_the_input(tmp_path: Path) -> None:
    """The folded projector on raw features equals the original one on standardised features."""
    import jax.numpy as jnp
    from flax import nnx

    from hourllava_jax.config import load_model_config
    from hourllava_jax.convert import load_pretrained, save_pretrained
    from hourllava_jax.demo.start import fold_feature_norm
    from hourllava_jax.model.hour_llava import HourLlava

    cfg = load_model_config("tiny")
    save_pretrained(HourLlava(cfg, rngs=nnx.Rngs(0)), cfg, tmp_path / "a")
    rng = np.random.default_rng(0)
    c = cfg.vision.hidden_size
    mean, std = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2, size=c).astype(np.float32)
    fold_feature_norm(tmp_path / "a", tmp_path / "b", mean, std)
    _, a = load_pretrained(tmp_path / "a")
    _, b = load_pretrained(tmp_path / "b")
    x = rng.normal(size=(3, c)).astype(np.float32) * 3 + 1
    np.testing.assert_allclose(np.asarray(b.projector(jnp.asarray(x))), np.asarray(a.projector(jnp.asarray((x - mean) / std))),
                               rtol=1e-5, atol=1e-5)


def test_standin_llm_draws_its_matrices_at_one_over_sqrt_width() -> None:
    """The demo's random Qwen2: every matrix (embedding included) at std 1/sqrt(hidden), the same
    draw as the model's init scaled; norms stay ones and biases zeros."""
    from flax import nnx

    from hourllava_jax.config import load_model_config
    from hourllava_jax.demo.start import standin_llm
    from hourllava_jax.model.qwen2 import QWEN2_INIT_STD, Qwen2

    cfg = load_model_config("tiny").llm
    scaled, plain = nnx.to_pure_dict(nnx.state(standin_llm(cfg, 3), nnx.Param)), nnx.to_pure_dict(nnx.state(Qwen2(cfg, rngs=nnx.Rngs(3)), nnx.Param))
    flat = lambda d, p=(): [(p, d)] if not isinstance(d, dict) else [x for k, v in d.items() for x in flat(v, p + (k,))]  # noqa: E731
    want = 1 / np.sqrt(cfg.hidden_size)
    mats = 0
    for (path, a), (_, b) in zip(flat(scaled), flat(plain), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim == 2:
            mats += 1
            np.testing.assert_allclose(a, b * (want / QWEN2_INIT_STD), rtol=1e-6, err_msg=str(path))
            assert abs(a.std() / want - 1) < 0.1, (path, a.std())
        else:
            np.testing.assert_array_equal(a, b, err_msg=str(path))
    assert mats == 1 + 7 * cfg.num_hidden_layers  # embedding + q, k, v, o, gate, up, down per layer


def test_an_interrupted_training_stops_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The trainer returns after saving on SIGTERM; the demo must not export, score and report that
    # half-trained model, and the command must exit non-zero.
    from hourllava_jax.cli import demo as cli
    from hourllava_jax.demo import run

    run.check_trained("memaug", False, 1500, 1500)
    with pytest.raises(run.DemoInterrupted, match=r"'memaug' stopped at step 870 of 1500 \(termination signal\)"):
        run.check_trained("memaug", True, 870, 1500)
    with pytest.raises(run.DemoInterrupted, match="'control' stopped at step 3 of 30; nothing was evaluated"):
        run.check_trained("control", False, 3, 30)

    def interrupted(cfg, workdir):
        run.check_trained("memaug", True, 7, 30)

    monkeypatch.setattr(run, "run_demo", interrupted)
    assert cli.main(["--quick", "--workdir", str(tmp_path / "w")]) == 143
