"""benchmarks/accelerator.py: the dry run of every part, failure isolation, the budget guard, the report.

The dry run is the CI stand-in for the hardware run: every part at toy sizes on CPU (Pallas in
interpret mode), in child processes that cannot import grain, PyAV, tensorflow-datasets or
tensorboardX (a directory of modules that raise ImportError leads PYTHONPATH), as on the GPU
machine. The persistent compile cache of the test suite makes reruns fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "accelerator.py"
_spec = importlib.util.spec_from_file_location("accelerator", SCRIPT)
acc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(acc)


def _run(tmp_path: Path, *args: str, timeout: float = 800) -> tuple[dict, str]:
    blockers = tmp_path / "blocked"
    blockers.mkdir(exist_ok=True)
    for name in acc.DATA_PACKAGES:
        (blockers / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the GPU machine')\n")
    env = dict(os.environ, PYTHONPATH=str(blockers), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a single-accelerator machine
    cache = os.environ.get("HOURLLAVA_JAX_CACHE", str(REPO / ".jax_cache"))
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out-dir", str(tmp_path / "out"), "--name", "ci",
           "--compile-cache", cache, *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((tmp_path / "out" / "ci.json").read_text()), r.stdout


def _ok(rows):
    return [c for c in rows if c.get("status") == "ok"]


def test_dry_run_runs_every_part_without_data_packages(tmp_path):
    res, out = _run(tmp_path, "--budget-s", "700")
    parts = res["parts"]
    assert list(parts) == list(acc.PARTS)
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part.get("status"), part.get("error"), part.get("output_tail"))
        assert part["imported_data_packages"] == [], name
        assert part["env"]["backend"] == "cpu"
    assert res["peak_bf16_tflops"] > 0 and res["env"]["device_kind"]

    pc = parts["pallas_check"]["cases"]
    assert len(_ok(pc)) == len(acc.DRY_PALLAS)
    assert {c["shape"]["head_dim"] for c in pc} == {64, 72, 128} and {c["dtype"] for c in pc} == {"float32", "bfloat16"}
    for c in pc:  # interpret mode runs the kernels' own arithmetic: f32 must meet the hardware goal
        assert all(e < 0.05 for e in c["errors"].values()), c
        if c["dtype"] == "float32":
            assert c["meets_goal"], c

    att = parts["attention"]["cases"]
    for impl in ("pallas_gpu", "chunked", "xla"):
        rows = [c for c in att if c["impl"] == impl]
        assert {c["mode"] for c in _ok(rows)} == {"fwd", "fwd+bwd"}, impl
        assert all(c["tflops"] > 0 and 0 < c["frac_of_peak"] for c in rows)
    assert all(c["status"].startswith("not accepted") for c in att if c["impl"] == "cudnn")  # no cuDNN on CPU

    mem = parts["memaug"]
    assert mem["lk"] == mem["memory_tokens"] > mem["decayed_tokens"] > 0
    assert {c["mode"] for c in _ok(mem["cases"])} == {"fwd", "fwd+bwd"}

    (ts,) = parts["train_step"]["cases"]
    assert ts["status"] == "ok" and ts["finite"] and ts["step_s"] > 0 and ts["mfu"] > 0
    shapes = ts["batch"]["shapes"]  # LLM length = padded text + padded decayed block
    assert ts["tokens_per_step"] == shapes["input_ids"][1] + shapes["decayed"][1] * shapes["decayed"][2]
    assert ts["trained_params_B"] < ts["params_B"]  # stage 3: the vision tower is frozen

    (sg,) = parts["siglip"]["cases"]
    assert sg["frames_per_s"] > 0 and sg["hour_seconds"] == pytest.approx(3600 / sg["frames_per_s"])

    md = acc.render_run(res, "ci")
    for head in ("| case | shape |", "| impl | mode | Lq |", "| model | tokens |", "| batch | frames/s |", "Goals (issue 15)"):
        assert head in md, head
    assert "[train_step]" in out and "== done" in out  # progress is printed


def test_failing_part_is_recorded_and_the_next_part_runs(tmp_path):
    """Also the opt-in tile sweep, which the default run leaves out."""
    res, _ = _run(tmp_path, "--parts", "train_step", "blocks", "--model-set", "llm.no_such_key=1", "--peak-tflops", "1.0")
    ts = res["parts"]["train_step"]
    assert ts["status"] == "error" and "no_such_key" in ts["error"] and "Traceback" in ts["traceback"]
    blocks = res["parts"]["blocks"]
    assert blocks["status"] == "ok" and len(_ok(blocks["cases"])) == 4
    assert set(blocks["best"]) == {"cross fwd", "cross fwd+bwd"}
    assert all(c["frac_of_peak"] > 0 for c in blocks["cases"])  # fractions use --peak-tflops without the peak part


def test_budget_guard_kills_an_overrunning_part_and_skips_the_rest(tmp_path):
    res, _ = _run(tmp_path, "--parts", "peak", "siglip", "--budget-s", "2", "--debug-part-sleep", "120", timeout=120)
    assert res["parts"]["peak"]["status"].startswith("killed at the run's deadline")
    assert res["parts"]["siglip"]["status"] == "skipped: run's time budget used up"
    assert res["wall_s"] < 60


def test_results_md_section_is_replaced_in_place(tmp_path):
    run = {"mode": "hardware", "date": "2026-12-05 10:00 UTC", "budget_s": 285, "wall_s": 250.0, "peak_bf16_tflops": 700.0,
           "env": {"device_kind": "NVIDIA H200", "backend": "gpu", "jax": "0.11.2", "python": "3.12.3", "device_count": 1},
           "parts": {"attention": {"status": "ok", "cases": [
               {"impl": "pallas_gpu", "mode": "fwd", "lq": 8704, "lk": 234000, "ms": 50.0, "tflops": 360.0,
                "frac_of_peak": 0.514, "compile_s": 3.0, "status": "ok"},
               {"impl": "cudnn", "mode": "fwd", "lq": 8704, "lk": 234000, "ms": 40.0, "tflops": 450.0,
                "frac_of_peak": 0.643, "compile_s": 2.0, "status": "ok"}]}}}
    (tmp_path / "acc").mkdir()
    (tmp_path / "acc" / "h200.json").write_text(json.dumps(run))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nbefore\n")
    section = acc.update_results_md(md, tmp_path / "acc")
    assert "| pallas_gpu | fwd | 8704 | 234000 | 50 | 360 | 51.4% |" in section
    assert "attention forward >= 50% of the bf16 matmul peak: met (best 51.4%)" in section
    assert "faster than XLA's fused attention at Lq=8704 Lk=234000: no (50 ms vs cudnn 40 ms)" in section
    md.write_text(md.read_text() + "after\n")
    acc.update_results_md(md, tmp_path / "acc")  # a second render replaces the section, keeps the rest
    text = md.read_text()
    assert text.count(acc.SECTION_START) == 1 and text.startswith("# Benchmark results\n\nbefore\n") and text.endswith("after\n")
    assert acc.render_section(tmp_path / "missing") == ""


def test_rerun_of_some_parts_joins_the_first_run():
    first = {"mode": "hardware", "date": "d1", "peak_bf16_tflops": 700.0,
             "parts": {"peak": {"status": "ok"}, "attention": {"status": "ok"}, "train_step": {"status": "killed"}}}
    rerun = {"date": "d2", "parts_requested": ["train_step"], "wall_s": 90.0, "peak_bf16_tflops": 700.0,
             "parts": {"train_step": {"status": "ok"}}}
    merged = acc._merge(first, rerun)
    assert merged["parts"] == {"peak": {"status": "ok"}, "attention": {"status": "ok"}, "train_step": {"status": "ok"}}
    assert merged["reruns"][0]["parts_requested"] == ["train_step"] and merged["date"] == "d1"
    assert "Rerun d2 of train_step (90.0 s)" in acc.render_run(merged, "x")
    assert first["parts"]["train_step"] == {"status": "killed"}  # the first run's record is not mutated
