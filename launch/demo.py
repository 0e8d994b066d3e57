"""End-to-end CPU demo: Hour-LLaVA's MemAug finds a needle that temporal forgetting dropped.

    python launch/demo.py [--workdir runs/demo] [--seed 0] [--quick]

1. Writes two needle-in-a-haystack datasets of real H.264 mp4 files (train and held-out, different
   seeds): 1-FPS haystacks of moving shapes in four "haystack" colours, one frame holding a large
   cross in one of four needle colours; the question asks its colour.
2. Trains the project's small BPE tokenizer on the training texts.
3. Pre-extracts features with the tiny vision tower (random init, frozen): 1-FPS decode ->
   SigLIP preprocessing -> tower -> bilinear pool, stored in a feature store (no pickle).
4. Trains the tiny Hour-LLaVA with the stage-3 recipe (projector, MemAug, LLM trained; vision
   frozen; AdamW, warmup + cosine, clip 1.0), checkpoints it (orbax) and scores the held-out
   questions; then the same for the control without MemAug (decayed tokens only, same budget).
5. Prints the results table with the control's theoretical bound (kept needles + chance) and
   writes ``needle_heatmaps.png``, ``results.json``, ``predictions.jsonl``, per-variant
   ``metrics.jsonl`` and TensorBoard logs under ``--workdir``.

Uniform temporal forgetting keeps F = T // 4 frames (+ the last), so the control sees the needle
only when its frame is among them; MemAug's cross-attention reads every frame of the memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from hourllava_jax.demo.config import demo_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/demo", help="everything is written here (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="datasets, init and batch order (held-out data uses seed + 1)")
    p.add_argument("--quick", action="store_true", help="a ~2-minute smoke run (fewer videos and steps)")
    p.add_argument("--lengths", default="32", help="video lengths in seconds, comma-separated (e.g. 32,48,64 "
                   "for a depth x length heatmap; ~2.2x the training time)")
    p.add_argument("--steps", type=int, default=None, help="override the training steps of each variant")
    p.add_argument("--answer-format", choices=("word", "letter"), default=None,
                   help="word: answer the colour; letter: the record's shuffled A-D options")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    lengths = tuple(int(x) for x in args.lengths.split(",") if x.strip())
    if not lengths or min(lengths) < 16:
        raise SystemExit("--lengths: give lengths >= 16 s (tiny.yaml's min_frames)")
    cfg = demo_config(quick=args.quick, seed=args.seed, lengths=lengths)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, recipe=dataclasses.replace(cfg.recipe, steps=args.steps))
    if args.answer_format is not None:
        cfg = dataclasses.replace(cfg, answer_format=args.answer_format)
    from hourllava_jax.demo.run import run_demo  # imports jax: after argument parsing

    t0 = time.perf_counter()
    out = run_demo(cfg, Path(args.workdir))
    tqdm.write(f"\ntotal wall time {time.perf_counter() - t0:.0f} s (load average {os.getloadavg()[0]:.1f})")
    return out


if __name__ == "__main__":
    main()
