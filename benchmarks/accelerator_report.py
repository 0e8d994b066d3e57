"""The RESULTS.md section of benchmarks/accelerator.py's runs (standard library only).

``render_run(result, name)``: one run's JSON as Markdown (a table per part, errors, the goals of
issue 15); ``render_section(dir)``: every ``results/accelerator/*.json`` between markers;
``update_results_md()``: replaces (or appends) that section of benchmarks/RESULTS.md, whose
``run_all.py`` render includes it too.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accelerator"
SECTION_START, SECTION_END = "<!-- accelerator:start -->", "<!-- accelerator:end -->"


def _f(v, fmt="{:.3g}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt.format(v)
    return str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _rows(part: dict) -> list[dict]:
    return [c for c in part.get("cases", [])]


def render_run(r: dict, name: str) -> str:
    """Markdown for one run's JSON: every part's table, errors and the goals."""
    env = r.get("env", {})
    lines = [f"### {name}", "",
             f"{r.get('mode')}; {r.get('date')}; {env.get('device_kind', '?')} ({env.get('backend', '?')}, "
             f"{env.get('device_count', '?')} device(s)); jax {env.get('jax', '?')}, Python {env.get('python', '?')}; "
             f"wall {r.get('wall_s')} s of a {r.get('budget_s')} s budget; bf16 matmul peak measured in this run: "
             f"{_f(r.get('peak_bf16_tflops'))} TFLOP/s.", ""]
    for rr in r.get("reruns", []):
        lines += [f"Rerun {rr.get('date')} of {', '.join(rr.get('parts_requested') or [])} ({rr.get('wall_s')} s); "
                  "those parts' rows below come from it.", ""]
    parts = r.get("parts", {})
    for pname, part in parts.items():
        lines.append(f"**{pname}**: {part.get('status')}" + (f" ({part['error']})" if part.get("error") else ""))
        lines.append("")
        rows = _rows(part)
        if pname == "pallas_check" and rows:
            lines += ["| case | shape | dtype | max err (out, dq, dk, dv) | goal | meets |", "|---|---|---|---|---|---|"]
            for c in rows:
                e = c.get("errors", {})
                errs = ", ".join(f"{e[k]:.2g}" for k in ("out", "dq", "dk", "dv") if k in e) or c.get("status")
                s = c.get("shape", {})
                shape = f"B{s.get('b')} Lq{s.get('lq')} Lk{s.get('lk')} H{s.get('heads')}/{s.get('kv_heads')} d{s.get('head_dim')}"
                lines.append(f"| {c['case']} | {shape} | {c.get('dtype')} | {errs} | {_f(c.get('goal'))} | {_f(c.get('meets_goal'))} |")
        elif pname == "attention" and rows:
            lines += ["| impl | mode | Lq | Lk | ms | TFLOP/s | of peak | compile s | status |", "|---|---|---|---|---|---|---|---|---|"]
            for c in rows:
                lines.append(f"| {c.get('impl')} | {c.get('mode')} | {c.get('lq')} | {c.get('lk')} | {_f(c.get('ms'))} | "
                             f"{_f(c.get('tflops'))} | {_pct(c.get('frac_of_peak'))} | {_f(c.get('compile_s'))} | {_status(c)} |")
        elif pname == "memaug" and rows:
            lines.append(f"T={part.get('frames')} frames, Lq={part.get('lq')}, Lk={part.get('lk')}, H={part.get('hidden')}, "
                         f"depth {part.get('depth')}, forward {_f(part.get('forward_tflop'))} TFLOP.")
            lines += ["", "| impl | mode | s | TFLOP/s | of peak | peak GiB | compile s | status |", "|---|---|---|---|---|---|---|---|"]
            for c in rows:
                lines.append(f"| {c.get('impl')} | {c.get('mode')} | {_f(c.get('seconds'))} | {_f(c.get('tflops'))} | "
                             f"{_pct(c.get('frac_of_peak'))} | {_f(c.get('peak_gib'))} | {_f(c.get('compile_s'))} | {_status(c)} |")
        elif pname == "train_step" and rows:
            lines += ["| model | tokens | step s | tokens/s | TFLOP/s | MFU | compile s | peak GiB | loss | status |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for c in rows:
                lines.append(f"| {part.get('model')} | {_f(c.get('tokens_per_step'))} | {_f(c.get('step_s'))} | {_f(c.get('tokens_per_s'))} | "
                             f"{_f(c.get('tflops'))} | {_pct(c.get('mfu'))} | {_f(c.get('compile_s'))} | {_f(c.get('peak_gib'))} | "
                             f"{_f(c.get('loss'))} | {_status(c)} |")
        elif pname == "siglip" and rows:
            lines += ["| batch | frames/s | 1 h of video (s) | TFLOP/s | of peak | compile s | status |", "|---|---|---|---|---|---|---|"]
            for c in rows:
                lines.append(f"| {c.get('batch')} | {_f(c.get('frames_per_s'))} | {_f(c.get('hour_seconds'))} | {_f(c.get('tflops'))} | "
                             f"{_pct(c.get('frac_of_peak'))} | {_f(c.get('compile_s'))} | {_status(c)} |")
        elif pname == "blocks" and rows:
            lines += ["| shape | mode | block_q x block_k | warps | stages | ms | TFLOP/s | of peak | status |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for c in rows:
                lines.append(f"| {c.get('shape')} | {c.get('mode')} | {c.get('block_q')}x{c.get('block_k')} | {c.get('num_warps')} | "
                             f"{c.get('num_stages')} | {_f(c.get('ms'))} | {_f(c.get('tflops'))} | {_pct(c.get('frac_of_peak'))} | {_status(c)} |")
        elif pname == "peak" and rows:
            lines += [f"- {c['case']}: {_f(c.get('tflops'))} TFLOP/s ({_status(c)})" for c in rows]
        if rows:
            lines.append("")
    goals = goal_lines(r) if r.get("mode") == "hardware" else ["not evaluated: a dry run's toy sizes on CPU say nothing about the hardware"]
    lines += ["Goals (issue 15):", ""] + [f"- {g}" for g in goals] + [""]
    return "\n".join(lines)


def _status(c: dict) -> str:
    s = c.get("status", "")
    return s if s != "error" else f"error: {c.get('error', '')[:120]}"


def goal_lines(r: dict) -> list[str]:
    parts = r.get("parts", {})
    out = []
    pc = parts.get("pallas_check")
    if pc:
        ok = [c for c in pc.get("cases", []) if c.get("status") == "ok"]
        out.append(f"pallas_gpu within 1e-2 (bf16) / 1e-5 (f32): {'met' if pc.get('all_meet_goal') else 'NOT met'} "
                   f"({sum(c['meets_goal'] for c in ok)}/{len(pc.get('cases', []))} cases)")
    at = parts.get("attention")
    if at:
        fw = [c for c in at.get("cases", []) if c.get("impl") == "pallas_gpu" and c.get("mode") == "fwd" and c.get("frac_of_peak")]
        if fw:
            best = max(c["frac_of_peak"] for c in fw)
            out.append(f"attention forward >= 50% of the bf16 matmul peak: {'met' if best >= 0.5 else 'NOT met'} (best {_pct(best)})")
        for c in fw:
            if c["lk"] >= 32768:
                rivals = [x for x in at["cases"] if x.get("impl") in ("xla", "cudnn") and x.get("mode") == "fwd"
                          and x.get("lk") == c["lk"] and x.get("lq") == c["lq"] and x.get("ms")]
                faster = all(c["ms"] < x["ms"] for x in rivals)
                names = ", ".join(f"{x['impl']} {x['ms']:.3g} ms" for x in rivals) or "no fused rival ran"
                out.append(f"pallas_gpu forward faster than XLA's fused attention at Lq={c['lq']} Lk={c['lk']}: "
                           f"{'yes' if faster and rivals else 'no' if rivals else 'n/a'} ({c['ms']:.3g} ms vs {names})")
    ma = parts.get("memaug")
    if ma:
        fb = [c for c in ma.get("cases", []) if c.get("impl") == "auto" and c.get("mode") == "fwd+bwd" and c.get("seconds")]
        for c in fb:
            out.append(f"MemAug 1 h fwd+bwd under 2 s and 40 GB: {_f(c['seconds'])} s, {_f(c.get('peak_gib'))} GiB peak")
    ts = parts.get("train_step")
    if ts:
        for c in ts.get("cases", []):
            if c.get("mfu") is not None:
                out.append(f"3B train step MFU >= 35%: {'met' if c['mfu'] >= 0.35 else 'NOT met'} ({_pct(c['mfu'])})")
    return out or ["no part produced a goal figure"]


def render_section(results_dir: Path = RESULTS) -> str:
    """The RESULTS.md section for every ``results/accelerator/*.json`` (empty if there is none)."""
    files = sorted(Path(results_dir).glob("*.json")) if Path(results_dir).is_dir() else []
    if not files:
        return ""
    lines = [SECTION_START, "## accelerator", "",
             "Generated by `python benchmarks/accelerator.py --render` from `benchmarks/results/accelerator/*.json`",
             "(one file per hardware run of `benchmarks/accelerator.py`; see docs/kernels.md, \"Hardware run\").", ""]
    for f in files:
        lines.append(render_run(json.loads(f.read_text()), f.stem))
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def update_results_md(path: Path = HERE / "RESULTS.md", results_dir: Path = RESULTS) -> str:
    """Replaces (or appends) the marked accelerator section of RESULTS.md; returns the section."""
    section = render_section(results_dir)
    text = path.read_text() if path.is_file() else ""
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + tail
    elif section:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    return section
