"""launch/evaluate.py end to end with the dry-run answerer: 2 processes + merge == 1 process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hourllava_jax.eval.tasks import needle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluate():
    spec = importlib.util.spec_from_file_location("launch_evaluate", REPO / "launch" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _strip(rep: dict) -> dict:
    return {b: {k: v for k, v in s.items() if k != "read"} for b, s in rep.items()}


def test_two_processes_then_merge_equals_one(evaluate, tmp_path: Path, tempcompass_root: Path):
    common = ["--benchmark", "tempcompass", "--root", str(tempcompass_root), "--answerer", "first-option", "--no-progress"]
    one = evaluate.main(common + ["--out", str(tmp_path / "one")])
    for i in (0, 1):
        assert evaluate.main(common + ["--out", str(tmp_path / "two"), "--process-index", str(i),
                                       "--process-count", "2"]) is None
    two = evaluate.main(["--benchmark", "tempcompass", "--out", str(tmp_path / "two"), "--merge-only"])
    assert _strip(one) == _strip(two)
    tc = one["tempcompass"]
    # Always "A": right only on the action question (answer A) of the three.
    assert tc["n_results"] == 3 and tc["n_correct"] == 1 and tc["complete"] and tc["n_load_problems"] == 2
    assert tc["categories"]["dimension"]["action"]["accuracy"] == 1.0
    assert json.loads((tmp_path / "two" / "report.json").read_text())["tempcompass"]["n_correct"] == 1
    manifest = json.loads((tmp_path / "two" / "manifest" / "tempcompass.json").read_text())
    assert len(manifest["keys"]) == 3 and len(manifest["problems"]) == 2


def test_partial_multi_process_run_reports_missing(evaluate, tmp_path: Path, lvbench_root: Path):
    args = ["--benchmark", "lvbench", "--root", str(lvbench_root), "--answerer", "first-option", "--no-progress",
            "--out", str(tmp_path), "--process-count", "2"]
    evaluate.main(args + ["--process-index", "0"])
    rep = evaluate.main(["--benchmark", "lvbench", "--out", str(tmp_path), "--merge-only"])["lvbench"]
    assert rep["n_expected"] == 3 and 0 < rep["n_missing"] < 3 and not rep["complete"]


def test_needle_run_writes_heatmap(evaluate, tmp_path: Path, make_video):
    src = make_video(tmp_path / "hay.mp4", n_frames=3)
    needle.build([src], tmp_path / "needle", depths=[0.0, 1.0], lengths=[2, 4], size=32)
    rep = evaluate.main(["--benchmark", "needle", "--root", str(tmp_path / "needle"), "--answerer", "first-option",
                         "--out", str(tmp_path / "out"), "--no-progress", "--mode", "loglikelihood"])
    assert rep["needle"]["n_results"] == 4 and rep["needle"]["n_correct"] == 1  # colours cycle, "A" once
    assert (tmp_path / "out" / "needle_heatmap.png").stat().st_size > 0


def test_cli_subprocess_dry_run_never_imports_jax(tmp_path: Path, mlvu_root: Path):
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        f"sys.argv = ['evaluate.py', '--benchmark', 'mlvu', '--root', {str(mlvu_root)!r}, '--out', {str(tmp_path)!r},"
        " '--answerer', 'first-option']\n"
        f"runpy.run_path({str(REPO / 'launch' / 'evaluate.py')!r}, run_name='__main__')\n"
        "assert 'jax' not in sys.modules, 'the evaluation path must not import jax'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mlvu: 2 items, 6 annotation problems" in done.stderr
    rep = json.loads((tmp_path / "report.json").read_text())["mlvu"]
    assert rep["n_results"] == 2 and rep["n_load_problems"] == 6
