"""Benchmark: how the video memory and MemAug scale with video length (design §2.3 table, design §1.3).

For T in {128, 600, 1800, 3600} frames (1 FPS: 2 min to 1 h) it reports
  * memory / decayed token counts from ``build_video_memory`` (checked against design §2),
  * time and XLA memory analysis of the jitted memory build at Hour-LLaVA-3B width (H 2048, bf16),
  * time and XLA memory analysis of one jitted MemAug forward (query = decayed tokens + a
    64-token text prompt, memory = the whole repository, bf16 compute, fp32 params,
    ``impl="auto"`` attention, i.e. the chunked kernel on CPU) for a stated reduction of the
    3B model, and the analytic FLOPs of the full 3B MemAug (4 blocks) for comparison.

Full 3B MemAug at T=3600 is ~70 TFLOP (hours on 2 shared CPU cores), so the full model is only
compiled (abstract parameters: XLA's memory analysis shows what the chunked attention needs) and
its time extrapolated from a measured 3B-width depth-1 run at T=128; width 256 depth 1 is timed
up to T=600. Timings are wall-clock on a shared machine: treat them as orders of magnitude.

    python benchmarks/memaug_scaling.py            # writes benchmarks/results/memaug_scaling.json
    python benchmarks/memaug_scaling.py --frames 128 600

A real hour (no extrapolation): ``--real-frames 3600`` runs one 3B-width MemAug block forward
(H 2048, 16/2 heads, 234,000 memory slots, 8,768 query tokens) in a fresh process and reports its
wall time, the process's peak RSS, and the attention's share of the matmul peak measured in the
same process (the block's two attentions timed alone at the same shapes). The four blocks of the
model cost the same (same shapes, same memory), so depth 4 is 4x one block; ``--real-depth 4``
runs all four for real. Writes results/memaug_real_hour.json (``--real-out``).

    python benchmarks/memaug_scaling.py --real-frames 600            # reduced-size check (39,000 slots)
    python benchmarks/memaug_scaling.py --real-frames 3600 [--real-depth 4] [--real-dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from hourllava_jax.config import MemAugConfig, MemoryConfig  # noqa: E402
from hourllava_jax.model.memaug import MemAug, MemAugDims  # noqa: E402
from hourllava_jax.memory.reference import build_video_memory  # noqa: E402

TEXT_TOKENS = 64  # a short prompt; the n0 = 8 prefix sits before the decayed tokens (design §2.4)
H_3B, HEADS_3B, KV_3B = 2048, 16, 2


def _mem_analysis(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    return {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")}


def _time(fn, *args, reps: int) -> float:
    """Best of ``reps`` runs of an already compiled function (plus one warm-up when reps > 1)."""
    if reps > 1:
        jax.block_until_ready(fn(*args))
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
    """design §2.4 with an 8-token prefix before the video and the rest of the prompt after it."""
    pre = jnp.arange(8, dtype=jnp.int32)
    vid = decayed_positions + 8
    post = jnp.max(vid) + 1 + jnp.arange(TEXT_TOKENS - 8, dtype=jnp.int32)
    return jnp.concatenate([pre, vid, post])


def bench_build(t: int, cfg: MemoryConfig) -> tuple[dict, object]:
    # One frame's random tokens, shifted per frame: the bf16 [T, 64, H] array is all that is held
    # (a [T, 64, H] normal draw goes through f32 and doubled the real hour's peak RSS).
    frame = jax.random.normal(jax.random.key(0), (1, cfg.pool_size**2, H_3B), jnp.float32)
    tokens = jax.jit(lambda f: (f + 1e-3 * jnp.arange(t, dtype=jnp.float32)[:, None, None]).astype(jnp.bfloat16))(frame)
    newline = jnp.zeros((H_3B,), jnp.bfloat16)
    fn = jax.jit(lambda x, nl: build_video_memory(x, nl, cfg))
    compiled = fn.lower(tokens, newline).compile()
    vm = compiled(tokens, newline)
    secs = _time(compiled, tokens, newline, reps=3)
    return {"build_seconds": secs, "build_memory": _mem_analysis(compiled)}, vm


def _memaug_inputs(lq: int, lk: int, h: int):
    return (jax.ShapeDtypeStruct((1, lq, h), jnp.bfloat16), jax.ShapeDtypeStruct((1, lk, h), jnp.bfloat16),
            jax.ShapeDtypeStruct((1, lq), jnp.int32), jax.ShapeDtypeStruct((1, lk), jnp.int32))


def bench_memaug(vm, dims: MemAugDims, *, run: bool) -> dict:
    """Compiles one MemAug forward for this video's shapes (abstract params: nothing allocated
    unless ``run``) and reports XLA's memory analysis; with ``run``, also times it."""
    h = dims.hidden
    lq, lk = vm.decayed.shape[0] + TEXT_TOKENS, vm.memory.shape[0]
    make = lambda: MemAug(dims, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32)  # noqa: E731
    graph, abstract = nnx.split(nnx.eval_shape(make))

    @jax.jit
    def fwd(params, x, memory, qp, kp):
        return nnx.merge(graph, params)(x, memory, qp, kp)

    compiled = fwd.lower(abstract, *_memaug_inputs(lq, lk, h)).compile()
    flops = memaug_flops(lq, lk, h, dims.heads, dims.kv_heads, dims.memaug.depth)
    out = {"hidden": h, "heads": dims.heads, "kv_heads": dims.kv_heads, "depth": dims.memaug.depth,
           "lq": lq, "lk": lk, "gflops": flops / 1e9, "memory": _mem_analysis(compiled)}
    if run:
        _, params = nnx.split(make())
        x = jax.random.normal(jax.random.key(1), (1, lq, h), jnp.bfloat16)
        memory = vm.memory[None, :, :h]  # the repository's first h channels stand in at reduced width
        qp, kp = query_positions(vm.decayed_positions)[None], vm.memory_positions[None]
        secs = _time(compiled, params, x, memory, qp, kp, reps=1)
        out.update(seconds=secs, gflop_per_s=flops / 1e9 / secs)
    return out


