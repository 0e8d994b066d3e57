"""``hourllava-eval``: evaluate a checkpoint on one benchmark, sharded across processes, resumable.

    hourllava-eval --benchmark videomme --root /data/Video-MME --checkpoint ckpt/ --out runs/eval \\
        [--dtype bfloat16] [--max-frames N] [--cache-dir DIR] [--process-index i --process-count n]

Every process loads the same annotations, computes the same duration-balanced plan
(``hourllava_jax.eval.sharding``) and runs only its own shards into
``<out>/results/<benchmark>/shard-*.jsonl``; the model's parameters are sharded over that
process's local devices. Re-running the same command resumes. With one process the report is
merged at the end; with several, run ``--merge-only`` once all are done (any host that sees
``<out>``). A wrong ``--root``, a missing annotation file or no loadable item exits with status 2
and the reason. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hourllava_jax.eval import report, runner, sharding, tasks
from hourllava_jax.eval.items import MISSING_FILE, EvalItem, Prediction, Problem
from hourllava_jax.eval.prompt import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, STYLES
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu

EXIT_BAD_INPUT = 2


class FirstOptionAnswerer:
    """Dry-run baseline: always "A" (checks data, sharding and reports without a model)."""

    def answer(self, item: EvalItem) -> Prediction:
        return Prediction("A")

    def option_loglikelihoods(self, item: EvalItem) -> Prediction:
        return Prediction("", option_loglikelihoods=tuple(0.0 if i == 0 else -1.0 for i in range(len(item.options))))


def _mesh_shape(text: str) -> dict[str, int]:
    """"tensor=4,fsdp=2" -> {"tensor": 4, "fsdp": 2}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition("=")
        try:
            out[name.strip()] = int(size)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--mesh: {part!r} is not AXIS=SIZE") from None
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hourllava-eval", description=__doc__.split("\n")[0])
    p.add_argument("--benchmark", required=True, choices=tasks.NAMES)
    p.add_argument("--root", type=Path, help="benchmark directory (layout: docs/evaluation.md)")
    p.add_argument("--checkpoint", type=Path, help="Hour-LLaVA Hugging Face directory")
    p.add_argument("--out", type=Path, required=True, help="output directory shared by all processes")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (default: the checkpoint)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="parameter and compute dtype")
    p.add_argument("--max-frames", type=int, default=None, help="cap on sampled frames (default: none, design §3)")
    p.add_argument("--cache-dir", type=Path, default=None, help="on-disk cache of encoded videos (default: none)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation budget (default: the lmms-eval task's, 16; LongVideoBench 32)")
    p.add_argument("--prompt", choices=STYLES, default="llava_vid",
                   help="llava_vid: lmms-eval's prompt for LLaVA-Video models (default); lmms_default: lmms-eval's "
                        "generic one; llava: one LLaVA-style prompt for every benchmark")
    p.add_argument("--mesh", type=_mesh_shape, default=None,
                   help="local device mesh for the parameters, e.g. tensor=4,fsdp=2 (default: tensor=-1, all local devices)")
    p.add_argument("--process-index", type=int, default=0)
    p.add_argument("--process-count", type=int, default=1)
    p.add_argument("--shards-per-process", type=int, default=1, help="run this many shards in turn")
    p.add_argument("--mode", choices=("generate", "loglikelihood"), default="generate")
    p.add_argument("--answerer", choices=("model", "first-option"), default="model")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (smoke tests)")
    p.add_argument("--allow-missing-files", action="store_true",
                   help="run the items that loaded even if an annotation file is missing (e.g. some MLVU tasks)")
    p.add_argument("--retry-errors", action="store_true", help="answer again items that errored before")
    p.add_argument("--merge-only", action="store_true", help="only merge existing results into the report")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not a.merge_only and a.root is None:
        p.error("--root is required unless --merge-only")
    if a.answerer == "model" and not a.merge_only and a.checkpoint is None:
        p.error("--checkpoint is required with --answerer model")
    if a.max_frames is not None and a.max_frames < 1:
        p.error("--max-frames must be >= 1")
    if a.max_new_tokens is None:
        a.max_new_tokens = MAX_NEW_TOKENS.get(a.benchmark, DEFAULT_MAX_NEW_TOKENS)
    if a.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")
    if not 0 <= a.process_index < a.process_count:
        p.error(f"--process-index {a.process_index} not in [0, --process-count {a.process_count})")
    return a


def fail(message: str) -> None:
    """Stops with exit status 2 and ``message`` on stderr (also when called in-process)."""
    print(f"hourllava-eval: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def check_loaded(benchmark: str, root: Path, items: Sequence[EvalItem], problems: Sequence[Problem],
                 allow_missing_files: bool = False) -> None:
    """Fails loudly on what would otherwise give an empty or silently partial report."""
    missing = [p for p in problems if p.reason == MISSING_FILE]
    if missing and not (allow_missing_files and items):
        shown = "; ".join(f"{p.where}: {p.message}" for p in missing[:5])
        fail(f"{benchmark}: {len(missing)} annotation file(s) missing under --root {root}: {shown}"
             + ("" if items else " (no item loaded)") + " (layouts: docs/evaluation.md)")
    if not items:
        fail(f"{benchmark}: no loadable item under --root {root} ({len(problems)} annotation problems, "
             f"first: {problems[0].where}: {problems[0].message})" if problems else
             f"{benchmark}: no item under --root {root}")


def make_model_answerer(a: argparse.Namespace) -> Any:
    """The Hour-LLaVA answerer (imports JAX and the model lazily, so the dry-run answerer and
    ``--merge-only`` stay light)."""
    from hourllava_jax.eval.answerer import load_answerer, local_mesh

    return load_answerer(a.checkpoint, tokenizer_dir=a.tokenizer, cache_dir=a.cache_dir, dtype=a.dtype,
                         max_frames=a.max_frames, max_new_tokens=a.max_new_tokens, prompt=a.prompt,
                         mesh=local_mesh(a.mesh))


def merge(out: Path, benchmark: str) -> dict[str, Any]:
    """Writes report.json/report.md (and the needle heatmap) for `benchmark`."""
    rep = report.merge(out, [benchmark])
    if benchmark == "needle":
        from hourllava_jax.eval.tasks import needle

        needle.write_heatmap(report.load_records(out, benchmark)[0], out / "needle_heatmap.png")
    return rep


def run(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Runs the command line in process; returns the merged report (benchmark -> summary) when this call
    merged it (one process or ``--merge-only``), else None."""
    a = parse_args(argv)
    if a.merge_only:
        return merge(a.out, a.benchmark)
    if not a.root.is_dir():
        fail(f"--root {a.root} is not a directory")
    items, problems = tasks.load(a.benchmark, a.root)
    print(f"{a.benchmark}: {len(items)} items, {len(problems)} annotation problems", file=sys.stderr)
    for pr in problems[:20]:
        print(f"  {pr.where}: {pr.reason}: {pr.message}", file=sys.stderr)
    check_loaded(a.benchmark, a.root, items, problems, a.allow_missing_files)
    if a.limit is not None:
        items = items[: a.limit]
    if a.process_index == 0:  # every process computes the same manifest; one writes it
        report.write_manifest(a.out, a.benchmark, items, problems)
    answerer = FirstOptionAnswerer() if a.answerer == "first-option" else make_model_answerer(a)
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


def main(argv: Sequence[str] | None = None) -> int:
    """The console script (``hourllava-eval``, ``launch/evaluate.py``): :func:`run` with an exit
    status (0; a failure exits non-zero with its reason) instead of the report."""
    keep_heap_for_cpu()
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
