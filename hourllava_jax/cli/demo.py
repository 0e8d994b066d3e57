"""End-to-end CPU demo: Hour-LLaVA's MemAug finds a needle that temporal forgetting dropped,
trained and scored through the product's own path (``hourllava-demo``, ``launch/demo.py``).

    hourllava-demo [--workdir runs/demo] [--seed 0] [--quick]

1. Writes needle-in-a-haystack datasets of real H.264 mp4 files: a training split and held-out
   splits (different seeds) at the training length, 10 minutes and 1 hour. 1-FPS haystacks of
   moving shapes; one frame holds a large cross in one of four needle colours; the question
   asks its colour.
2. Trains the project's small BPE tokenizer on the training texts.
3. Writes tiny SigLIP and Qwen2 Hugging Face directories (random weights: the public weights'
   stand-in) and composes them into an Hour-LLaVA start (``hourllava-convert compose``).
4. Pre-extracts the training videos' features with that tower (``hourllava-extract``'s code) and
   splices them into a training set (any haystack x any needle x any second).
5. Trains with the trainer ``launch/train.py`` runs (``configs/train/demo_needle.yaml``, the
   stage-3 recipe, ``init.from`` the start) for MemAug and for the control without MemAug
   (decayed tokens only, same budget), exports each (``hourllava-convert export``) and scores
   the held-out questions with ``launch/evaluate.py --benchmark needle --mode loglikelihood``.
6. Prints the table with the control's bound (kept needles + chance) and writes
   ``needle_heatmaps.png``, ``results.json``, ``predictions.jsonl`` under ``--workdir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from hourllava_jax.parallel.host_heap import keep_heap_for_cpu


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hourllava-demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/demo", help="everything is written here (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="datasets, init and batch order (held-out data uses seed + 1, + 2)")
    p.add_argument("--quick", action="store_true", help="a smoke run of about a minute (too short to learn)")
    p.add_argument("--lengths", default="32", help="training (and held-out) video lengths in seconds, comma-separated")
    p.add_argument("--long-lengths", default="600,3600",
                   help="held-out lengths never trained on, in seconds (default 10 min and 1 hour; '' for none)")
    p.add_argument("--steps", type=int, default=None, help="override the training steps of each variant")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    keep_heap_for_cpu()
    args = parse_args(argv)
    lengths, long_lengths = _lengths(args.lengths), _lengths(args.long_lengths)
    if not lengths or min(lengths) < 16:
        raise SystemExit("--lengths: give lengths >= 16 s (tiny.yaml's min_frames)")
    from tqdm import tqdm

    from hourllava_jax.demo.config import demo_config
    from hourllava_jax.demo.run import DemoInterrupted, run_demo  # imports jax: after argument parsing

    cfg = demo_config(quick=args.quick, seed=args.seed, lengths=lengths, long_lengths=long_lengths)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    t0 = time.perf_counter()
    try:
        run_demo(cfg, Path(args.workdir))
    except DemoInterrupted as e:
        tqdm.write(f"hourllava-demo: {e}")
        return 143
    tqdm.write(f"\ntotal wall time {time.perf_counter() - t0:.0f} s (load average {os.getloadavg()[0]:.1f})")
    return 0
