"""benchmarks/run_all.py's report: one run's peak on top, partial reruns recorded beside it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# benchmarks/ is a directory of scripts, not a package: load the one module without putting its
# siblings (pipeline.py, decode.py...) on sys.path.
_spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
_run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_run_all)
render = _run_all.render


def test_render_names_the_run_its_reruns_and_every_table(tmp_path):
    peak = [{"dtype": "float32", "gflops": 164.7}]
    meta = {"date": "2026-11-24 08:45 UTC", "machine": "linux", "cpus": 2, "loadavg_start": [0.7, 0.3, 0.1],
            "peak": peak, "scripts": {"decode": {"returncode": 0}, "pipeline": {"returncode": 1}},
            "reruns": [{"date": "2026-11-24 09:17 UTC", "loadavg_start": [3.1, 1.7, 1.4], "scripts": ["decode"],
                        "peak": [{"dtype": "float32", "gflops": 164.2}]},
                       {"date": "2026-11-24 09:40 UTC", "loadavg_start": [1.1, 1.2, 1.3], "scripts": ["pipeline", "decode"],
                        "peak": [{"dtype": "float32", "gflops": 166.0}]}]}
    (tmp_path / "run_all.json").write_text(json.dumps(meta))
    (tmp_path / "decode.json").write_text(json.dumps(
        {"benchmark": "decode", "results": [{"variant": "long_gop_250", "method": "ours", "wall_s": 10.32}]}))
    text = render(tmp_path)
    assert "Run 2026-11-24 08:45 UTC on linux (2 cores" in text and "| float32 | 164.7 |" in text
    assert "Rerun 2026-11-24 09:17 UTC" in text and "| float32 | 164.2 |" in text
    # The first rerun's decode results were overwritten by the second rerun: the report says so.
    assert "of: decode (results replaced by the 2026-11-24 09:40 UTC rerun), with" in text
    assert "Rerun 2026-11-24 09:40 UTC (load average at start [1.1, 1.2, 1.3]) of: pipeline, decode, with" in text
    assert "Scripts that failed in this run (see their logs): pipeline" in text
    assert "## decode" in text and "| long_gop_250 | ours | 10.32 |" in text


def test_goal_table_comes_first_with_each_ratio(tmp_path):
    (tmp_path / "llm_step.json").write_text(json.dumps({"speedups": [
        {"dtype": "float32", "seq": 256, "framework": "j", "speedup_forward_vs_torch": 1.5, "speedup_fwd_bwd_vs_torch": 1.1,
         "ceiling_forward_vs_torch": 1.6, "ceiling_fwd_bwd_vs_torch": 1.17},
        {"dtype": "bfloat16", "seq": 256, "framework": "j", "speedup_forward_vs_torch": 0.9, "speedup_fwd_bwd_vs_torch": 2.0}]}))
    (tmp_path / "compile_time.json").write_text(json.dumps({"speedup_3b_scan_over_unrolled": 4.2, "rows": []}))
    text = render(tmp_path)
    first_table = text[text.index("|"):]
    assert first_table.startswith("| goal | target | measured | met | attainable at most | source |")
    # The ceiling (transformers' time over the matmul floor) sits beside each llm_step ratio.
    assert "| llm_step forward+backward vs transformers, float32 L=256 | >= 1.2x | 1.1 | no | 1.17 |" in text
    assert "| llm_step forward vs transformers, float32 L=256 | >= 1.2x | 1.5 | yes | 1.6 |" in text
    assert "| llm_step forward vs transformers, bfloat16 L=256 | reported | 0.9 | - | - |" in text
    assert "| 3B train step compile, scanned vs unrolled | >= 3x | 4.2 | yes | - |" in text


def test_train_step_goal_reads_the_higher_peak(tmp_path):
    # A peak measurement that came out low (mfu_adjacent over 100 %) must not flatter the step.
    (tmp_path / "train_step.json").write_text(json.dumps({"rows": [
        {"config": "hourllava_100m", "dtype": "float32", "mfu": 0.552, "mfu_adjacent": 1.008},
        {"config": "hourllava_100m", "dtype": "bfloat16", "mfu": 0.9, "mfu_adjacent": 0.9}]}))
    text = render(tmp_path)
    assert "fraction of the f32 matmul peak (the higher of the script's two) | >= 60% | 0.552 | no |" in text
