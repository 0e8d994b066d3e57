"""Compiled memory of one stage-2 train step on a T-frame raw video, with and without the
vision-tower stop-gradient for videos over 128 frames (``vision_grad_max_frames``, issue 13).

Abstract compile only (nothing is allocated or run): ``configs/train/<config>.yaml`` with one
sequence per device and no accumulation, one device, the trainer's own ``make_train_step`` and
``compile_step``; the batch is one raw video of T frames (``pixels`` float32[1, T, S, S, 3]) with
its real layout (``video_layout``: repetition, spatial + temporal forgetting) and a 256-token
conversation. Reports ``compiled.memory_analysis()`` per setting (XLA's view of the step on the
backend it runs on: the CPU here, a GPU or TPU where run there) and writes
``benchmarks/results/vision_grad_memory.json``.

    .venv/bin/python benchmarks/vision_grad_memory.py                         # 3b_stage2, T=512
    .venv/bin/python benchmarks/vision_grad_memory.py --config tiny --frames 512   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from hourllava_jax.data.collate import _round_up  # noqa: E402
from hourllava_jax.memory.layout import video_layout  # noqa: E402
from hourllava_jax.parallel.mesh import make_mesh  # noqa: E402
from hourllava_jax.parallel.rules import use_rules  # noqa: E402
from hourllava_jax.train.config import load_train_config  # noqa: E402
from hourllava_jax.train.optimizer import trainable_mask  # noqa: E402
from hourllava_jax.train.state import create_train_state, materialise_rest  # noqa: E402
from hourllava_jax.train.step import compile_step, make_train_step  # noqa: E402
from hourllava_jax.cli.train import build_model_and_loss  # noqa: E402
from hourllava_jax.train.config import model_config  # noqa: E402

TEXT = 256


def batch_spec(mcfg, frames: int, text_multiple: int, decayed_multiple: int) -> dict[str, jax.ShapeDtypeStruct]:
    lay = video_layout(frames, mcfg.memory, key=jax.random.key(0))
    s = mcfg.vision.image_size
    m = _round_up(lay.num_memory, 128)
    n = _round_up(len(lay.decayed[0]), decayed_multiple)
    length = _round_up(TEXT, text_multiple)
    i32 = jnp.int32
    return {"input_ids": jax.ShapeDtypeStruct((1, length), i32), "attention_mask": jax.ShapeDtypeStruct((1, length), jnp.bool_),
            "labels": jax.ShapeDtypeStruct((1, length), i32), "pixels": jax.ShapeDtypeStruct((1, frames, s, s, 3), jnp.float32),
            "memory_src": jax.ShapeDtypeStruct((1, m), i32), "memory_pos": jax.ShapeDtypeStruct((1, m), i32),
            "decayed": jax.ShapeDtypeStruct((1, 1, n), i32)}


def measure(config: str, frames: int, limit: int, extra: list[str]) -> dict:
    cfg = load_train_config(config, ["global_batch_size=1", "grad_accum_steps=1", "num_steps=1000", "mesh={data: 1}",
                                     f"vision_grad_max_frames={limit}", *extra])
    mcfg = model_config(cfg)
    factory, loss_fn = build_model_and_loss(cfg)
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
    with use_rules(cfg.rules):
        ini = create_train_state(cfg, mesh, factory)
        rest = materialise_rest(ini.parts, factory, mesh, cfg.seed)
        mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
        step = make_train_step(ini.parts, rest, ini.tx, loss_fn, mask, compute_dtype=jnp.dtype(cfg.compute_dtype),
                               loss_reduction=cfg.loss_reduction, loss_group_size=cfg.loss_group_size)
        spec = batch_spec(mcfg, frames, cfg.data.text_multiple, cfg.data.decayed_multiple)
        t0 = time.perf_counter()
        compiled = compile_step(step, mesh, ini.abstract_state, ini.shardings, spec, verbose=False)
        secs = time.perf_counter() - t0
    m = compiled.memory_analysis()
    gib = lambda x: round(x / 2**30, 3)  # noqa: E731
    return {"vision_grad_max_frames": limit, "compile_s": round(secs, 1),
            "temp_GiB": gib(m.temp_size_in_bytes), "argument_GiB": gib(m.argument_size_in_bytes),
            "output_GiB": gib(m.output_size_in_bytes), "alias_GiB": gib(m.alias_size_in_bytes),
            "batch": {k: list(v.shape) for k, v in spec.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="3b_stage2")
    p.add_argument("--frames", type=int, default=512)
    p.add_argument("--limits", type=int, nargs="+", default=[128, 0], help="vision_grad_max_frames values to compile")
    p.add_argument("--set", dest="extra", nargs="*", default=[])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "vision_grad_memory.json"))
    a = p.parse_args()
    rows = [measure(a.config, a.frames, limit, a.extra) for limit in a.limits]
    out = {"config": a.config, "frames": a.frames, "overrides": a.extra, "backend": jax.default_backend(),
           "jax": jax.__version__, "loadavg": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
