"""Accelerator proof in one prepared run: kernels, MemAug at one hour, a 3B train step, SigLIP.

    PYTHONPATH=. python benchmarks/accelerator.py                 # the hardware run (<= 5 min on one H200)
    PYTHONPATH=. python benchmarks/accelerator.py --parts peak attention
    PYTHONPATH=. python benchmarks/accelerator.py --dry-run       # every part at toy sizes on CPU (CI)
    python benchmarks/accelerator.py --render                     # RESULTS.md section from the JSONs

Parts, in order (each in its own process, so a crash, an out-of-memory or a Triton failure in
one part is recorded in the JSON and the next part still runs; peak device memory is then per
part too):
  peak          bf16 matmul (f32 accumulation) TFLOP/s: the roofline of every fraction below.
  pallas_check  ``pallas_gpu`` forward and backward, compiled, against the jnp reference on 7
                shapes (head_dim 64/72/128, GQA 1/2/7/8, causal with per-row offsets, padded
                keys with a fully masked row, bf16 and f32): max errors vs the goal.
  attention     time and TFLOP/s at MemAug cross-attention shapes (16/2 heads, d 128, bf16) for
                ``pallas_gpu``, ``chunked`` and ``jax.nn.dot_product_attention`` (``xla``, and
                ``cudnn`` where it accepts the shape), forward and forward+backward.
  memaug        MemAug at the 3B widths, depth 4, on a 1-hour video (T = 3600: 234,000 memory
                tokens, 8,704 decayed + 64 text queries): forward, forward+backward, memory.
  siglip        SigLIP so400m (26 layers, 384 px, bf16) frames/s, pooled to 8x8 as the memory
                needs: what a 1-hour video (3,600 frames at 1 FPS) costs to encode.
  train_step    Qwen2.5-3B-shaped Hour-LLaVA train step (random weights, bf16 compute, fp32
                masters, remat full, 1 x (8,704 decayed + 256 text) tokens, stage-3 freezing):
                compile time, step time, tokens/s, MFU against the measured peak.
  blocks        (opt-in: ``--parts blocks``) pallas_gpu tile sweep (block_q x block_k, warps,
                stages) at the 1-hour MemAug cross-attention and a ~9k causal LLM attention:
                what the GPU defaults in kernels/blocks.py are to be picked from.

The parent process never imports JAX: it starts one child per part with a soft deadline (the
part's share of ``--budget-s``; time a part leaves unused goes to the next ones), streams its
progress, kills it at the overall deadline and writes the JSON after every part, so a run cut
short still leaves every finished part on disk. ``--dry-run`` forces CPU, runs Pallas in
interpret mode and writes to ``benchmarks/results/quick/`` (never over hardware results).
Needs only jax, flax, optax, numpy, pyyaml and safetensors (no grain, PyAV, TFDS, tensorboardX).
FLOP conventions: attention forward 4·B·H·Lq·Lk·D (non-causal), backward 2.5x forward;
train step 3x the analytic forward (matmul params x the tokens each sees, plus attention).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # benchmarks/ is a directory of scripts, not a package

from accelerator_report import SECTION_END, SECTION_START, render_run, render_section, update_results_md  # noqa: E402,F401

RESULTS = HERE / "results" / "accelerator"
DRY_RESULTS = HERE / "results" / "quick"
# The 3B train step runs last: its compile is the longest and least predictable, and the last
# part may use whatever time the others left.
PARTS = ("peak", "pallas_check", "attention", "memaug", "siglip", "train_step")
# Share of the budget each part may start work within (cumulative schedule).
SHARE = {"peak": 0.04, "pallas_check": 0.14, "attention": 0.22, "memaug": 0.14, "siglip": 0.06, "train_step": 0.40,
         "blocks": 0.5}
OPT_IN = ("blocks",)  # run only when named in --parts
GOALS = {
    "pallas_max_err": {"bfloat16": 1e-2, "float32": 1e-5},
    "attention_fwd_frac_of_peak": 0.5,
    "memaug_fwd_bwd_s": 2.0,
    "memaug_fwd_bwd_gib": 40.0,
    "train_step_mfu": 0.35,
}
DATA_PACKAGES = ("grain", "av", "tensorflow_datasets", "tensorboardX")


# ==================================================================================================
# Child side: helpers shared by the parts (JAX is imported here only)
# ==================================================================================================


class Part:
    """One part's result, written to disk after every case so a killed child loses nothing."""

    def __init__(self, name: str, path: Path, soft_deadline: float, dry: bool, peak_tflops: float | None):
        self.name, self.path, self.soft_deadline, self.dry, self.peak_tflops = name, path, soft_deadline, dry, peak_tflops
        self.data: dict = {"status": "running", "cases": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def time_left(self) -> float:
        return self.soft_deadline - time.time()

    def case(self, label: str, fn, **meta) -> dict:
        """Runs ``fn() -> dict`` unless the part's time is up; records its result or its error."""
        row = {"case": label, **meta}
        if self.time_left() <= 0:
            row["status"] = "skipped: part's time budget used up"
        else:
            t0 = time.perf_counter()
            try:
                row.update(fn())
                row.setdefault("status", "ok")
            except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
                row["status"] = "error"
                row["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
            row["wall_s"] = round(time.perf_counter() - t0, 3)
            row["memory"] = device_memory()
        log(f"[{self.name}] {label}: {summary(row)}")
        self.data["cases"].append(row)
        self.save()
        return row


def log(msg: str) -> None:
    print(msg, flush=True)


def summary(row: dict) -> str:
    keep = ("status", "ms", "tflops", "frac_of_peak", "max_err", "meets_goal", "step_s", "mfu", "frames_per_s",
            "seconds", "peak_gib", "compile_s", "error")
    parts = []
    for k in keep:
        if k in row:
            v = row[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def device_memory() -> dict | None:
    """Peak / current / limit bytes of device 0 from ``memory_stats()`` (None where unsupported)."""
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    if not stats:
        return None
    gib = lambda k: round(stats[k] / 2**30, 3) if k in stats else None  # noqa: E731
    return {"peak_gib": gib("peak_bytes_in_use"), "in_use_gib": gib("bytes_in_use"), "limit_gib": gib("bytes_limit")}


def memory_analysis(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    return {k.replace("_size_in_bytes", "_gib"): round(getattr(m, k, 0) / 2**30, 4) for k in keys}


def compile_and_time(fn, args, *, reps: int) -> dict:
    """AOT compile (timed), one warm-up call, then ``reps`` timed calls (median and best)."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return {"compile_s": round(compile_s, 3), "seconds": statistics.median(times), "best_s": min(times),
            "reps": reps, "xla_memory": memory_analysis(compiled)}


def env_info() -> dict:
    import jax

    dev = jax.devices()[0]
    return {"jax": jax.__version__, "python": platform.python_version(), "backend": jax.default_backend(),
            "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def frac(tflops: float, peak: float | None) -> float | None:
    return round(tflops / peak, 4) if peak else None


# ==================================================================================================
# Parts
# ==================================================================================================


def part_peak(p: Part) -> None:
    import jax.numpy as jnp

    from peak import measure_matmul_peak  # benchmarks/peak.py

    n = 256 if p.dry else 8192

    def run():
        r = measure_matmul_peak(jnp.bfloat16, n=n, repeats=3 if p.dry else 20)
        return {"n": n, "dtype": "bfloat16", "accumulate": "float32", "ms": r["seconds"] * 1e3, "tflops": r["gflops"] / 1e3}

    row = p.case(f"matmul {n}^3 bf16", run)
    if row.get("status") == "ok":
        p.data["bf16_matmul_tflops"] = row["tflops"]


def _attention_inputs(b, lq, lk, h, kh, d, dtype, seed=0):
    import jax
    import jax.numpy as jnp

    kq, kk, kv, ko = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (b, lq, h, d), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (b, lk, kh, d), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (b, lk, kh, d), jnp.float32).astype(dtype)
    do = jax.random.normal(ko, (b, lq, h, d), jnp.float32).astype(dtype)
    return q, k, v, do


# (label, B, Lq, Lk, H, K, D, causal, q_offset per row or None, kv lengths per row or None, dtype)
PALLAS_CASES = [
    ("siglip d72 g1", 2, 729, 729, 16, 16, 72, False, None, None, "bfloat16"),
    ("llm causal offsets d128 g8", 2, 512, 1024, 16, 2, 128, True, (512, 200), None, "bfloat16"),
    ("memaug cross padded d128 g8", 2, 1000, 3000, 16, 2, 128, False, None, (2500, 0), "bfloat16"),
    ("7b causal offsets d128 g7", 1, 600, 600, 28, 4, 128, True, (0,), None, "float32"),
    ("padded d64 g2", 2, 333, 777, 4, 2, 64, False, None, (777, 400), "float32"),
    ("causal offsets d72 g1", 2, 257, 513, 4, 4, 72, True, (256, -3), None, "float32"),
    ("memaug cross padded d128 g8 f32", 1, 512, 2048, 16, 2, 128, False, None, (1900,), "float32"),
]


# The dry run's subset (compiles dominate CI time): head_dim 64/72/128, GQA 1/2/8, both dtypes,
# causal offsets and padded keys with a fully masked row.
DRY_PALLAS = ("llm causal offsets d128 g8", "padded d64 g2", "causal offsets d72 g1")


def _toy(case):
    """The same structure at toy lengths and head counts (interpret mode is slow)."""
    label, b, lq, lk, h, kh, d, causal, off, lens, dt = case
    g = h // kh
    kh2 = min(kh, 2)
    lq2, lk2 = max(8, lq // 24), max(16, lk // 24)
    off2 = None if off is None else tuple(o * lk2 // lk if o > 0 else o for o in off)
    lens2 = None if lens is None else tuple(min(lk2, max(0, n * lk2 // lk)) for n in lens)
    return (label, b, lq2, lk2, g * kh2, kh2, d, causal, off2, lens2, dt)


def part_pallas_check(p: Part) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hourllava_jax.kernels import BlockSizes, attention

    # The reference in exact f32 (no TF32): errors then measure the kernel alone.
    jax.config.update("jax_default_matmul_precision", "highest")
    blocks = BlockSizes(16, 16) if p.dry else None  # several tiles per toy case; GPU: the defaults
    p.data["block_sizes"] = "16x16 (toy)" if p.dry else "defaults (kernels/blocks.py)"
    cases = [c for c in PALLAS_CASES if c[0] in DRY_PALLAS] if p.dry else PALLAS_CASES
    for case in cases:
        label, b, lq, lk, h, kh, d, causal, off, lens, dt = _toy(case) if p.dry else case
        dtype = jnp.dtype(dt)

        def run(b=b, lq=lq, lk=lk, h=h, kh=kh, d=d, causal=causal, off=off, lens=lens, dtype=dtype):
            q, k, v, do = _attention_inputs(b, lq, lk, h, kh, d, dtype)
            kw = {"causal": causal}
            if off is not None:
                kw["q_offset"] = jnp.asarray(off, jnp.int32)
            if lens is not None:
                kw["kv_mask"] = jnp.arange(lk)[None, :] < jnp.asarray(lens)[:, None]

            def fwd_bwd(impl, q, k, v, do):
                out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, impl=impl, block_sizes=blocks if impl != "reference" else None, **kw), q, k, v)
                return (out, *vjp(do.astype(out.dtype)))

            t0 = time.perf_counter()
            got = jax.block_until_ready(jax.jit(functools.partial(fwd_bwd, "pallas_gpu"))(q, k, v, do))
            first_s = time.perf_counter() - t0
            f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
            ref = jax.jit(functools.partial(fwd_bwd, "reference"))(f32(q), f32(k), f32(v), do)
            errs = {}
            for name, g_, r_ in zip(("out", "dq", "dk", "dv"), got, ref):
                g_, r_ = np.asarray(g_, np.float32), np.asarray(r_, np.float32)
                scale = max(1.0, float(np.abs(r_).max()))  # gradients grow with the group: relative to their range
                errs[name] = float(np.abs(g_ - r_).max() / scale)
                if not np.isfinite(g_).all():
                    errs[name] = float("inf")
            worst = max(errs.values())
            tol = GOALS["pallas_max_err"][dtype.name]
            return {"max_err": worst, "errors": errs, "goal": tol, "meets_goal": bool(worst <= tol), "first_call_s": round(first_s, 3)}

        p.case(label, run, shape={"b": b, "lq": lq, "lk": lk, "heads": h, "kv_heads": kh, "head_dim": d},
               causal=causal, q_offset=off, kv_lengths=lens, dtype=dtype.name)
    ok = [c for c in p.data["cases"] if c.get("status") == "ok"]
    p.data["all_meet_goal"] = bool(ok) and len(ok) == len(cases) and all(c["meets_goal"] for c in ok)


def attention_flops(b: int, lq: int, lk: int, h: int, d: int) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs of non-causal attention (backward = 2.5x forward)."""
    fwd = 4.0 * b * h * lq * lk * d
    return fwd, 3.5 * fwd


def part_attention(p: Part, *, xla_limit_gib: float) -> None:
    import jax
    import jax.numpy as jnp

    from hourllava_jax.kernels import attention

    h, kh, d = (4, 2, 128) if p.dry else (16, 2, 128)
    shapes = [(16, 72)] if p.dry else [(2048, 8192), (2048, 32768), (8704, 234000)]
    reps = 1 if p.dry else 5
    p.data.update(heads=h, kv_heads=kh, head_dim=d, dtype="bfloat16", batch=1, peak_tflops=p.peak_tflops,
                  flops="forward 4*B*H*Lq*Lk*D; forward+backward 3.5x forward", xla_score_limit_gib=xla_limit_gib)

    def ours(impl):
        return lambda q, k, v: attention(q, k, v, impl=impl)

    def fused(impl):
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl)

    impls = {"pallas_gpu": ours("pallas_gpu"), "chunked": ours("chunked"), "xla": fused("xla"), "cudnn": fused("cudnn")}
    p.data["note"] = "cudnn: 'not accepted' where jax.nn.dot_product_attention(implementation='cudnn') rejects the shape or backend"
    for lq, lk in shapes:
        q, k, v, do = _attention_inputs(1, lq, lk, h, kh, d, jnp.bfloat16)
        f_fwd, f_all = attention_flops(1, lq, lk, h, d)
        for name, f in impls.items():
            scores_gib = h * lq * lk * 4 / 2**30  # the f32 score matrix the xla implementation materialises
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd":
                    fn, args = f, (q, k, v)
                else:  # the cotangent is an argument: a closed-over array would be compiled in as a constant
                    fn, args = (lambda q, k, v, do, f=f: jax.vjp(f, q, k, v)[1](do)), (q, k, v, do)  # noqa: E731

                def run(fn=fn, args=args, mode=mode, name=name, scores_gib=scores_gib):
                    if name == "xla" and scores_gib * (1 if mode == "fwd" else 3) > xla_limit_gib:
                        return {"status": f"skipped: materialises ~{scores_gib:.1f} GiB of scores"}
                    try:
                        r = compile_and_time(fn, args, reps=reps)
                    except Exception as e:
                        if name != "cudnn":
                            raise
                        return {"status": f"not accepted: {type(e).__name__}: {str(e)[:300]}"}
                    flops = f_fwd if mode == "fwd" else f_all
                    tflops = flops / r["seconds"] / 1e12
                    return {**r, "ms": r["seconds"] * 1e3, "tflops": tflops, "frac_of_peak": frac(tflops, p.peak_tflops)}

                p.case(f"{name} {mode} Lq={lq} Lk={lk}", run, impl=name, mode=mode, lq=lq, lk=lk)
        del q, k, v, do


# Pallas GPU tiles to compare (block_q, block_k, num_warps, num_stages); the first is the default.
BLOCK_CONFIGS = [(64, 64, 4, 2), (128, 64, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3), (128, 128, 8, 2)]


def part_blocks(p: Part) -> None:
    """Opt-in (``--parts blocks``): pallas_gpu tile sweep at the 1-hour MemAug cross-attention
    and the ~9k-token causal LLM self-attention, forward and forward+backward; what the GPU
    defaults in kernels/blocks.py should be picked from."""
    import jax
    import jax.numpy as jnp

    from hourllava_jax.kernels import BlockSizes, attention

    h, kh, d = (4, 2, 128) if p.dry else (16, 2, 128)
    shapes = [("cross", 16, 72, False)] if p.dry else [("memaug cross 1 h", 8704, 234000, False), ("llm causal", 8960, 8960, True)]
    configs = [(16, 16, 4, 2), (32, 16, 4, 2)] if p.dry else BLOCK_CONFIGS
    reps = 1 if p.dry else 5
    p.data.update(heads=h, kv_heads=kh, head_dim=d, dtype="bfloat16", peak_tflops=p.peak_tflops)
    for label, lq, lk, causal in shapes:
        q, k, v, do = _attention_inputs(1, lq, lk, h, kh, d, jnp.bfloat16)
        f_fwd, f_all = attention_flops(1, lq, lk, h, d)
        if causal:  # about half of the score matrix is computed
            f_fwd, f_all = f_fwd / 2, f_all / 2
        for bq, bk, warps, stages in configs:
            f = functools.partial(attention, causal=causal, impl="pallas_gpu", block_sizes=BlockSizes(bq, bk, warps, stages))
            for mode, fn, args, flops in (("fwd", f, (q, k, v), f_fwd),
                                          ("fwd+bwd", lambda q, k, v, do, f=f: jax.vjp(f, q, k, v)[1](do), (q, k, v, do), f_all)):
                def run(fn=fn, args=args, flops=flops):
                    r = compile_and_time(fn, args, reps=reps)
                    tflops = flops / r["seconds"] / 1e12
                    return {**r, "ms": r["seconds"] * 1e3, "tflops": tflops, "frac_of_peak": frac(tflops, p.peak_tflops)}

                p.case(f"{label} {mode} {bq}x{bk} w{warps} s{stages}", run, shape=label, lq=lq, lk=lk, causal=causal, mode=mode,
                       block_q=bq, block_k=bk, num_warps=warps, num_stages=stages)
        del q, k, v, do
    best = {}
    for c in p.data["cases"]:
        if c.get("status") == "ok":
            key = f"{c['shape']} {c['mode']}"
            if key not in best or c["ms"] < best[key]["ms"]:
                best[key] = {k: c[k] for k in ("block_q", "block_k", "num_warps", "num_stages", "ms", "tflops")}
    p.data["best"] = best


def part_memaug(p: Part) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hourllava_jax.config import MemAugConfig, MemoryConfig
    from hourllava_jax.kernels import default_impl
    from hourllava_jax.model.memaug import MemAug, MemAugDims
    from hourllava_jax.memory.reference import build_video_memory
    from memaug_scaling import memaug_flops  # benchmarks/memaug_scaling.py: one FLOP count for both scripts

    if p.dry:
        frames, hidden, heads, kv, depth, mem_cfg = 24, 64, 4, 2, 1, MemoryConfig(pool_size=4, min_frames=16)
    else:
        frames, hidden, heads, kv, depth, mem_cfg = 3600, 2048, 16, 2, 4, MemoryConfig()
    text = 64
    tokens = jax.random.normal(jax.random.key(0), (frames, mem_cfg.pool_size**2, hidden), jnp.bfloat16)
    vm = jax.jit(lambda x: build_video_memory(x, jnp.zeros((hidden,), jnp.bfloat16), mem_cfg))(tokens)
    del tokens
    lq, lk = vm.decayed.shape[0] + text, vm.memory.shape[0]
    x = jnp.concatenate([vm.decayed, jax.random.normal(jax.random.key(1), (text, hidden), jnp.bfloat16)])[None]
    memory = vm.memory[None]
    qpos = jnp.concatenate([vm.decayed_positions, jnp.max(vm.decayed_positions) + 1 + jnp.arange(text, dtype=jnp.int32)])[None]
    kpos = vm.memory_positions[None]
    flops = memaug_flops(lq, lk, hidden, heads, kv, depth)
    p.data.update(frames=frames, hidden=hidden, heads=heads, kv_heads=kv, depth=depth, lq=lq, lk=lk,
                  memory_tokens=int(lk), decayed_tokens=int(vm.decayed.shape[0]), text_tokens=text,
                  forward_tflop=flops / 1e12, compute="bf16 compute, fp32 params", peak_tflops=p.peak_tflops)
    del vm
    reps = 1 if p.dry else 3
    for impl in ("auto",) if p.dry else ("auto", "chunked"):
        resolved = default_impl() if impl == "auto" else impl
        dims = MemAugDims(hidden, heads, kv, 1e6, MemAugConfig(depth=depth), attention_impl=impl)
        graph, params = nnx.split(MemAug(dims, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32))

        def fwd(params, x, memory, qpos, kpos, graph=graph):
            return nnx.merge(graph, params)(x, memory, qpos, kpos)

        def fwd_bwd(params, x, memory, qpos, kpos, fwd=fwd):
            loss = lambda params, x, memory: jnp.mean(jnp.square(fwd(params, x, memory, qpos, kpos).astype(jnp.float32)))  # noqa: E731
            return jax.grad(loss, argnums=(0, 1, 2))(params, x, memory)

        for mode, fn, mult in (("fwd", fwd, 1.0), ("fwd+bwd", fwd_bwd, 3.0)):
            def run(fn=fn, mult=mult):
                r = compile_and_time(fn, (params, x, memory, qpos, kpos), reps=reps)
                tflops = mult * flops / r["seconds"] / 1e12
                mem = device_memory()
                return {**r, "tflops": tflops, "frac_of_peak": frac(tflops, p.peak_tflops),
                        "peak_gib": mem["peak_gib"] if mem else None}

            p.case(f"{resolved} {mode}", run, impl=impl, resolved_impl=resolved, mode=mode,
                   note="peak_gib is this process's peak so far (fwd+bwd includes the fwd before it)")
        del params


def _model_config(cfg, extra: list[str]):
    """The Hour-LLaVA config of a train config, as the trainer builds it (stage forgetting,
    max length, dtypes), plus ``--model-set`` overrides."""
    import dataclasses

    from hourllava_jax.config import load_model_config

    mcfg = load_model_config(cfg.model, list(cfg.model_overrides) + list(extra))
    memory = dataclasses.replace(mcfg.memory, temporal_forgetting=cfg.forgetting == "spatial+temporal")
    return dataclasses.replace(mcfg, memory=memory, max_length=cfg.max_length, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype)


def _synthetic_video_batch(mcfg, frames: int, text_len: int, seed: int = 0):
    """One video sample collated as the data pipeline does (features stand in for SigLIP)."""
    import numpy as np

    from hourllava_jax.data.collate import Sample, collate
    from hourllava_jax.memory.layout import video_layout

    rng = np.random.default_rng(seed)
    p2, c = mcfg.memory.pool_size**2, mcfg.vision.hidden_size
    ids = rng.integers(3, mcfg.llm.vocab_size, text_len).astype(np.int32)
    ids[20] = mcfg.image_token_id
    labels = np.where(np.arange(text_len) >= text_len // 2, ids, -100).astype(np.int32)
    feats = rng.standard_normal((frames, p2, c), dtype=np.float32)
    layout = video_layout(frames, mcfg.memory)
    batch = collate([Sample(ids, labels, feats, layout)], pad_id=mcfg.llm.pad_token_id or 0, image_token_id=mcfg.image_token_id)
    return batch, {"decayed_tokens": int(len(layout.decayed[0])), "memory_tokens": layout.num_memory, "text_tokens": text_len}


def _path(p) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in p)


def part_train_step(p: Part, *, model_set: list[str]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from hourllava_jax.model.hour_llava import HourLlava, loss_fn
    from hourllava_jax.parallel.mesh import make_mesh
    from hourllava_jax.parallel.rules import use_rules
    from hourllava_jax.train import distributed
    from hourllava_jax.train.config import load_train_config
    from hourllava_jax.train.optimizer import trainable_mask
    from hourllava_jax.train.state import create_train_state, materialise_rest
    from hourllava_jax.train.step import compile_step, make_train_step
    from train_step import model_flops  # benchmarks/train_step.py: one FLOP count for both scripts

    frames, text_len, steps = (24, 64, 1) if p.dry else (3600, 256, 3)
    overrides = ["global_batch_size=1", "grad_accum_steps=1", "num_steps=1", "mesh={data: 1}", "tensorboard=false", "remat=full",
                 "compute_dtype=bfloat16", "param_dtype=float32", "max_length=32768"]
    if p.dry:  # the tiny preset cut to one layer per tower: CI time is compile time
        overrides.append("model=tiny")
        model_set = ["llm.num_hidden_layers=1", "memaug.depth=1", "vision.num_hidden_layers=1", *model_set]
    cfg = load_train_config(ROOT / "configs" / "train" / "3b_stage3.yaml", overrides)
    mcfg = _model_config(cfg, model_set)
    p.data.update(train_config="configs/train/3b_stage3.yaml", overrides=overrides, model_set=model_set, model=cfg.model,
                  frames=frames, peak_tflops=p.peak_tflops)

    def run():
        factory = lambda rngs: HourLlava(mcfg, rngs=rngs, remat=cfg.remat != "none")  # noqa: E731
        mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
        host, facts = _synthetic_video_batch(mcfg, frames, text_len)
        spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
        with use_rules(cfg.rules):
            t0 = time.perf_counter()
            ini = create_train_state(cfg, mesh, factory)
            state = jax.block_until_ready(ini.init())
            init_s = time.perf_counter() - t0
            rest = materialise_rest(ini.parts, factory, mesh, cfg.seed)
            mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
            step = make_train_step(ini.parts, rest, ini.tx, loss_fn, mask, compute_dtype=jnp.dtype(cfg.compute_dtype))
            t0 = time.perf_counter()
            compiled = compile_step(step, mesh, ini.abstract_state, ini.shardings, spec, verbose=False)
            compile_s = time.perf_counter() - t0
            leaves = jax.tree.leaves(state.params)
            n_params = sum(int(np.prod(x.shape)) for x in leaves)
            n_trained = sum(int(np.prod(x.shape)) for x, t in zip(leaves, jax.tree.leaves(mask)) if t)
            shapes = {k: v.shape for k, v in host.items()}
            fl = model_flops(mcfg, state.params, shapes["features"][0], shapes)  # train_step.py's count
            batch = distributed.global_batch(host, mesh)
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            first_s = time.perf_counter() - t0
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t0)
            loss = float(np.asarray(metrics["loss"]))
        step_s = statistics.median(times)
        tflops = fl["train"] / step_s / 1e12
        mem = device_memory()
        return {"compile_s": round(compile_s, 2), "init_s": round(init_s, 2), "first_step_s": round(first_s, 3),
                "step_s": step_s, "step_times_s": [round(t, 4) for t in times], "tokens_per_step": fl["llm_length"],
                "tokens_per_s": fl["llm_length"] / step_s, "train_tflop": fl["train"] / 1e12, "tflops": tflops,
                "mfu": frac(tflops, p.peak_tflops), "loss": loss, "finite": bool(np.isfinite(loss)),
                "params_B": n_params / 1e9, "trained_params_B": n_trained / 1e9,
                "forward_tflop_by_part": {k[8:]: v / 1e12 for k, v in fl.items() if k.startswith("forward_")},
                "batch": {**facts, "shapes": {k: list(v.shape) for k, v in host.items()}},
                "xla_memory": memory_analysis(compiled), "peak_gib": mem["peak_gib"] if mem else None}

    p.case(f"{cfg.model} 1 x {frames} frames", run)


def part_siglip(p: Part) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hourllava_jax.config import load_model_config
    from hourllava_jax.memory.resize import pool_frames
    from hourllava_jax.model.siglip import SiglipVisionTower

    mcfg = load_model_config("tiny" if p.dry else "hourllava_3b")
    vcfg, pool = mcfg.vision, mcfg.memory.pool_size
    tower = SiglipVisionTower(vcfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    graph, params = nnx.split(tower)
    # Matmul FLOPs per frame: every >= 2-D weight over the patches (the conv as a matmul) + scores.
    n_tok = vcfg.num_patches
    w = sum(int(x.size) for path, x in jax.tree_util.tree_leaves_with_path(params)
            if x.ndim >= 2 and "position" not in _path(path))
    per_frame = 2.0 * w * n_tok + vcfg.num_used_layers * 4.0 * n_tok * n_tok * vcfg.hidden_size
    p.data.update(image_size=vcfg.image_size, layers=vcfg.num_used_layers, hidden=vcfg.hidden_size, pool=pool,
                  gflop_per_frame=per_frame / 1e9, dtype="bfloat16 params and compute", peak_tflops=p.peak_tflops)

    def encode(params, px):
        return pool_frames(nnx.merge(graph, params)(px), pool)

    for batch in ((2,) if p.dry else (128,)):
        def run(batch=batch):
            px = jax.random.normal(jax.random.key(0), (batch, vcfg.image_size, vcfg.image_size, 3), jnp.bfloat16)
            r = compile_and_time(encode, (params, px), reps=1 if p.dry else 5)
            fps = batch / r["seconds"]
            tflops = fps * per_frame / 1e12
            return {**r, "frames_per_s": fps, "hour_seconds": 3600 / fps, "tflops": tflops, "frac_of_peak": frac(tflops, p.peak_tflops)}

        p.case(f"batch {batch}", run, batch=batch)


def child_main(args) -> int:
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0 if args.dry_run else 1.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    p = Part(args.child, Path(args.child_result), args.soft_deadline, args.dry_run, args.peak_tflops)
    p.data["env"] = env_info()
    p.save()
    log(f"[{p.name}] {p.data['env']['device_kind']} ({p.data['env']['backend']}), jax {p.data['env']['jax']}, "
        f"{p.time_left():.0f} s of its share left")
    try:
        if p.name == "peak":
            part_peak(p)
        elif p.name == "pallas_check":
            part_pallas_check(p)
        elif p.name == "attention":
            part_attention(p, xla_limit_gib=args.xla_score_limit_gib)
        elif p.name == "memaug":
            part_memaug(p)
        elif p.name == "train_step":
            part_train_step(p, model_set=args.model_set)
        elif p.name == "siglip":
            part_siglip(p)
        elif p.name == "blocks":
            part_blocks(p)
        if args.debug_part_sleep:  # test hook: a part that overruns the run's deadline
            time.sleep(args.debug_part_sleep)
        bad = [c for c in p.data["cases"] if c.get("status") == "error"]
        p.data["status"] = "ok" if not bad else f"{len(bad)} case(s) failed"
    except Exception as e:  # noqa: BLE001 - set-up failures (before any case) end up in the JSON too
        p.data["status"] = "error"
        p.data["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
        p.data["traceback"] = traceback.format_exc()[-4000:]
        log(f"[{p.name}] failed: {p.data['error']}")
    p.data["memory"] = device_memory()
    # The GPU machine has none of these: a part that needed one would have failed above.
    p.data["imported_data_packages"] = sorted(m for m in DATA_PACKAGES if sys.modules.get(m) is not None)
    p.save()
    return 0


# ==================================================================================================
# Parent side: schedule the parts, merge, write
# ==================================================================================================


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_") or "device"


def run_part(name: str, args, result_path: Path, soft_deadline: float, hard_deadline: float, peak: float | None) -> dict:
    """Runs one part in a child, streaming its output; returns its result dict (always)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-result", str(result_path),
           "--soft-deadline", str(soft_deadline), "--xla-score-limit-gib", str(args.xla_score_limit_gib)]
    cmd += ["--dry-run"] if args.dry_run else []
    cmd += ["--peak-tflops", str(peak)] if peak else []
    cmd += ["--compile-cache", args.compile_cache] if args.compile_cache else []
    for s in args.model_set:
        cmd += ["--model-set", s]
    cmd += ["--debug-part-sleep", str(args.debug_part_sleep)] if args.debug_part_sleep else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    if args.dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    tail: list[str] = []
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)

    def pump():
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
            del tail[:-40]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout=max(1.0, hard_deadline - time.time()))
    except subprocess.TimeoutExpired:
        killed = True
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    try:
        res = json.loads(result_path.read_text())
    except (OSError, ValueError):
        res = {"cases": []}
    if killed:
        res["status"] = f"killed at the run's deadline after {time.time() - t0:.0f} s (finished cases kept)"
    elif proc.returncode != 0:
        res["status"] = f"crashed (exit {proc.returncode})"
        res["output_tail"] = "".join(tail)[-4000:]
    res["part_wall_s"] = round(time.time() - t0, 1)
    return res


def parent_main(args) -> int:
    parts = args.parts or list(PARTS)
    if args.compile_cache is None and not args.dry_run:
        args.compile_cache = str(ROOT / ".jax_cache" / "accelerator")
    if args.compile_cache:
        Path(args.compile_cache).mkdir(parents=True, exist_ok=True)
    budget = args.budget_s if args.budget_s is not None else (300.0 if args.dry_run else 285.0)
    out_dir = Path(args.out_dir) if args.out_dir else (DRY_RESULTS if args.dry_run else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    deadline = t_start + budget
    result = {
        "benchmark": "accelerator", "mode": "dry-run (CPU, toy sizes, Pallas interpret mode)" if args.dry_run else "hardware",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget_s": budget, "parts_requested": parts,
        "goals": GOALS, "load_average_start": [round(x, 2) for x in os.getloadavg()], "parts": {},
    }
    path = out_dir / f"{args.name}.json" if args.name else None
    # A rerun of some parts under an existing run's --name joins that run's JSON (the other parts
    # are kept, the rerun is listed) and reuses its measured peak.
    base = json.loads(path.read_text()) if path is not None and path.is_file() and args.parts else None
    peak = args.peak_tflops or (base or {}).get("peak_bf16_tflops")
    share_total = sum(SHARE[p] for p in parts)
    cum = 0.0
    tmp_dir = out_dir / ".parts"
    tmp_dir.mkdir(exist_ok=True)
    for name in parts:
        cum += SHARE[name] / share_total
        soft = t_start + cum * budget
        left = deadline - time.time()
        print(f"== part {name}: {left:.0f} s of the run's budget left, soft deadline in {soft - time.time():.0f} s", flush=True)
        if left < (1.0 if args.dry_run else 15.0):
            res = {"status": "skipped: run's time budget used up", "cases": []}
        else:
            res = run_part(name, args, tmp_dir / f"{name}.json", soft, deadline + 5.0, peak)
        if name == "peak" and res.get("bf16_matmul_tflops"):
            peak = res["bf16_matmul_tflops"]
        result["parts"][name] = res
        if "env" in res and "env" not in result:
            result["env"] = res["env"]
        result["peak_bf16_tflops"] = peak
        result["wall_s"] = round(time.time() - t_start, 1)
        if path is None:
            kind = result.get("env", {}).get("device_kind", "device")
            stem = args.name or ("dry_run" if args.dry_run else f"{_slug(kind)}_{time.strftime('%Y%m%d', time.gmtime())}")
            path = out_dir / f"{stem}.json"
        _write(path, _merge(base, result) if base else result)
        print(f"== part {name}: {res.get('status')} in {res.get('part_wall_s', 0)} s; wrote {path}", flush=True)
    for f in tmp_dir.glob("*"):
        f.unlink()
    tmp_dir.rmdir()
    print(f"== done in {result['wall_s']} s: {path}", flush=True)
    print(render_run(_merge(base, result) if base else result, path.stem))
    return 0


def _merge(base: dict, rerun: dict) -> dict:
    """``base`` with the parts of ``rerun`` replaced and the rerun recorded."""
    out = {**base, "parts": {**base.get("parts", {}), **rerun["parts"]}}
    note = {k: rerun.get(k) for k in ("date", "parts_requested", "wall_s", "budget_s", "env")}
    out["reruns"] = [*base.get("reruns", []), note]
    if rerun.get("peak_bf16_tflops") and "peak" in rerun["parts"]:
        out["peak_bf16_tflops"] = rerun["peak_bf16_tflops"]
    return out


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


# ==================================================================================================
# Command line
# ==================================================================================================


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on CPU (Pallas interpret mode); CI runs this")
    ap.add_argument("--parts", nargs="+", choices=PARTS + OPT_IN,
                    help=f"subset to run (default, in this order: {' '.join(PARTS)}); opt-in: blocks (Pallas GPU tile sweep)")
    ap.add_argument("--budget-s", type=float, help="whole-run time budget in seconds (default 285; dry run 300)")
    ap.add_argument("--name", help="JSON file stem (default: <device kind>_<date>; dry run: dry_run)")
    ap.add_argument("--out-dir", help="default benchmarks/results/accelerator (dry run: benchmarks/results/quick)")
    ap.add_argument("--peak-tflops", type=float, help="bf16 peak to use when the peak part is not run")
    ap.add_argument("--xla-score-limit-gib", type=float, default=24.0,
                    help="skip the xla dot_product_attention where its f32 scores would exceed this")
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra model config overrides for train_step (e.g. llm.scan_layers=true where it exists)")
    ap.add_argument("--compile-cache", help="persistent XLA compile cache directory, so a rerun skips compiles "
                    "(default .jax_cache/accelerator for a hardware run, none for a dry run; '' turns it off)")
    ap.add_argument("--render", action="store_true", help="only rewrite the accelerator section of benchmarks/RESULTS.md")
    ap.add_argument("--child", choices=PARTS + OPT_IN, help=argparse.SUPPRESS)
    ap.add_argument("--child-result", help=argparse.SUPPRESS)
    ap.add_argument("--soft-deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--debug-part-sleep", type=float, default=0.0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        print(update_results_md() or "no results/accelerator/*.json yet: nothing to render")
        return 0
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
