"""Tokens/s and MFU of the full Hour-LLaVA training step on CPU (the trainer's own compiled step).

For (a) the ``tiny`` model preset and (b) a ~100M-parameter Hour-LLaVA-shaped config (Qwen2
768-wide / 8 layers / 12:2 GQA heads / 32k tied vocabulary, MemAug 2 blocks, a 384-wide
SigLIP, the release's memory rules: 8x8 pooled frames, 128 minimum frames), each in fp32 and
bf16 compute (fp32 master weights, AdamW state fp32), this builds the model exactly as
``launch/train.py`` does (``hourllava_jax.cli.train.build_model_and_loss`` on a ``configs/train/tiny.yaml`` train config
with overrides), initialises it with ``create_train_state``, builds the step with
``make_train_step`` and AOT-compiles it with ``compile_step`` (donated state, as the trainer).

The batch is synthetic but follows the model's batch contract through the real host path:
B videos of T pooled frames with random pre-projector features float[T, p², C], laid out with
``video_layout(T, memory)`` (repetition to ``min_frames``, spatial + temporal forgetting) and
collated with ``collate`` (the pipeline's bucket multiples); each sample has ~256 text tokens
with one ``<image>`` placeholder near the start and the second half of the text supervised.
Features stand in for the frozen SigLIP tower (stage 3 trains from pre-extracted features), so
the tower is not run; its parameters count in ``params_total`` only.

Per config x dtype: parameters, LLM input tokens per step (B x padded LLM length; the MemAug
query has the same length), compile time, median step time over a few steps after one warm-up
step, tokens/s, model FLOPs per step and MFU. FLOPs come two ways:
  * ``flops_model`` (the MFU basis): analytic 3 x forward, forward = 2 x (matmul params x the
    tokens each is applied to: projector on every frame token, MemAug cross-attention K/V on
    every memory slot, everything else on the LLM/query tokens; tied lm_head included, embedding
    lookups not) + attention scores (MemAug self Lq², cross Lq·M, LLM causal L(L+1)/2), the
    6·N·tokens rule generalised to Hour-LLaVA's different token streams;
  * ``flops_xla``: ``step_flops(compiled)`` (XLA's cost analysis of the compiled step,
    optimizer included). XLA counts a while loop's body once, so the chunked attention's loops
    are undercounted; ``flops_xla / flops_model`` is reported as a cross-check.
MFU = (flops_model / step time) / matmul peak of the same dtype measured in this run with
``benchmarks/peak.py`` (fp32, or bf16 inputs with fp32 accumulation); the peak is measured at
the start and again right before each row (``peak_adjacent_gflops``, ``mfu_adjacent``) because
the 2 cores are shared. Writes ``benchmarks/results/train_step.json``.

    .venv/bin/python benchmarks/train_step.py            # tiny + ~100M, fp32 + bf16 (~8 min; 100M steps take ~25-50 s)
    .venv/bin/python benchmarks/train_step.py --quick    # tiny only, fewer steps (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import measure_matmul_peak  # noqa: E402

from hourllava_jax.data.collate import Sample, collate  # noqa: E402
from hourllava_jax.memory.layout import video_layout  # noqa: E402
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu  # noqa: E402
from hourllava_jax.parallel.mesh import make_mesh  # noqa: E402
from hourllava_jax.parallel.rules import use_rules  # noqa: E402
from hourllava_jax.train import distributed  # noqa: E402
from hourllava_jax.train.config import TrainConfig, load_train_config, model_config  # noqa: E402
from hourllava_jax.train.optimizer import trainable_mask  # noqa: E402
from hourllava_jax.train.state import create_train_state, materialise_rest  # noqa: E402
from hourllava_jax.train.step import compile_step, make_train_step, step_flops  # noqa: E402
from hourllava_jax.cli.train import build_model_and_loss  # noqa: E402

TRAIN_YAML = ROOT / "configs" / "train" / "tiny.yaml"
# The ~100M Hour-LLaVA-shaped model: overrides of the tiny preset (configs/model/tiny.yaml).
MODEL_100M = (
    "llm.hidden_size=768", "llm.num_hidden_layers=8", "llm.num_attention_heads=12", "llm.num_key_value_heads=2",
    "llm.intermediate_size=2048", "llm.vocab_size=32000",
    "vision.hidden_size=384", "vision.intermediate_size=1536", "vision.num_hidden_layers=4",
    "vision.num_attention_heads=6", "vision.image_size=224",
    "memaug.depth=2", "memory.pool_size=8", "memory.min_frames=128",
)
CONFIGS: dict[str, tuple[str, ...]] = {"tiny": (), "hourllava_100m": MODEL_100M}
TEXT_LEN = 256  # text tokens per sample (incl. the <image> placeholder)
PLACEHOLDER_AT = 20  # system prompt + "<image>" + question, then the supervised answer


# ==================================================================================================
# Config, batch, FLOPs
# ==================================================================================================


def train_config(model_overrides: tuple[str, ...], dtype: str, batch: int) -> TrainConfig:
    """The stage-3 tiny train recipe (vision tower frozen, the rest trained) on one device."""
    mo = "[" + ", ".join(model_overrides) + "]"
    return load_train_config(TRAIN_YAML, [f"model_overrides={mo}", f"compute_dtype={dtype}", f"global_batch_size={batch}",
                                          "grad_accum_steps=1", "remat=none", "mesh={data: 1}", "num_steps=1000"])


def synthetic_batch(mcfg, batch: int, frames: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """B videos of ``frames`` pooled frames, collated as the data pipeline does. Returns the batch
    and its shape facts (valid text / decayed / memory counts)."""
    rng = np.random.default_rng(seed)
    p2, c = mcfg.memory.pool_size**2, mcfg.vision.hidden_size
    vocab, img = mcfg.llm.vocab_size, mcfg.image_token_id
    samples = []
    for i in range(batch):
        n = TEXT_LEN - 6 * i  # slightly different lengths: real padding inside the bucket
        ids = rng.integers(3, vocab, n).astype(np.int32)
        ids[PLACEHOLDER_AT] = img
        labels = np.where(np.arange(n) >= n // 2, ids, -100).astype(np.int32)
        feats = rng.standard_normal((frames, p2, c)).astype(np.float32)
        samples.append(Sample(ids, labels, feats, video_layout(frames, mcfg.memory, key=jax.random.key(seed * 1000 + i))))
    out = collate(samples, pad_id=mcfg.llm.pad_token_id or 0, image_token_id=img)
    facts = {
        "text_valid": int(sum(len(s.input_ids) for s in samples)),
        "decayed_valid": int(sum(len(s.layout.decayed[0]) for s in samples)),
        "memory_valid": int(sum(s.layout.num_memory for s in samples)),
        "supervised": int(sum((s.labels != -100).sum() for s in samples)),
    }
    return out, facts


def _path(p) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in p)


def param_counts(params, mask) -> dict[str, int]:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    total = sum(int(np.prod(v.shape)) for _, v in leaves)
    trainable = sum(int(np.prod(v.shape)) for (_, v), t in zip(leaves, jax.tree.leaves(mask)) if t)
    by_module: dict[str, int] = {}
    for p, v in leaves:
        m = _path(p).split("/")[0]
        by_module[m] = by_module.get(m, 0) + int(np.prod(v.shape))
    return {"total": total, "trainable": trainable, "in_step": total - by_module.get("vision_tower", 0), **by_module}


def model_flops(mcfg, params, b: int, shapes: dict[str, tuple]) -> dict[str, float]:
    """Analytic forward FLOPs of one step (see the module docstring); train = 3 x forward."""
    u, p = shapes["features"][1:3]
    m = shapes["memory_src"][1]
    k, n = shapes["decayed"][1:]
    lt = shapes["input_ids"][1]
    length = min(mcfg.max_length, lt + k * n)  # LLM length == MemAug query length
    llm = mcfg.llm
    fwd = {"projector": 0.0, "memaug": 0.0, "llm": 0.0, "attention": 0.0}
    for path, v in jax.tree_util.tree_leaves_with_path(params):
        s = _path(path)
        if len(v.shape) < 2 or s.startswith("vision_tower") or "embed_tokens" in s:
            continue
        size = int(np.prod(v.shape))
        if s.startswith("projector"):
            fwd["projector"] += 2 * size * b * u * p
        elif s.startswith("memaug"):
            fwd["memaug"] += 2 * size * b * (m if "cross_attn/Wkv" in s else length)
        elif s.startswith("llm"):
            fwd["llm"] += 2 * size * b * length
    if llm.tie_word_embeddings:
        fwd["llm"] += 2 * llm.vocab_size * llm.hidden_size * b * length
    h = llm.hidden_size  # MemAug heads x head_dim == H; LLM heads x head_dim below
    depth = mcfg.memaug.depth if mcfg.use_memaug else 0
    fwd["attention"] += depth * 2 * 2 * b * h * (length * length + length * m)
    fwd["attention"] += llm.num_hidden_layers * 2 * 2 * b * llm.num_attention_heads * llm.kv_head_dim * length * (length + 1) / 2
    total = sum(fwd.values())
    return {"forward": total, "train": 3 * total, "llm_length": length, **{f"forward_{k}": v for k, v in fwd.items()}}


# ==================================================================================================
# One measurement
# ==================================================================================================


def run_one(name: str, overrides: tuple[str, ...], dtype: str, *, batch: int, frames: int, steps: int,
            peaks: dict[str, float]) -> dict:
    cfg = train_config(overrides, dtype, batch)
    mcfg = model_config(cfg)
    factory, loss_fn = build_model_and_loss(cfg)
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
    host, facts = synthetic_batch(mcfg, batch, frames)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    with use_rules(cfg.rules):
        t0 = time.perf_counter()
        ini = create_train_state(cfg, mesh, factory)
        state = jax.block_until_ready(ini.init())
        init_s = time.perf_counter() - t0
        rest = materialise_rest(ini.parts, factory, mesh, cfg.seed)
        mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
        step_fn = make_train_step(ini.parts, rest, ini.tx, loss_fn, mask, compute_dtype=jnp.dtype(cfg.compute_dtype),
                                  grad_accum_steps=cfg.grad_accum_steps,
                                  loss_reduction=cfg.loss_reduction, loss_group_size=cfg.loss_group_size)
        t0 = time.perf_counter()
        compiled = compile_step(step_fn, mesh, ini.abstract_state, ini.shardings, spec, verbose=False)
        compile_s = time.perf_counter() - t0
        counts = param_counts(state.params, mask)
        fl = model_flops(mcfg, state.params, batch, {k: v.shape for k, v in host.items()})
        flops_xla = step_flops(compiled)
        mem = compiled.memory_analysis()
        dev_batch = distributed.global_batch(host, mesh)
        t0 = time.perf_counter()
        state, metrics = compiled(state, dev_batch)
        jax.block_until_ready(metrics)
        first_s = time.perf_counter() - t0
        adjacent = measure_matmul_peak(jnp.dtype(dtype), n=1024, repeats=3)["gflops"]
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, metrics = compiled(state, dev_batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        metrics = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
    step_s = statistics.median(times)
    tokens = batch * fl["llm_length"]
    achieved = fl["train"] / step_s
    peak = peaks[dtype]
    row = {
        "config": name, "dtype": dtype, "params_M": counts["total"] / 1e6, "tokens_per_step": tokens,
        "step_s": step_s, "compile_s": compile_s, "tokens_per_s": tokens / step_s,
        "flops_model_G": fl["train"] / 1e9, "achieved_gflops": achieved / 1e9, "mfu": achieved / (peak * 1e9),
        "flops_xla_G": flops_xla / 1e9, "mfu_xla": flops_xla / step_s / (peak * 1e9),
        "temp_MiB": (mem.temp_size_in_bytes / 2**20) if mem is not None else None,
        "peak_adjacent_gflops": adjacent, "mfu_adjacent": achieved / (adjacent * 1e9),
        "flops_xla_over_model": flops_xla / fl["train"] if fl["train"] else None,
        "step_times_s": [round(t, 4) for t in times], "first_step_s": first_s, "init_s": init_s,
        "argument_MiB": (mem.argument_size_in_bytes / 2**20) if mem is not None else None,
        "loss": metrics.get("loss"), "finite": bool(metrics.get("finite", 1.0)),
        "params": counts,
        "batch": {"videos": batch, "frames": frames, "shapes": {k: list(v.shape) for k, v in host.items()},
                  "llm_length": fl["llm_length"], **facts,
                  "valid_llm_tokens": facts["text_valid"] - batch + facts["decayed_valid"]},
        "flops_forward_breakdown_G": {k[len("forward_"):]: v / 1e9 for k, v in fl.items() if k.startswith("forward_")},
        "valid_tokens_per_s": (facts["text_valid"] - batch + facts["decayed_valid"]) / step_s,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    del state, compiled
    return row


# ==================================================================================================
# Main
# ==================================================================================================


def model_summary(name: str, overrides: tuple[str, ...]) -> dict:
    import dataclasses

    mcfg = model_config(train_config(overrides, "float32", 1))
    keep = lambda d, ks: {k: getattr(d, k) for k in ks}  # noqa: E731
    return {
        "overrides_of_tiny": list(overrides),
        "llm": keep(mcfg.llm, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "num_key_value_heads", "tie_word_embeddings")),
        "vision": keep(mcfg.vision, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size")),
        "memaug": dataclasses.asdict(mcfg.memaug),
        "memory": keep(mcfg.memory, ("pool_size", "min_frames", "spatial_keep_ratio", "temporal_ratio", "temporal_forgetting")),
        "attention_impl": mcfg.attention_impl,
    }


def print_table(rows: list[dict]) -> None:
    cols = [("config", "{}"), ("dtype", "{}"), ("params_M", "{:.1f}"), ("tokens_per_step", "{}"), ("step_s", "{:.3f}"),
            ("compile_s", "{:.1f}"), ("tokens_per_s", "{:.0f}"), ("flops_model_G", "{:.1f}"), ("flops_xla_G", "{:.1f}"),
            ("achieved_gflops", "{:.1f}"), ("mfu", "{:.1%}"), ("mfu_adjacent", "{:.1%}"), ("temp_MiB", "{:.1f}")]
    cells = [[c for c, _ in cols]] + [[f.format(r[c]) if r[c] is not None else "-" for c, f in cols] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    for j, r in enumerate(cells):
        print("  ".join(x.rjust(w[i]) for i, x in enumerate(r)))
        if j == 0:
            print("  ".join("-" * x for x in w))


def main() -> None:
    # The heap settings the trainer applies on CPU (parallel/host_heap.py).
    heap_kept = keep_heap_for_cpu()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny config only, fewer steps (benchmarks/run_all.py --quick)")
    ap.add_argument("--configs", default=None, help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", type=int, default=2, help="videos per step")
    ap.add_argument("--frames", type=int, default=128, help="pooled frames per video")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row after one warm-up step (default 3; 2 for the 100M config)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = ap.parse_args()
    names = (args.configs or ("tiny" if args.quick else ",".join(CONFIGS))).split(",")
    dtypes = args.dtypes.split(",")
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    peak = {d: measure_matmul_peak(jnp.dtype(d)) for d in dtypes}
    print("matmul peak (GFLOP/s): " + ", ".join(f"{d} {p['gflops']:.1f}" for d, p in peak.items()), flush=True)
    rows = []
    for name in names:
        for d in dtypes:
            steps = args.steps or (2 if name == "hourllava_100m" else 3)
            print(f"== {name} {d}: B={args.batch} T={args.frames}, {steps} timed steps", flush=True)
            row = run_one(name, CONFIGS[name], d, batch=args.batch, frames=args.frames, steps=steps,
                          peaks={k: v["gflops"] for k, v in peak.items()})
            print(f"   compile {row['compile_s']:.1f}s, step {row['step_s']:.3f}s, {row['tokens_per_s']:.0f} tok/s, "
                  f"MFU {row['mfu']:.1%} (xla flops/model flops {row['flops_xla_over_model']:.2f}), loss {row['loss']:.3f}", flush=True)
            rows.append(row)
    out = {
        "host_heap_kept": heap_kept,
        "what": "Full Hour-LLaVA train step (launch/train.py model + train/step.py compiled step, AdamW, fp32 masters) on CPU",
        "mode": "quick" if args.quick else "full",
        "flops_basis": "mfu uses flops_model (analytic 3x forward: 2·N·tokens per token stream + attention scores); "
                       "flops_xla is step_flops(compiled), XLA cost analysis (while-loop bodies counted once)",
        "tokens_basis": "tokens_per_step = B x padded LLM input length (MemAug query length is the same); valid_tokens_per_s excludes padding",
        "peak": list(peak.values()),
        "configs": {n: model_summary(n, CONFIGS[n]) for n in names},
        "train_recipe": f"{TRAIN_YAML.relative_to(ROOT)} (stage 3: vision_tower frozen, features input) + compute_dtype, "
                        "global_batch_size, remat=none, mesh={data: 1}",
        "rows": rows,
        "machine": platform.platform(), "cpus": os.cpu_count(), "devices": str(jax.devices()),
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print()
    print_table(rows)
    print(f"\nload average start {out['loadavg_start']} end {out['loadavg_end']}; wall {out['wall_s']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
