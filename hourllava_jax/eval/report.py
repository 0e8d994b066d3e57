"""The merge step: all shard files -> per-benchmark and per-category accuracy (JSON + markdown).

Reads `<out>/results/<benchmark>/*.jsonl` (any number of shards, any process count),
de-duplicates by item key (an "ok" result beats an "error" one, e.g. after `--retry-errors`;
otherwise the last line read wins, files in name order), and writes `<out>/report.json` and
`<out>/report.md`. `<out>/manifest/<benchmark>.json` (written once per run by the launcher)
supplies the expected item keys and the annotation problems, so the report also says how many
items are still missing and how many were rejected at load time.

Accuracy = correct / results: an item that failed (missing or corrupt video, answerer error) or
whose answer could not be parsed counts as wrong, as in the published protocols where every
question is scored. Items not yet run are reported as `n_missing`, never guessed.

Each summary has a `headline` (``eval/headline.py``: the metric the benchmark's paper leads with,
e.g. MLVU's M-avg, with its per-duration or per-task breakdown) under the strict score, and, where
the benchmark's lmms-eval scorer has its own parse-failure convention (``eval/conventions.py``:
LongVideoBench's seeded random choice), `lmms_eval`: the same headline under that convention,
the comparable number beside the lower bound. report.md leads with these.
Per-category tables use each benchmark's `categories` (Video-MME: duration, LongVideoBench:
length, MLVU: task, LVBench: task, TempCompass: dimension, needle: depth and length); a
question with several labels counts once under each.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hourllava_jax.eval import conventions, headline
from hourllava_jax.eval.items import EvalItem, Problem
from hourllava_jax.eval.runner import read_results


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def write_manifest(out_dir: str | Path, benchmark: str, items: Sequence[EvalItem],
                   problems: Sequence[Problem]) -> Path:
    """Records what the run should cover: every item key, and every rejected annotation."""
    path = Path(out_dir) / "manifest" / f"{benchmark}.json"
    _atomic_write(path, json.dumps({"benchmark": benchmark, "n_items": len(items), "keys": [x.key for x in items],
                                    "problems": [p.to_json() for p in problems]}, indent=1))
    return path


def load_records(out_dir: str | Path, benchmark: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """De-duplicated result records of one benchmark, sorted by key, and read statistics
    {"files", "lines", "bad_lines", "duplicates"}."""
    best: dict[str, dict[str, Any]] = {}
    stats = Counter(files=0, lines=0, bad_lines=0, duplicates=0)
    for path in sorted((Path(out_dir) / "results" / benchmark).glob("*.jsonl")):
        records, bad = read_results(path)
        stats["files"] += 1
        stats["lines"] += len(records)
        stats["bad_lines"] += bad
        for rec in records:
            old = best.get(rec["key"])
            if old is not None:
                stats["duplicates"] += 1
                if old.get("status") == "ok" and rec.get("status") != "ok":
                    continue
            best[rec["key"]] = rec
    return [best[k] for k in sorted(best)], dict(stats)


def _acc(correct: int, n: int) -> float | None:
    return correct / n if n else None


def _convention(records: Sequence[dict[str, Any]], benchmark: str) -> dict[str, Any] | None:
    """The headline under the benchmark's lmms-eval convention (None if it has none)."""
    verdicts = [conventions.lmms_eval_correct(r) for r in records]
    if not records or any(v is None for v in verdicts):
        return None
    by_key = {r["key"]: v for r, v in zip(records, verdicts)}
    out = headline.compute(records, benchmark, lambda r: by_key[r["key"]][0])
    out.update(rule=conventions.DESCRIPTIONS.get(benchmark, ""), n_random=sum(v[1] for v in verdicts),
               seed=conventions.DEFAULT_SEED)
    return out