def _rss_gib() -> float:
    """Current resident set of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def real_run(frames: int, depth: int, dtype: str) -> dict:
    """One real MemAug forward at 3B width on a ``frames``-frame video (runs in this process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peak import measure_matmul_peak

    from hourllava_jax.kernels import attention

    dt = jnp.dtype(dtype)
    load0 = os.getloadavg()
    peak = measure_matmul_peak(dt)["gflops"]
    cfg = MemoryConfig()
    dims = MemAugDims(H_3B, HEADS_3B, KV_3B, 1e6, MemAugConfig(depth=depth))
    _, vm = bench_build(frames, cfg)
    lq, lk, h = vm.decayed.shape[0] + TEXT_TOKENS, vm.memory.shape[0], H_3B
    model = MemAug(dims, rngs=nnx.Rngs(0), dtype=dt, param_dtype=jnp.float32)
    graph, params = nnx.split(model)
    fwd = jax.jit(lambda p, x, m, qp, kp: nnx.merge(graph, p)(x, m, qp, kp))
    x = jax.random.normal(jax.random.key(1), (1, lq, h), dt)
    memory = vm.memory[None].astype(dt)
    qp, kp = query_positions(vm.decayed_positions)[None], vm.memory_positions[None]
    del vm
    t0 = time.perf_counter()
    compiled = fwd.lower(params, x, memory, qp, kp).compile()
    compile_s = time.perf_counter() - t0
    rss_inputs = _rss_gib()  # parameters + inputs + compiled program, before the forward runs
    temp = _mem_analysis(compiled).get("temp_size_in_bytes", 0) / 2**30
    block_s = _time(compiled, params, x, memory, qp, kp, reps=1)
    d = h // HEADS_3B
    # The block's attentions alone, at its shapes: self over the query, cross over the memory.
    q = jax.random.normal(jax.random.key(2), (1, lq, HEADS_3B, d), dt)
    k_self = jax.random.normal(jax.random.key(3), (1, lq, KV_3B, d), dt)
    k_mem = jax.random.normal(jax.random.key(4), (1, lk, KV_3B, d), dt)
    att = jax.jit(lambda q, k, v: attention(q, k, v))
    self_s = _time(att.lower(q, k_self, k_self).compile(), q, k_self, k_self, reps=2)
    cross_s = _time(att.lower(q, k_mem, k_mem).compile(), q, k_mem, k_mem, reps=1)  # compiled first: one run is all timed
    att_flops = 4 * lq * lq * h + 4 * lq * lk * h
    flops = memaug_flops(lq, lk, h, HEADS_3B, KV_3B, depth)
    return {
        "frames": frames, "depth": depth, "dtype": dtype, "lq": lq, "lk": lk, "hidden": h, "heads": HEADS_3B, "kv_heads": KV_3B,
        "compile_s": compile_s, "forward_s": block_s, "forward_gflops": flops / 1e9, "forward_frac_of_peak": flops / block_s / 1e9 / peak,
        "attention_self_s": self_s, "attention_cross_s": cross_s,
        "attention_frac_of_peak": att_flops / (self_s + cross_s) / 1e9 / peak,
        "attention_share_of_forward_flops": att_flops * depth / flops,
        "matmul_peak_gflops": peak, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_forward_gib": rss_inputs, "xla_temp_gib": temp,
        "depth4_estimate_s": None if depth == 4 else 4 * block_s / depth,
        "depth4_note": "the four blocks have the same shapes and read the same memory: depth 4 costs 4x one block",
        "load_average_start": list(load0), "load_average_end": list(os.getloadavg()),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[128, 600, 1800, 3600])
    ap.add_argument("--full-width-max-frames", type=int, default=128, help="largest T timed at 3B width (depth 1)")
    ap.add_argument("--run-max-frames", type=int, default=600, help="largest T timed at width 256 (depth 1)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memaug_scaling.json"))
    ap.add_argument("--real-frames", type=int, default=None, help="run one real 3B-width forward at this T instead (3600 = 1 hour)")
    ap.add_argument("--real-depth", type=int, default=1, help="MemAug blocks in the real run (4 = the whole module)")
    ap.add_argument("--real-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--real-out", default=str(Path(__file__).parent / "results" / "memaug_real_hour.json"))
    args = ap.parse_args()
    if args.real_frames:
        r = real_run(args.real_frames, args.real_depth, args.real_dtype)
        Path(args.real_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.real_out).write_text(json.dumps(r, indent=1))
        print(json.dumps(r, indent=1))
        return

    cfg = MemoryConfig()  # 3B preset values: p=8, min 128 frames, uniform spatial + temporal
    reduced = MemAugDims(256, 2, 1, 1e6, MemAugConfig(depth=1))
    full1 = MemAugDims(H_3B, HEADS_3B, KV_3B, 1e6, MemAugConfig(depth=1))
    full4 = MemAugDims(H_3B, HEADS_3B, KV_3B, 1e6, MemAugConfig(depth=4))
    rows, rate = [], None
    print(f"{'T':>5} {'memory':>8} {'decayed':>8} {'build s':>8} {'w256d1 s':>9} {'3Bd1 s':>8} "
          f"{'3Bd4 TFLOP':>10} {'3Bd4 temp GiB':>13} {'3Bd4 est s':>10}")
    for t in args.frames:
        row = {"frames": t}
        build, vm = bench_build(t, cfg)
        row.update(build, memory_tokens=int(vm.memory.shape[0]), decayed_tokens=int(vm.decayed.shape[0]),
                   decayed_frames=int(vm.frame_indices.shape[0]))
        row["memaug_3b_depth4"] = bench_memaug(vm, full4, run=False)
        row["memaug_reduced"] = bench_memaug(vm, reduced, run=t <= args.run_max_frames)
        if t <= args.full_width_max_frames:
            row["memaug_3b_depth1"] = bench_memaug(vm, full1, run=True)
            rate = row["memaug_3b_depth1"]["gflop_per_s"]
        if rate:  # extrapolation from the measured 3B-width throughput, labelled as such
            row["memaug_3b_depth4"]["estimated_seconds"] = row["memaug_3b_depth4"]["gflops"] / rate
        del vm
        rows.append(row)
        full4_row = row["memaug_3b_depth4"]
        temp = full4_row["memory"].get("temp_size_in_bytes", float("nan")) / 2**30
        print(f"{t:>5} {row['memory_tokens']:>8} {row['decayed_tokens']:>8} {row['build_seconds']:>8.3f} "
              f"{row['memaug_reduced'].get('seconds', float('nan')):>9.2f} "
              f"{row.get('memaug_3b_depth1', {}).get('seconds', float('nan')):>8.2f} "
              f"{full4_row['gflops'] / 1e3:>10.2f} {temp:>13.2f} {full4_row.get('estimated_seconds', float('nan')):>10.0f}", flush=True)
    out = {
        "benchmark": "memaug_scaling", "text_tokens": TEXT_TOKENS, "attention_impl": "auto",
        "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "reduction": ("memory build run at 3B width (H 2048, bf16) for every T; full 3B MemAug (depth 4) "
                      "compiled from abstract shapes for every T (XLA memory analysis, analytic FLOPs, time "
                      "extrapolated from the measured 3B depth-1 throughput); timed runs: 3B width depth 1 for "
                      "T <= --full-width-max-frames, width 256 (2 heads x 128, 1 kv head) depth 1 for T <= --run-max-frames"),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"peak RSS {out['peak_rss_gib']:.2f} GiB; wrote {args.out}")


if __name__ == "__main__":
    main()
