"""Benchmark: samples/s of the feature pipeline (``data/pipeline.py``) with 0 and 2 grain workers.

Claim checked: the grain feature pipeline (feature store read, design §3.2 frame selection, time
instruction + ChatML tokenization + labels, video layout, stream/bucket batching, collate) feeds
a trainer faster than a CPU training step consumes batches, and worker processes scale it.

Data (generated into a temp dir): ``--videos`` videos with release-width features
float[N, 64, 1152] stored in ``--dtype`` (bfloat16 halves the disk), N = ``--frames``; durations
spread over short (< 180 s) and long streams; 4 records per video (2 QA pairs each); a small
BPE tokenizer trained on the records. Each configuration runs the full epoch once; reported:
pipeline construction (metadata pass + plan), time to the first batch (worker start-up
included), and steady-state samples/s after the first ``WARMUP`` batches.

    python benchmarks/pipeline.py                     # defaults below
    python benchmarks/pipeline.py --videos 8 --frames 33   # a quick run
Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from hourllava_jax.config import MemoryConfig  # noqa: E402
from hourllava_jax.data.features import FeatureWriter  # noqa: E402
from hourllava_jax.data.pipeline import PipelineConfig, RecordSource, make_feature_pipeline  # noqa: E402
from hourllava_jax.data.tokenizer import build_tokenizer  # noqa: E402


def make_data(root: Path, videos: int, frames: int, dtype: str, channels: int) -> int:
    """Writes the store, records and tokenizer; returns the number of records."""
    rng = np.random.default_rng(0)
    lines, texts = [], []
    with FeatureWriter(root / "store", dtype=dtype, shard_size=8) as w:
        for v in range(videos):
            duration = float(60 + 40 * v)  # 60 s .. : both streams (long >= 180 s)
            w.add(f"bench/v{v}", rng.standard_normal((frames, 64, channels), dtype=np.float32), duration)
            for r in range(4):
                conv = []
                for q in range(2):
                    question = f"Question {q} about event {r} in video {v}: what colour was the shape at {q * 7} s?"
                    answer = f"The shape was {'red green blue yellow'.split()[(v + r + q) % 4]} and moved {'left right up down'.split()[q % 4]}."
                    conv += [{"from": "human", "value": ("<image>\n" if q == 0 else "") + question}, {"from": "gpt", "value": answer}]
                    texts += [question, answer]
                lines.append(json.dumps({"id": f"v{v}_{r}", "video": f"v{v}.mp4", "data_source": "bench", "conversations": conv}))
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    texts += ["The video lasts for 100.00 seconds, and 64 frames are uniformly sampled from it. "
              "Please answer the following questions related to this video."] * 8
    build_tokenizer(texts, 400, root / "tok")
    return len(lines)


WARMUP = 3  # batches before the steady-state clock starts (>= workers + 1)


def run(root: Path, workers: int, batch_size: int) -> dict:
    import grain

    cfg = PipelineConfig(batch_size=batch_size, seed=0, worker_count=workers, text_multiple=128,
                         frame_buckets=(64, 128, 256, 512, 1024))
    t0 = time.perf_counter()
    pipe = make_feature_pipeline(RecordSource(root / "records.jsonl"), tokenizer_dir=root / "tok",
                                 memory=MemoryConfig(), cfg=cfg, store_dir=root / "store",
                                 shard_options=grain.sharding.NoSharding())
    t_build = time.perf_counter() - t0
    with pipe:
        t0 = time.perf_counter()
        first = next(pipe)
        t_first = time.perf_counter() - t0
        for _ in range(WARMUP - 1):  # every worker's first batch pays its start-up: not steady state
            next(pipe)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        for batch in pipe:
            n += len(batch["input_ids"])
        t_rest, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"workers": workers, "build_s": round(t_build, 3), "first_batch_s": round(t_first, 3),
            "steady_samples": n, "steady_s": round(t_rest, 3),
            "samples_per_s": round(n / t_rest, 2) if t_rest > 0 else None,
            # CPU seconds the *main* process spent per sample: what a trainer sharing that
            # process loses to input work (with workers, only receiving and bookkeeping).
            "main_cpu_ms_per_sample": round(1000 * cpu / max(n, 1), 2),
            "batch_shapes": {k: list(v.shape) for k, v in first.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--frames", type=int, default=65, help="stored frames per video")
    p.add_argument("--channels", type=int, default=1152)
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pipeline.json")
    args = p.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        num_records = make_data(root, args.videos, args.frames, args.dtype, args.channels)
        t_data = time.perf_counter() - t0
        store_mb = sum(f.stat().st_size for f in (root / "store").rglob("*") if f.is_file()) / 2**20
        results = [run(root, w, args.batch_size) for w in (0, 2)]
    out = {
        "benchmark": "pipeline",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1min": round(os.getloadavg()[0], 2)},
        "data": {"videos": args.videos, "records": num_records, "frames": args.frames, "tokens": 64,
                 "channels": args.channels, "dtype": args.dtype, "store_mb": round(store_mb, 1),
                 "generate_s": round(t_data, 2)},
        "batch_size": args.batch_size,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for r in results:
        print(f"workers={r['workers']}: build {r['build_s']} s, first batch {r['first_batch_s']} s, "
              f"{r['samples_per_s']} samples/s over {r['steady_samples']} samples, "
              f"main-process CPU {r['main_cpu_ms_per_sample']} ms/sample")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
