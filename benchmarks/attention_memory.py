"""Claim: ``chunked`` attention's memory grows linearly in the number of keys, the reference's
quadratically (Lq·Lk scores), at MemAug cross-attention shapes on CPU.

Lq = 2048 decayed tokens (design §2: up to 8,704), Lk = 8k ... 234k memory tokens (1 h of video),
head_dim 128. Heads are reduced from 16/2 to 2/1 (still grouped, G = 2) so the 234k point runs in
seconds on 2 cores; time and memory scale linearly in the head count. Each point runs in its own
subprocess so its peak RSS is its own. Per point: forward wall time, XLA's compiled temp memory
(forward, and forward+backward compiled only), peak RSS growth over the forward runs (from
after compilation), and the achieved FLOP/s against the f32 matmul peak measured in the same
process just before (benchmarks/peak.py; the machine is shared, so the peak is re-measured
per point). The reference is not run where its compiled temp memory exceeds
--reference-limit-gb (default 4 GB: the machine's 24 GB are shared).

    python benchmarks/attention_memory.py     # table + benchmarks/results/attention_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

LQ, HEADS, KV_HEADS, HEAD_DIM = 2048, 2, 1, 128
LKS = (8192, 16384, 32768, 65536, 131072, 234000)
OUT = Path(__file__).resolve().parent / "results" / "attention_memory.json"


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_point(impl: str, lk: int, limit_gb: float, repeats: int) -> dict:
    """Runs in a fresh process: compile, check memory, time the forward once or more."""
    import jax
    import jax.numpy as jnp

    from hourllava_jax.kernels import attention

    q = jax.random.normal(jax.random.key(0), (1, LQ, HEADS, HEAD_DIM), jnp.float32)
    k = jax.random.normal(jax.random.key(1), (1, lk, KV_HEADS, HEAD_DIM), jnp.float32)
    v = jax.random.normal(jax.random.key(2), (1, lk, KV_HEADS, HEAD_DIM), jnp.float32)
    kv_mask = jnp.ones((1, lk), bool)
    fwd = jax.jit(lambda q, k, v, m: attention(q, k, v, kv_mask=m, impl=impl))
    grad = jax.jit(jax.grad(lambda q, k, v, m: attention(q, k, v, kv_mask=m, impl=impl).sum(), (0, 1, 2)))
    compiled = fwd.lower(q, k, v, kv_mask).compile()
    mem = compiled.memory_analysis()
    temp = mem.temp_size_in_bytes
    grad_mem = grad.lower(q, k, v, kv_mask).compile().memory_analysis()
    row = {
        "impl": impl,
        "lk": lk,
        "fwd_temp_bytes": temp,
        "fwd_bwd_temp_bytes": grad_mem.temp_size_in_bytes,
        # Inputs (q, k, v, mask) and outputs are O(Lq + Lk) for both: temp is where they differ.
        "fwd_argument_bytes": mem.argument_size_in_bytes,
        "fwd_output_bytes": mem.output_size_in_bytes,
        "fwd_bwd_output_bytes": grad_mem.output_size_in_bytes,
    }
    if temp > limit_gb * 2**30:
        return row | {"skipped": f"needs {temp / 2**30:.1f} GiB temp > {limit_gb} GiB limit"}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peak import measure_matmul_peak

    peak = measure_matmul_peak(jnp.float32, repeats=3)
    rss_before = _rss_bytes()  # after compiling, before any run: the growth is the run's own memory
    jax.block_until_ready(compiled(q, k, v, kv_mask))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(q, k, v, kv_mask))
        best = min(best, time.perf_counter() - t0)
    flops = 4 * LQ * lk * HEADS * HEAD_DIM  # QK^T and PV, 2 flops per multiply-add
    gflops = flops / best / 1e9
    return row | {
        "seconds": best,
        "gflops": gflops,
        "matmul_peak_gflops": peak["gflops"],
        "fraction_of_matmul_peak": gflops / peak["gflops"],
        "peak_rss_bytes": _rss_bytes(),
        "rss_before_bytes": rss_before,
    }


def _subprocess(impl: str, lk: int, limit_gb: float, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--point", impl, str(lk), "--reference-limit-gb", str(limit_gb), "--repeats", str(repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if res.returncode != 0:
        return {"impl": impl, "lk": lk, "skipped": f"failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", nargs=2, metavar=("IMPL", "LK"), help=argparse.SUPPRESS)
    ap.add_argument("--reference-limit-gb", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.point:
        print(json.dumps(measure_point(args.point[0], int(args.point[1]), args.reference_limit_gb, args.repeats)))
        return

    t0 = time.perf_counter()
    rows = []
    for lk in LKS:
        repeats = 1 if lk > 16384 else args.repeats  # the larger points run once (time budget)
        for impl in ("reference", "chunked"):
            row = _subprocess(impl, lk, args.reference_limit_gb, repeats)
            rows.append(row)
            print(_format(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"lq": LQ, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "dtype": "float32", "platform": platform.processor() or platform.machine()}
    meta["reference_limit_gib"] = args.reference_limit_gb
    meta["wall_seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))
    print(f"{meta['wall_seconds']:.0f} s in all; wrote {args.out}")


def _format(r: dict) -> str:
    gib = lambda b: f"{b / 2**30:8.3f}"
    head = (
        f"{r['impl']:>9} Lk={r['lk']:>6}  inputs {gib(r.get('fwd_argument_bytes', 0))} GiB  "
        f"fwd temp {gib(r.get('fwd_temp_bytes', 0))} GiB  fwd+bwd temp {gib(r.get('fwd_bwd_temp_bytes', 0))} GiB"
    )
    if "skipped" in r:
        return f"{head}  skipped: {r['skipped']}"
    rss = r["peak_rss_bytes"] - r["rss_before_bytes"]  # 0: the run stayed below the compile-time peak
    frac = f"  {100 * r['fraction_of_matmul_peak']:.0f}% of {r['matmul_peak_gflops']:.0f} GFLOP/s matmul peak"
    return f"{head}  {r['seconds']:7.3f} s  {r['gflops']:6.1f} GFLOP/s  run RSS +{gib(rss)} GiB{frac}"


if __name__ == "__main__":
    main()
