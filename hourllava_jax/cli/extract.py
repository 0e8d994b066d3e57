"""``hourllava-extract``: pre-extract pooled SigLIP features of a video tree (``data/extract.py``).

    hourllava-extract --videos DATA/videos --out DATA/feature_store --model CKPT_DIR \
        [--records train.jsonl] [--min-frames 128] [--chunk 64] [--dtype float32] \
        [--process-index I --process-count P]
    hourllava-extract --videos DATA/videos --out STORE --tiny      # random tiny tower (tests, smoke runs)

``--model``: a SigLIP or Hour-LLaVA Hugging Face directory (only its vision tower is read).
Frames of each chunk are split over the local devices. Processes: default
``jax.process_index()/process_count()``, or SLURM's task id/count when jax.distributed is not
initialised (extraction needs no collectives, so each task can run it alone). Prints one JSON
line: ``{"process": "i/P", "counts": {...}, "seconds": s}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import jax

from hourllava_jax.data.extract import build_encoder, extract_features
from hourllava_jax.data.frames import DEFAULT_MIN_FRAMES
from hourllava_jax.data.records import load_records
from hourllava_jax.data.video import DEFAULT_TIMEOUT_S
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu


def default_process() -> tuple[int, int]:
    """(index, count): jax's, or SLURM's task id/count when jax.distributed is not initialised."""
    if jax.process_count() == 1 and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    return jax.process_index(), jax.process_count()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hourllava-extract", description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, type=Path, help="video directory (DATA/videos: <data_source>/<file>)")
    p.add_argument("--out", required=True, type=Path, help="feature store directory")
    p.add_argument("--model", default=None, help="SigLIP or Hour-LLaVA checkpoint directory (HF layout)")
    p.add_argument("--tiny", action="store_true", help="random-init tiny tower (tests, smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="init seed of --tiny")
    p.add_argument("--records", type=Path, action="append", default=None,
                   help="JSONL records file: extract only its videos (repeatable; default: every video file)")
    p.add_argument("--pool-size", type=int, default=None, help="p of the p x p pooled grid (default: config / 8)")
    p.add_argument("--min-frames", type=int, default=DEFAULT_MIN_FRAMES)
    p.add_argument("--chunk", "--batch-frames", dest="chunk", type=int, default=64,
                   help="frames per compiled encoder call (rounded up to the local device count)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="stored dtype")
    p.add_argument("--shard-size", type=int, default=16, help="videos per ArrayRecord shard")
    p.add_argument("--process-index", type=int, default=None)
    p.add_argument("--process-count", type=int, default=None)
    p.add_argument("--retry-failed", action="store_true", help="retry videos recorded as failed")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="decode budget per video, seconds")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> dict:
    """Parses ``argv``, extracts, prints and returns the summary."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.model is None and not args.tiny:
        raise SystemExit("hourllava-extract: give --model DIR or --tiny")
    dpi, dpc = default_process()
    pi = dpi if args.process_index is None else args.process_index
    pc = dpc if args.process_count is None else args.process_count
    if not 0 <= pi < pc:
        raise SystemExit(f"hourllava-extract: --process-index {pi} not in [0, {pc})")
    if not args.videos.is_dir():
        raise SystemExit(f"hourllava-extract: --videos {args.videos}: no such directory")
    records = None
    if args.records:
        records = [r for path in args.records for r in load_records(path)]
    t0 = time.perf_counter()
    encoder = build_encoder(args.model, tiny=args.tiny, seed=args.seed, pool_size=args.pool_size, chunk=args.chunk,
                            devices=jax.local_devices())
    counts = extract_features(args.videos, args.out, encoder, records=records, min_frames=args.min_frames,
                              process_index=pi, process_count=pc, dtype=args.dtype, shard_size=args.shard_size,
                              retry_failed=args.retry_failed, timeout_s=args.timeout, progress=not args.no_progress)
    summary = {"process": f"{pi}/{pc}", "counts": counts, "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: 0 on success (bad videos are counted, not failures)."""
    keep_heap_for_cpu()
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
