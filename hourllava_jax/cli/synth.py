"""Writes the synthetic long-video dataset: videos, VideoMarathon-style records, needles, tokenizer.

    hourllava-synth --out /tmp/synth --seed 0 --num-videos 8 \
        --min-seconds 30 --max-seconds 120 --needle-lengths 16,64 --needle-depths 0,0.5,1 \
        --tokenizer-vocab 512

Produces under --out (design §4.2 layout, see docs/data.md):
    videos/synthetic/*.mp4, synthetic.jsonl          event videos, six-topic QA (<= 5 pairs/record)
    videos/needle/*.mp4, needle.jsonl                 needle-in-a-haystack set (if --needle-lengths)
    tokenizer/                                        small byte-level BPE in HF format (if --tokenizer-vocab)
Same arguments -> same records and same decoded frames. ``launch/make_synthetic.py`` is a wrapper.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hourllava_jax.data import synthetic


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory (data root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-videos", type=int, default=4)
    p.add_argument("--min-seconds", type=int, default=20)
    p.add_argument("--max-seconds", type=int, default=60)
    p.add_argument("--fps", type=int, default=1, help="frames per second of the written videos")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (multiple of 16)")
    p.add_argument(
        "--needle-lengths",
        type=_ints,
        default=[],
        help="comma-separated haystack lengths in seconds",
    )
    p.add_argument("--needle-depths", type=_floats, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--needle-repeats", type=int, default=1)
    p.add_argument("--needle-seed", type=int, default=None, help="defaults to --seed + 1000")
    p.add_argument(
        "--tokenizer-vocab",
        type=int,
        default=0,
        help="train a BPE of this size into OUT/tokenizer (0: skip)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.min_seconds > args.max_seconds:
        raise SystemExit(f"--min-seconds {args.min_seconds} > --max-seconds {args.max_seconds}")
    t0 = time.perf_counter()
    summary: dict = {"out": str(args.out)}
    path, recs = synthetic.make_dataset(
        args.out, seed=args.seed, num_videos=args.num_videos, min_seconds=args.min_seconds,
        max_seconds=args.max_seconds, fps=args.fps, size=args.size,
    )  # fmt: skip
    summary["synthetic"] = {"records": str(path), "num_records": len(recs), "num_videos": args.num_videos}
    all_recs = list(recs)
    if args.needle_lengths:
        seed = args.seed + 1000 if args.needle_seed is None else args.needle_seed
        path, needles = synthetic.make_needle_dataset(
            args.out, seed=seed, lengths=args.needle_lengths, depths=args.needle_depths,
            repeats=args.needle_repeats, fps=args.fps, size=args.size,
        )  # fmt: skip
        summary["needle"] = {"records": str(path), "num_records": len(needles)}
        all_recs += needles
    if args.tokenizer_vocab:
        from hourllava_jax.data.tokenizer import build_tokenizer

        tok = build_tokenizer(synthetic.corpus_texts(all_recs, args.max_seconds), args.tokenizer_vocab, args.out / "tokenizer")
        summary["tokenizer"] = {"dir": str(args.out / "tokenizer"), "vocab_size": len(tok)}
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
