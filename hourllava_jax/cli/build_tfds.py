"""Builds the ``videomarathon`` TFDS dataset from records + a feature store (or videos).

    hourllava-build-tfds --source DIR --out DATA_DIR [--config features|frames] [--feature-store DIR]

``DIR`` holds the records (``*.jsonl``, all files) and either ``feature_store/`` (``features``
config; or ``--feature-store``) or ``videos/<data_source>/<video>`` (``frames`` config: 1 FPS,
at least 128 frames, 64×64, the builder's registered settings, so a reader needs no options).
``DATA_DIR`` (local or ``gs://``) is what training reads with ``data.source=tfds``,
``data.tfds_name=videomarathon/<config>``, ``data.tfds_dir=DATA_DIR`` (docs/data_pipeline.md).
Bad records are skipped and counted by reason; the summary is printed as JSON. Exits non-zero
when no example could be written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, type=Path, help="records (*.jsonl) + feature_store/ or videos/")
    p.add_argument("--out", required=True, help="TFDS data_dir to write (local or gs://)")
    p.add_argument("--config", choices=("features", "frames"), default="features")
    p.add_argument("--feature-store", type=Path, help="feature store (default: SOURCE/feature_store)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.source.is_dir() or not sorted(args.source.glob("*.jsonl")):
        print(f"--source {args.source}: no *.jsonl records there", file=sys.stderr)
        return 2
    store = args.feature_store or args.source / "feature_store"
    if args.config == "features" and not store.is_dir():
        print(f"--feature-store {store}: not a directory (the features config needs a feature store)", file=sys.stderr)
        return 2
    from hourllava_jax.data.tfds_videomarathon import VideoMarathon

    t0 = time.perf_counter()
    builder = VideoMarathon(data_dir=args.out, config=args.config, source_dir=args.source,
                            feature_store=store if args.config == "features" else None)
    builder.download_and_prepare()
    num = builder.info.splits["train"].num_examples
    summary = {"name": f"videomarathon/{args.config}", "data_dir": str(args.out), "version": str(builder.version),
               "examples": num, "skipped": dict(builder.skipped), "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(summary, indent=1))
    if num == 0:
        print("no example was written (see the skipped counts)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
