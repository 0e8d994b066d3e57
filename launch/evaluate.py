"""Evaluate a checkpoint on one benchmark, sharded across processes, resumable; then merge.

    python launch/evaluate.py --benchmark videomme --root /data/Video-MME \\
        --checkpoint ckpt/ --out runs/eval [--process-index i --process-count n]

Every process loads the same annotations, computes the same duration-balanced plan
(`hourllava_jax.eval.sharding`) and runs only its own shards into
`<out>/results/<benchmark>/shard-*.jsonl`. Re-running the same command resumes. With one
process the report is merged at the end; with several, run `--merge-only` once all are done
(any host that sees `<out>`). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script from a clone: make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hourllava_jax.eval import tasks, report, runner, sharding  # noqa: E402
from hourllava_jax.eval.items import EvalItem, Prediction  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Answerers. The model-backed one is the only place that touches JAX, and only when chosen.
# ----------------------------------------------------------------------------------------------

def make_model_answerer(checkpoint: Path) -> Any:
    """The Hour-LLaVA answerer for ``checkpoint`` (imports JAX and the model lazily, so the
    dry-run answerers and ``--merge-only`` stay light). Tokenizer and feature-cache locations come
    from ``HOURLLAVA_TOKENIZER`` / ``HOURLLAVA_CACHE_DIR`` (see docs/inference.md)."""
    from hourllava_jax.infer.answerer import load_answerer

    return load_answerer(checkpoint)


class FirstOptionAnswerer:
    """Dry-run baseline: always "A" (checks data, sharding and reports without a model)."""

    def answer(self, item: EvalItem) -> Prediction:
        return Prediction("A")

    def option_loglikelihoods(self, item: EvalItem) -> Prediction:
        return Prediction("", option_loglikelihoods=tuple(0.0 if i == 0 else -1.0 for i in range(len(item.options))))


# ----------------------------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--benchmark", required=True, choices=tasks.NAMES)
    p.add_argument("--root", type=Path, help="benchmark directory (layout: docs/evaluation.md)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint directory")
    p.add_argument("--out", type=Path, required=True, help="output directory shared by all processes")
    p.add_argument("--process-index", type=int, default=0)
    p.add_argument("--process-count", type=int, default=1)
    p.add_argument("--shards-per-process", type=int, default=1, help="run this many shards in turn")
    p.add_argument("--mode", choices=("generate", "loglikelihood"), default="generate")
    p.add_argument("--answerer", choices=("model", "first-option"), default="model")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (smoke tests)")
    p.add_argument("--retry-errors", action="store_true", help="answer again items that errored before")
    p.add_argument("--merge-only", action="store_true", help="only merge existing results into the report")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not a.merge_only and a.root is None:
        p.error("--root is required unless --merge-only")
    if a.answerer == "model" and not a.merge_only and a.checkpoint is None:
        p.error("--checkpoint is required with --answerer model")
    return a


def merge(out: Path, benchmark: str) -> dict[str, Any]:
    """Writes report.json/report.md (and the needle heatmap) for `benchmark`."""
    rep = report.merge(out, [benchmark])
    if benchmark == "needle":
        from hourllava_jax.eval.tasks import needle

        needle.write_heatmap(report.load_records(out, benchmark)[0], out / "needle_heatmap.png")
    return rep


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    a = parse_args(argv)
    if a.merge_only:
        return merge(a.out, a.benchmark)
    items, problems = tasks.load(a.benchmark, a.root)
    if a.limit is not None:
        items = items[: a.limit]
    print(f"{a.benchmark}: {len(items)} items, {len(problems)} annotation problems", file=sys.stderr)
    for pr in problems[:20]:
        print(f"  {pr.where}: {pr.reason}: {pr.message}", file=sys.stderr)
    if a.process_index == 0:  # every process computes the same manifest; one writes it
        report.write_manifest(a.out, a.benchmark, items, problems)
    answerer = FirstOptionAnswerer() if a.answerer == "first-option" else make_model_answerer(a.checkpoint)
    n_shards = a.process_count * a.shards_per_process
    plan = sharding.plan_shards(items, n_shards)
    for s in sharding.shards_of_process(a.process_index, a.process_count, a.shards_per_process):
        summary = runner.run_shard(plan[s], answerer, runner.shard_path(a.out, a.benchmark, s, n_shards),
                                   mode=a.mode, retry_errors=a.retry_errors, desc=f"{a.benchmark} {s}/{n_shards}",
                                   progress=not a.no_progress)
        print(f"shard {s}: {summary}", file=sys.stderr)
    if a.process_count == 1:
        return merge(a.out, a.benchmark)
    return None


if __name__ == "__main__":
    main()
