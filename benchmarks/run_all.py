"""Runs every benchmark script, measures the matmul peak in the same run, writes RESULTS.md + JSON.

    python benchmarks/run_all.py              # everything (tens of minutes on 2 CPU cores)
    python benchmarks/run_all.py --quick      # smoke run of every script into results/quick/
    python benchmarks/run_all.py --only decode llm_step   # rerun some; recorded as a rerun of the last full run
    python benchmarks/run_all.py --render     # only rebuild RESULTS.md from benchmarks/results/*.json

Each script writes ``benchmarks/results/<name>.json``; this file renders them (every list of
records becomes a table) under the peak measured at the start of this run, so efficiency figures
are read against the same machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# What runs, in order: name -> (script, arguments of the full run, arguments of the quick run).
# The name is the JSON's stem; the 1-hour MemAug run is memaug_scaling.py in its real mode.
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "llm_step": ("llm_step", [], ["--quick"]),
    "attention_memory": ("attention_memory", [], ["--repeats", "1"]),
    "memaug_scaling": ("memaug_scaling", [], ["--frames", "128", "600", "1800", "3600", "--full-width-max-frames", "128",
                                              "--run-max-frames", "128"]),
    "memaug_real_hour": ("memaug_scaling", ["--real-frames", "3600"], ["--real-frames", "128"]),
    "train_step": ("train_step", [], ["--quick"]),
    "bf16_dot": ("bf16_dot", [], ["--seq", "256"]),
    "matmul_vs_torch": ("matmul_vs_torch", [], ["--repeats", "1"]),
    "attention_tiles": ("attention_tiles", [], ["--seq", "256", "--tiles", "128x256", "256x256", "--cross-tiles", "256x256", "--repeats", "1"]),
    "compile_time": ("compile_time", [], ["--frames", "128", "--runs", "3b:scan"]),
    "decode": ("decode", [], ["--minutes", "3"]),  # >= 128 s so the 1-FPS stride rule applies
    "pipeline": ("pipeline", [], ["--videos", "12"]),
    "eval_throughput": ("eval_throughput", [], ["--quick"]),
    "init_memory": ("init_memory", [], ["--scale", "16"]),
    # The LLM cut to 2 layers in both modes: the tower's share is what is measured, and the full
    # 3B LLM makes the stage-2 step at T=512 too slow to compile on 2 CPU cores (docs/training.md).
    "vision_grad_memory": ("vision_grad_memory", ["--set", "model_overrides=[llm.num_hidden_layers=2]"],
                           ["--set", "model_overrides=[llm.num_hidden_layers=2,vision.num_hidden_layers=4]", "--frames", "256"]),
}
# Where a script takes its JSON path, when not --out.
OUT_FLAG = {"memaug_real_hour": "--real-out"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, (int, float, str)) for x in v) and len(v) <= 8:
            out[key] = ", ".join(_fmt(x) for x in v)
        elif not isinstance(v, list):
            out[key] = v
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict], max_cols: int = 14) -> list[str]:
    flat = [_flatten(r) for r in rows]
    cols: list[str] = []
    for r in flat:
        cols += [c for c in r if c not in cols]
    cols = cols[:max_cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in flat]
    return lines


def _load(results_dir: Path, name: str) -> dict | None:
    f = results_dir / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def goals(results_dir: Path = RESULTS) -> list[dict]:
    """The speed goals (issue 14) against what the JSONs in ``results_dir`` measured."""
    rows = []

    def add(goal, target, measured, met, source, ceiling=None):
        rows.append({"goal": goal, "target": target, "measured": _fmt(measured) if measured is not None else "not run",
                     "met": "-" if met is None else ("yes" if met else "no"),
                     "attainable at most": "-" if ceiling is None else _fmt(ceiling), "source": source})

    llm = _load(results_dir, "llm_step")
    for r in (llm or {}).get("speedups", []):
        for kind, key in (("forward+backward", "fwd_bwd_vs_torch"), ("forward", "forward_vs_torch")):
            add(f"llm_step {kind} vs transformers, {r['dtype']} L={r['seq']}", ">= 1.2x" if r["dtype"] == "float32" else "reported",
                r[f"speedup_{key}"], r[f"speedup_{key}"] >= 1.2 if r["dtype"] == "float32" else None, "llm_step.json",
                r.get(f"ceiling_{key}"))
    ts = _load(results_dir, "train_step")
    for r in (ts or {}).get("rows", []):
        if r.get("config") == "hourllava_100m" and r.get("dtype") == "float32":
            # Against the higher of the script's two peak measurements (its start, right before
            # the row): a peak that came out low would flatter the step.
            frac = min(r["mfu"], r.get("mfu_adjacent", r["mfu"]))
            add("~100M Hour-LLaVA train step, fraction of the f32 matmul peak (the higher of the script's two)", ">= 60%",
                frac, frac >= 0.6, "train_step.json")
    ct = _load(results_dir, "compile_time")
    if ct is not None:
        x = ct.get("speedup_3b_scan_over_unrolled")
        add("3B train step compile, scanned vs unrolled", ">= 3x", x, None if x is None else x >= 3, "compile_time.json")
    hour = _load(results_dir, "memaug_real_hour")
    if hour is not None:
        real = hour["frames"] >= 3600
        add(f"MemAug forward at 3B width, T={hour['frames']} (depth {hour['depth']}): peak RSS GiB", "< 8", hour["peak_rss_gib"],
            hour["peak_rss_gib"] < 8 if real else None, "memaug_real_hour.json")
        add(f"MemAug forward at 3B width, T={hour['frames']}: attention fraction of matmul peak", ">= 50%",
            hour["attention_frac_of_peak"], hour["attention_frac_of_peak"] >= 0.5 if real else None, "memaug_real_hour.json")
    return rows


def render(results_dir: Path = RESULTS) -> str:
    """RESULTS.md text from every JSON in ``results_dir``; the goal table first."""
    lines = ["# Benchmark results", "", "Generated by `python benchmarks/run_all.py`; do not edit by hand.", ""]
    goal_rows = goals(results_dir)
    if goal_rows:
        lines += ["Speed goals (docs/performance.md): ratios are from one run of each script, both sides measured in it.",
                  "*attainable at most*: transformers' time over the step's matmul floor measured in the same run",
                  "(`matmul_floor.py`: the dense matmuls alone on XLA's dots, plus the attention's FLOPs at the matmul peak).", ""]
        lines += _table(goal_rows) + [""]
    run = results_dir / "run_all.json"
    if run.is_file():
        meta = json.loads(run.read_text())
        lines += [f"Run {meta['date']} on {meta['machine']} ({meta['cpus']} cores, load average at start {meta['loadavg_start']}).", ""]
        lines += ["Matmul peak measured at the start of this run (the roofline for every efficiency figure):", ""]
        lines += _table(meta["peak"]) + [""]
        reruns = meta.get("reruns", [])
        for i, rerun in enumerate(reruns):
            # A script rerun again later has that later rerun's results on disk, not this one's.
            names = [next((f"{s} (results replaced by the {r['date']} rerun)" for r in reversed(reruns[i + 1 :]) if s in r["scripts"]), s)
                     for s in rerun["scripts"]]  # fmt: skip
            lines += [f"Rerun {rerun['date']} (load average at start {rerun['loadavg_start']}) of: "
                      f"{', '.join(names)}, with the matmul peak measured again then:", ""]
            lines += _table(rerun["peak"]) + [""]
        failed = [k for k, v in meta["scripts"].items() if v["returncode"] != 0]
        if failed:
            lines += [f"Scripts that failed in this run (see their logs): {', '.join(failed)}", ""]
    else:
        lines += ["These results come from separate runs of each script; each measured its own matmul peak in",
                  "its run (see `peak` / `matmul_peak*` in its section) and recorded the load average. Run",
                  "`python benchmarks/run_all.py` on an idle machine for one consistent run.", ""]
    for f in sorted(results_dir.glob("*.json")):
        if f.name == "run_all.json":
            continue
        data = json.loads(f.read_text())
        lines += [f"## {f.stem}", ""]
        scalars = {k: v for k, v in _flatten({k: v for k, v in data.items() if not isinstance(v, list) or not v or not isinstance(v[0], dict)}).items()}
        lines += [f"- **{k}**: {_fmt(v)}" for k, v in scalars.items()]
        lines.append("")
        for k, v in data.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                lines += [f"**{k}**", ""] + _table(v) + [""]
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, list) and v2 and isinstance(v2[0], dict):
                        lines += [f"**{k}.{k2}**", ""] + _table(v2) + [""]
    lines += [s for s in [__import__("runpy").run_path(str(HERE / "accelerator_report.py"))["render_section"](results_dir / "accelerator")] if s]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.render:
        sys.path.insert(0, str(HERE))
        from peak import measure_matmul_peak  # noqa: PLC0415  (benchmarks/ is not a package)

        import jax.numpy as jnp

        now = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "peak": [measure_matmul_peak(jnp.float32), measure_matmul_peak(jnp.bfloat16)],
        }
        previous = RESULTS / "run_all.json"
        if args.only and not args.quick and previous.is_file():
            # A partial rerun joins the last full run's record instead of replacing it, so
            # RESULTS.md still says which run (and which peak) every section comes from.
            meta = json.loads(previous.read_text())
            meta.setdefault("reruns", []).append({**now, "scripts": list(args.only)})
        else:
            meta = {**now, "machine": platform.platform(), "cpus": os.cpu_count(), "scripts": {}}
        for name, (script_name, full_args, quick_args) in SCRIPTS.items():
            if args.only and name not in args.only:
                continue
            script = HERE / f"{script_name}.py"
            if not script.is_file():
                meta["scripts"][name] = {"returncode": None, "note": "script missing"}
                continue
            out_dir = RESULTS / "quick" if args.quick else RESULTS  # a smoke run never overwrites full results
            out_dir.mkdir(exist_ok=True)
            cmd = [sys.executable, str(script), OUT_FLAG.get(name, "--out"), str(out_dir / f"{name}.json")]
            cmd += quick_args if args.quick else full_args
            print(f"== {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            log = out_dir / f"{name}.log"
            with log.open("w") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=HERE.parent)
            meta["scripts"][name] = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1), "date": now["date"],
                                     "log": str(log.relative_to(HERE.parent))}
            print(f"   exit {rc} in {meta['scripts'][name]['seconds']} s (log: {log})", flush=True)
        target = RESULTS / "quick" if args.quick else RESULTS
        (target / "run_all.json").write_text(json.dumps(meta, indent=2))
    if args.quick:
        (RESULTS / "quick" / "RESULTS.md").write_text(render(RESULTS / "quick"))
        print(f"wrote {RESULTS / 'quick' / 'RESULTS.md'}")
    else:
        (HERE / "RESULTS.md").write_text(render())
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
