"""Benchmark: how the video memory and MemAug scale with video length (SPEC §1.3 table, §1.5).

For T in {128, 600, 1800, 3600} frames (1 FPS: 2 min to 1 h) it reports
  * memory / decayed token counts from ``build_video_memory`` (checked against SPEC §1.3),
  * time and XLA memory analysis of the jitted memory build at Hour-LLaVA-3B width (H 2048, bf16),
  * time and XLA memory analysis of one jitted MemAug forward (query = decayed tokens + a
    64-token text prompt, memory = the whole repository, bf16 compute, fp32 params,
    ``impl="auto"`` attention, i.e. the chunked kernel on CPU) for a stated reduction of the
    3B model, and the analytic FLOPs of the full 3B MemAug (4 blocks) for comparison.

Full 3B MemAug at T=3600 is ~7e13 FLOPs (minutes on 2 shared cores), so the default run uses
depth 1 at full width for T <= 600 and depth 1 at width 256 (2 heads of 128, 1 kv head) for all T.
Timings are wall-clock on a shared machine: treat them as orders of magnitude.

    python benchmarks/memaug_scaling.py            # writes benchmarks/results/memaug_scaling.json
    python benchmarks/memaug_scaling.py --frames 128 600
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from hourllava_jax.config import MemAugConfig, MemoryConfig
from hourllava_jax.model.memaug import MemAug, MemAugDims
from hourllava_jax.model.memory import build_video_memory

TEXT_TOKENS = 64  # a short prompt; the n0 = 8 prefix sits before the decayed tokens (SPEC §1.4)
H_3B, HEADS_3B, KV_3B = 2048, 16, 2


def _mem_analysis(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")}


def _time(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))  # warm (compiled already)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def memaug_flops(lq: int, lk: int, h: int, heads: int, kv: int, depth: int) -> float:
    """Matmul FLOPs of a MemAug forward (2 per multiply-add)."""
    d = h // heads
    self_attn = 2 * lq * h * (heads + 2 * kv) * d + 4 * lq * lq * h + 2 * lq * h * h
    cross = 2 * lq * h * h + 2 * lk * h * 2 * kv * d + 4 * lq * lk * h + 2 * lq * h * h
    mlp = 2 * 2 * lq * h * 4 * h
    return float(depth * (self_attn + cross + mlp))


def query_positions(decayed_positions: jax.Array) -> jax.Array:
    """SPEC §1.4 with an 8-token prefix before the video and the rest of the prompt after it."""
    pre = jnp.arange(8, dtype=jnp.int32)
    vid = decayed_positions + 8
    post = jnp.max(vid) + 1 + jnp.arange(TEXT_TOKENS - 8, dtype=jnp.int32)
    return jnp.concatenate([pre, vid, post])


def bench_build(t: int, cfg: MemoryConfig) -> tuple[dict, object]:
    key = jax.random.key(0)
    tokens = jax.random.normal(key, (t, cfg.pool_size**2, H_3B), jnp.bfloat16)
    newline = jnp.zeros((H_3B,), jnp.bfloat16)
    fn = jax.jit(lambda x, nl: build_video_memory(x, nl, cfg))
    compiled = fn.lower(tokens, newline).compile()
    vm = compiled(tokens, newline)
    secs = _time(compiled, tokens, newline, reps=2)
    return {"build_seconds": secs, "build_memory": _mem_analysis(compiled)}, vm


def bench_memaug(vm, dims: MemAugDims, reps: int) -> dict:
    h = dims.hidden
    model = MemAug(dims, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    graph, params = nnx.split(model)
    lq = vm.decayed.shape[0] + TEXT_TOKENS
    x = jax.random.normal(jax.random.key(1), (1, lq, h), jnp.bfloat16)
    memory = vm.memory[None, :, :h]  # the repository's first h channels stand in at reduced width
    qp, kp = query_positions(vm.decayed_positions)[None], vm.memory_positions[None]

    @jax.jit
    def fwd(params, x, memory, qp, kp):
        return nnx.merge(graph, params)(x, memory, qp, kp)

    compiled = fwd.lower(params, x, memory, qp, kp).compile()
    secs = _time(compiled, params, x, memory, qp, kp, reps=reps)
    flops = memaug_flops(lq, memory.shape[1], h, dims.heads, dims.kv_heads, dims.memaug.depth)
    return {"hidden": h, "heads": dims.heads, "kv_heads": dims.kv_heads, "depth": dims.memaug.depth,
            "lq": lq, "lk": int(memory.shape[1]), "seconds": secs, "gflops": flops / 1e9,
            "gflop_per_s": flops / 1e9 / secs, "memory": _mem_analysis(compiled)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[128, 600, 1800, 3600])
    ap.add_argument("--full-width-max-frames", type=int, default=600, help="largest T run at 3B width (depth 1)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memaug_scaling.json"))
    args = ap.parse_args()

    cfg = MemoryConfig()  # 3B preset values: p=8, min 128 frames, uniform spatial + temporal
    reduced = MemAugDims(256, 2, 1, 1e6, MemAugConfig(depth=1))
    full1 = MemAugDims(H_3B, HEADS_3B, KV_3B, 1e6, MemAugConfig(depth=1))
    rows = []
    print(f"{'T':>5} {'memory':>8} {'decayed':>8} {'build s':>8} {'w256 s':>8} {'w2048 s':>8} {'3B-d4 TFLOP':>12}")
    for t in args.frames:
        row = {"frames": t}
        build, vm = bench_build(t, cfg)
        row.update(build, memory_tokens=int(vm.memory.shape[0]), decayed_tokens=int(vm.decayed.shape[0]),
                   decayed_frames=int(vm.frame_indices.shape[0]))
        lq = row["decayed_tokens"] + TEXT_TOKENS
        row["full_3b_depth4_tflops"] = memaug_flops(lq, row["memory_tokens"], H_3B, HEADS_3B, KV_3B, 4) / 1e12
        row["memaug_reduced"] = bench_memaug(vm, reduced, reps=1)
        if t <= args.full_width_max_frames:
            row["memaug_3b_depth1"] = bench_memaug(vm, full1, reps=1)
        del vm
        rows.append(row)
        full_s = row.get("memaug_3b_depth1", {}).get("seconds", float("nan"))
        print(f"{t:>5} {row['memory_tokens']:>8} {row['decayed_tokens']:>8} {row['build_seconds']:>8.3f} "
              f"{row['memaug_reduced']['seconds']:>8.2f} {full_s:>8.2f} {row['full_3b_depth4_tflops']:>12.1f}", flush=True)
    out = {
        "benchmark": "memaug_scaling", "text_tokens": TEXT_TOKENS, "attention_impl": "auto",
        "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "reduction": "MemAug timed at depth 1: width 256 (2 heads x 128, 1 kv head) for every T, "
                     "3B width (2048, 16/2 heads) for T <= --full-width-max-frames; memory build at 3B width bf16",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"peak RSS {out['peak_rss_gib']:.2f} GiB; wrote {args.out}")


if __name__ == "__main__":
    main()
