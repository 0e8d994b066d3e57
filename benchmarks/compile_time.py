"""Compile time of the full Hour-LLaVA train step at real size: scanned vs unrolled layers.

Abstract shapes only (no parameter memory): the stage-3 train config of the preset
(``configs/train/{3b,7b}_stage3.yaml``: features input, vision tower frozen, remat full, bf16
compute, AdamW), one device on the CPU backend, one sample of a 1-hour video (T = 3,600 frames:
234,000 memory slots, 8,704 decayed tokens) plus ~256 text tokens, laid out and collated by the
real host path. Times ``lower`` (tracing) and ``compile`` (XLA) of the trainer's own step
(``train/step.py``). Each (preset, scan) runs in its own process so one compile's caches and
memory do not leak into the next. Writes benchmarks/results/compile_time.json.

    .venv/bin/python benchmarks/compile_time.py                         # 3b unrolled, 3b scanned, 7b scanned
    .venv/bin/python benchmarks/compile_time.py --runs 3b:scan          # one run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "compile_time.json"
TEXT_LEN = 256
PLACEHOLDER_AT = 20


def _one(preset: str, scan: bool, frames: int) -> dict:
    """Lower + compile one train step; runs in a child process."""
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from hourllava_jax.data.collate import Sample, collate
    from hourllava_jax.memory.layout import video_layout
    from hourllava_jax.parallel.mesh import make_mesh
    from hourllava_jax.parallel.rules import use_rules
    from hourllava_jax.cli.train import build_model_and_loss
    from hourllava_jax.train.config import load_train_config, model_config
    from hourllava_jax.train.optimizer import trainable_mask
    from hourllava_jax.train.state import create_train_state
    from hourllava_jax.train.step import batch_sharding, make_train_step

    yaml = ROOT / "configs" / "train" / f"{preset}_stage3.yaml"
    cfg = load_train_config(yaml, [f"model_overrides=[scan_layers={str(scan).lower()}]", "global_batch_size=1", "grad_accum_steps=1", "loss_group_size=1",
                                   "mesh={data: 1}", "num_steps=1000"])  # fmt: skip
    mcfg = model_config(cfg)
    factory, loss_fn = build_model_and_loss(cfg)
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
    ids = np.arange(3, 3 + TEXT_LEN, dtype=np.int32) % mcfg.llm.vocab_size
    ids[PLACEHOLDER_AT] = mcfg.image_token_id
    labels = np.where(np.arange(TEXT_LEN) >= TEXT_LEN // 2, ids, -100).astype(np.int32)
    # Shapes are all that matter: zeros are never touched by the compiler.
    feats = np.zeros((frames, mcfg.memory.pool_size**2, mcfg.vision.hidden_size), np.float32)
    host = collate([Sample(ids, labels, feats, video_layout(frames, mcfg.memory, key=jax.random.key(0)))], pad_id=mcfg.llm.pad_token_id or 0,
                   image_token_id=mcfg.image_token_id)  # fmt: skip
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    del host, feats
    with use_rules(cfg.rules):
        ini = create_train_state(cfg, mesh, factory)
        mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
        step = make_train_step(ini.parts, ini.parts.rest, ini.tx, loss_fn, mask, compute_dtype=jnp.dtype(cfg.compute_dtype),
                               grad_accum_steps=cfg.grad_accum_steps)  # fmt: skip
        # As train/step.py's compile_step, with lowering and compiling timed apart.
        b_sh = {k: batch_sharding(mesh, len(v.shape)) for k, v in spec.items()}
        abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh[k]) for k, v in spec.items()}
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        jitted = jax.jit(step, in_shardings=(ini.shardings, b_sh), out_shardings=(ini.shardings, rep), donate_argnums=0)
        with jax.set_mesh(mesh):
            t0 = time.perf_counter()
            lowered = jitted.lower(ini.abstract_state, abstract_batch)
            lower_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            compiled = lowered.compile()
            compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ini.abstract_state.params))
    return {
        "preset": preset, "scan_layers": scan, "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
        "total_s": round(lower_s + compile_s, 2), "params_B": round(n_params / 1e9, 3),
        "llm_tokens": int(spec["input_ids"].shape[1] + spec["decayed"].shape[1] * spec["decayed"].shape[2]),
        "memory_slots": int(spec["memory_src"].shape[1]), "frames": frames, "remat": cfg.remat,
        "compute_dtype": cfg.compute_dtype, "hlo_chars": len(lowered.as_text()),
        "temp_GiB": round(mem.temp_size_in_bytes / 2**30, 2) if mem is not None else None,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["3b:unrolled", "3b:scan", "7b:scan"], help="preset:scan|unrolled")
    ap.add_argument("--frames", type=int, default=3600, help="video frames at 1 FPS (3600 = one hour)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.child:
        preset, mode = args.child.split(":")
        print(json.dumps(_one(preset, mode == "scan", args.frames)))
        return 0
    load0 = os.getloadavg()
    rows = []
    for run in args.runs:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--child", run, "--frames", str(args.frames)], capture_output=True, text=True,
                           env=dict(os.environ, JAX_PLATFORMS="cpu"))  # fmt: skip
        if p.returncode != 0:
            rows.append({"run": run, "error": p.stderr[-2000:]})
        else:
            rows.append({"run": run} | json.loads(p.stdout.strip().splitlines()[-1]) | {"process_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    by = {r["run"]: r for r in rows if "error" not in r}
    ratio = None
    if "3b:unrolled" in by and "3b:scan" in by:
        ratio = by["3b:unrolled"]["total_s"] / by["3b:scan"]["total_s"]
    out = {
        "what": "lower + compile of the stage-3 train step (abstract shapes, CPU backend, 1 x 1-hour video), scanned vs unrolled layers",
        "rows": rows, "speedup_3b_scan_over_unrolled": ratio, "goal_speedup": 3.0,
        "machine": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "compile time depends on load less than step time does, but these 2 cores are shared: compare rows of one run",
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({"speedup_3b_scan_over_unrolled": ratio}))
    return 1 if len(by) < len(rows) else 0  # a failed compile is recorded above and fails the run


if __name__ == "__main__":
    sys.exit(main())