def summarize(records: Sequence[dict[str, Any]], manifest: dict[str, Any] | None = None,
              benchmark: str | None = None) -> dict[str, Any]:
    """Headline, accuracy, failure counts and per-category accuracy of one benchmark's records
    (`benchmark` defaults to the records' own)."""
    n = len(records)
    if benchmark is None:
        benchmark = str(records[0].get("benchmark")) if records else ""
    correct = sum(bool(r.get("correct")) for r in records)
    ok = [r for r in records if r.get("status") == "ok"]
    parse_failed = sum(bool(r.get("parse_failed")) for r in ok)
    errors = Counter(str(r.get("reason_code")) for r in records if r.get("status") != "ok")
    cats: dict[str, dict[str, list[int]]] = {}
    for r in records:
        for name, values in sorted((r.get("categories") or {}).items()):
            for v in values if isinstance(values, list) else [values]:
                cell = cats.setdefault(name, {}).setdefault(str(v), [0, 0])
                cell[0] += 1
                cell[1] += bool(r.get("correct"))
    out: dict[str, Any] = {
        "headline": headline.compute(records, benchmark), "lmms_eval": _convention(records, benchmark),
        "n_results": n, "n_correct": correct, "accuracy": _acc(correct, n),
        "n_errors": sum(errors.values()), "errors_by_reason": dict(sorted(errors.items())),
        "n_parse_failures": parse_failed, "parse_failure_rate": _acc(parse_failed, len(ok)),
        "categories": {name: {v: {"n": c[0], "n_correct": c[1], "accuracy": _acc(c[1], c[0])}
                              for v, c in sorted(vals.items())} for name, vals in sorted(cats.items())},
    }
    if manifest is not None:
        expected = set(manifest.get("keys", []))
        seen = {r["key"] for r in records}
        problems = Counter(p.get("reason", "?") for p in manifest.get("problems", []))
        out.update(n_expected=len(expected), n_missing=len(expected - seen), n_unexpected=len(seen - expected),
                   n_load_problems=sum(problems.values()), load_problems_by_reason=dict(sorted(problems.items())))
        out["complete"] = out["n_missing"] == 0
    return out


def _read_manifest(out_dir: Path, benchmark: str) -> dict[str, Any] | None:
    path = out_dir / "manifest" / f"{benchmark}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _groups(h: dict[str, Any]) -> str:
    return ", ".join(f"{g} {_pct(c['accuracy'])}" for g, c in h["groups"].items()) or "-"


def _headline_value(h: dict[str, Any]) -> str:
    v = _pct(h["value"])
    if h.get("n_groups_expected") and h["metric"] == "M-avg" and h["n_groups"] != h["n_groups_expected"]:
        v += f" ({h['n_groups']}/{h['n_groups_expected']} tasks)"
    return v


def to_markdown(report: dict[str, Any]) -> str:
    """The papers' headline metrics first (strict score, lmms-eval convention beside it, parse
    failure rate), then the overview and one per-category table per benchmark."""
    lines = ["| benchmark | headline | strict (%) | lmms-eval convention (%) | parse failures | breakdown (strict, %) |",
             "|---|---|---|---|---|---|"]
    for name, b in report.items():
        h, c = b["headline"], b.get("lmms_eval")
        conv = "-" if c is None else f"{_headline_value(c)} ({c['n_random']} random)"
        lines.append(f"| {name} | {h['metric']} | {_headline_value(h)} | {conv} | "
                     f"{b['n_parse_failures']} ({_pct(b['parse_failure_rate'])}%) | {_groups(h)} |")
    lines += ["", "| benchmark | results | accuracy (%) | errors | parse failures | load problems | missing |",
              "|---|---|---|---|---|---|---|"]
    for name, b in report.items():
        lines.append(f"| {name} | {b['n_results']} | {_pct(b['accuracy'])} | {b['n_errors']} | "
                     f"{b['n_parse_failures']} | {b.get('n_load_problems', '-')} | {b.get('n_missing', '-')} |")
    for name, b in report.items():
        for cat, values in b["categories"].items():
            lines += ["", f"**{name}** by {cat}", "", f"| {cat} | n | accuracy (%) |", "|---|---|---|"]
            lines += [f"| {v} | {c['n']} | {_pct(c['accuracy'])} |" for v, c in values.items()]
    return "\n".join(lines) + "\n"


def merge(out_dir: str | Path, benchmarks: Sequence[str] | None = None) -> dict[str, Any]:
    """Builds the report of every benchmark under `out_dir` (or the named ones) and writes
    report.json and report.md there. Returns the report (benchmark -> summary)."""
    out_dir = Path(out_dir)
    if benchmarks is None:
        found = {p.name for p in (out_dir / "results").glob("*") if p.is_dir()}
        found |= {p.stem for p in (out_dir / "manifest").glob("*.json")}
        benchmarks = sorted(found)
    report = {}
    for b in benchmarks:
        records, stats = load_records(out_dir, b)
        report[b] = summarize(records, _read_manifest(out_dir, b), b)
        report[b]["read"] = stats
    _atomic_write(out_dir / "report.json", json.dumps(report, indent=1, sort_keys=True))
    _atomic_write(out_dir / "report.md", to_markdown(report))
    return report
