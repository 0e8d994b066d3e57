"""``hourllava-eval`` (hourllava_jax/cli/evaluate.py) end to end with the dry-run answerer: 2 processes
+ merge == 1 process; bad input exits non-zero with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hourllava_jax.eval.tasks import needle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluate():
    from hourllava_jax.cli import evaluate as mod

    return mod


def _strip(rep: dict) -> dict:
    return {b: {k: v for k, v in s.items() if k != "read"} for b, s in rep.items()}


def test_two_processes_then_merge_equals_one(evaluate, tmp_path: Path, tempcompass_root: Path):
    common = ["--benchmark", "tempcompass", "--root", str(tempcompass_root), "--answerer", "first-option", "--no-progress"]
    one = evaluate.run(common + ["--out", str(tmp_path / "one")])
    for i in (0, 1):
        assert evaluate.run(common + ["--out", str(tmp_path / "two"), "--process-index", str(i),
                                       "--process-count", "2"]) is None
    two = evaluate.run(["--benchmark", "tempcompass", "--out", str(tmp_path / "two"), "--merge-only"])
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
    evaluate.run(args + ["--process-index", "0"])
    rep = evaluate.run(["--benchmark", "lvbench", "--out", str(tmp_path), "--merge-only"])["lvbench"]
    assert rep["n_expected"] == 3 and 0 < rep["n_missing"] < 3 and not rep["complete"]


def test_needle_run_writes_heatmap(evaluate, tmp_path: Path, make_video):
    src = make_video(tmp_path / "hay.mp4", n_frames=3)
    needle.build([src], tmp_path / "needle", depths=[0.0, 1.0], lengths=[2, 4], size=32)
    rep = evaluate.run(["--benchmark", "needle", "--root", str(tmp_path / "needle"), "--answerer", "first-option",
                         "--out", str(tmp_path / "out"), "--no-progress", "--mode", "loglikelihood"])
    assert rep["needle"]["n_results"] == 4 and rep["needle"]["n_correct"] == 1  # colours cycle, "A" once
    assert (tmp_path / "out" / "needle_heatmap.png").stat().st_size > 0


def test_cli_subprocess_dry_run_never_imports_jax(tmp_path: Path, mlvu_root: Path):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['hourllava-eval', '--benchmark', 'mlvu', '--root', {str(mlvu_root)!r}, '--out', {str(tmp_path)!r},"
        " '--answerer', 'first-option', '--allow-missing-files']\n"
        "try:\n"
        "    runpy.run_module('hourllava_jax.cli.evaluate', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'jax' not in sys.modules, 'the evaluation path must not import jax'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mlvu: 2 items, 6 annotation problems" in done.stderr
    rep = json.loads((tmp_path / "report.json").read_text())["mlvu"]
    assert rep["n_results"] == 2 and rep["n_load_problems"] == 6


def _fails(evaluate, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        evaluate.run(argv)
    assert e.value.code == evaluate.EXIT_BAD_INPUT
    return capsys.readouterr().err


def test_wrong_root_exits_nonzero_with_the_reason(evaluate, tmp_path: Path, capsys):
    err = _fails(evaluate, ["--benchmark", "lvbench", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                            "--answerer", "first-option"], capsys)
    assert "--root" in err and "nope" in err and "not a directory" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_missing_annotation_file_exits_nonzero(evaluate, tmp_path: Path, capsys, mlvu_root: Path):
    (tmp_path / "empty").mkdir()
    err = _fails(evaluate, ["--benchmark", "longvideobench", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                            "--answerer", "first-option"], capsys)
    assert "lvb_val.json" in err and "annotation file not found" in err and "no item loaded" in err
    # MLVU with some task files absent: loud unless --allow-missing-files (then the rest runs).
    err = _fails(evaluate, ["--benchmark", "mlvu", "--root", str(mlvu_root), "--out", str(tmp_path / "m"),
                            "--answerer", "first-option"], capsys)
    assert "2_needle.json" in err and "4 annotation file(s) missing" in err


def test_zero_loadable_items_exits_nonzero(evaluate, tmp_path: Path, capsys):
    root = tmp_path / "lvb"
    root.mkdir()
    (root / "lvb_val.json").write_text(json.dumps([{"id": "x", "question": "no options"}]))
    err = _fails(evaluate, ["--benchmark", "longvideobench", "--root", str(root), "--out", str(tmp_path / "o"),
                            "--answerer", "first-option"], capsys)
    assert "no loadable item" in err and "missing field" in err


def test_console_script_and_wrapper_exit_status(tmp_path: Path):
    """The process exit status a shell sees: 2 for a wrong root (through ``python -m``, what the
    ``hourllava-eval`` console script and launch/evaluate.py both call)."""
    done = subprocess.run([sys.executable, "-m", "hourllava_jax.cli.evaluate", "--benchmark", "mlvu", "--root",
                           str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--answerer", "first-option"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "not a directory" in done.stderr
    # launch/evaluate.py, run as a script (never imported by tests), exits the same way.
    done = subprocess.run([sys.executable, str(REPO / "launch" / "evaluate.py"), "--benchmark", "needle", "--root",
                           str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--answerer", "first-option"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a directory" in done.stderr


def test_mesh_flag_parses(evaluate):
    a = evaluate.parse_args(["--benchmark", "mlvu", "--root", ".", "--out", "o", "--checkpoint", "c", "--mesh", "tensor=4,fsdp=2"])
    assert a.mesh == {"tensor": 4, "fsdp": 2} and a.dtype == "float32" and a.prompt == "llava_vid"
    assert a.max_new_tokens == 16  # lmms-eval's mlvu_dev.yaml; LongVideoBench's is 32
    lvb = evaluate.parse_args(["--benchmark", "longvideobench", "--root", ".", "--out", "o", "--checkpoint", "c"])
    assert lvb.max_new_tokens == 32 and lvb.mesh is None
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--benchmark", "mlvu", "--root", ".", "--out", "o", "--checkpoint", "c", "--mesh", "tensor"])
