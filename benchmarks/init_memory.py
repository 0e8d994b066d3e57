"""Host memory of ``init.from`` a Hugging Face directory: is the checkpoint read tensor by tensor?

    python benchmarks/init_memory.py [--scale 4] [--out benchmarks/results/init_memory.json]

Writes an Hour-LLaVA-7B-layout checkpoint (``configs/model/hourllava_7b.yaml``: Qwen2-7B's
152,064-row vocabulary kept whole, LLM widths and layer count divided by ``--scale``, SigLIP
so400m at 4 layers) in bf16 from a separate process, then, in a fresh process, loads it the way
``init.from`` does (``convert/init.load_params_placed`` onto the train state's abstract params
and shardings, cast to fp32). On CPU the "devices" live in host memory, so the placed params
count in the RSS; the claim is about the rest: anonymous RSS above the baseline minus the
placed params should stay near the largest tensor (read + its fp32 cast), not near the model.
File-backed RSS (the memory-mapped safetensors pages, reclaimable) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _overrides(scale: int) -> list[str]:
    h, inter, layers = 3584 // scale, 18944 // scale, max(1, 28 // scale)
    heads = 28 // scale if (3584 // scale) % (28 // scale) == 0 else 28
    return [f"llm.hidden_size={h}", f"llm.intermediate_size={inter}", f"llm.num_hidden_layers={layers}",
            f"llm.num_attention_heads={heads}", "llm.num_key_value_heads=1", "llm.head_dim=128",
            "vision.num_hidden_layers=4"]


def _status() -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


def write(path: str, scale: int) -> None:
    import jax.numpy as jnp
    from flax import nnx

    from hourllava_jax.config import load_model_config
    from hourllava_jax.convert import save_pretrained
    from hourllava_jax.model.hour_llava import HourLlava

    cfg = load_model_config("hourllava_7b", _overrides(scale))
    model = HourLlava(cfg, rngs=nnx.Rngs(0))
    save_pretrained(model, cfg, path, dtype=jnp.bfloat16, max_shard_bytes=1 << 30)


def load(path: str, scale: int) -> dict:
    import jax
    import numpy as np
    from flax import traverse_util

    from hourllava_jax.train.config import model_config
    from hourllava_jax.convert import init as init_lib
    from hourllava_jax.parallel.mesh import make_mesh
    from hourllava_jax.parallel.rules import use_rules
    from hourllava_jax.train.config import load_train_config
    from hourllava_jax.train.state import create_train_state

    cfg = load_train_config(ROOT / "configs/train/7b_stage2.yaml",
                            ["model_overrides=[" + ",".join(_overrides(scale)) + "]", "num_steps=1000"])
    from hourllava_jax.model.hour_llava import HourLlava

    mcfg = model_config(cfg)
    with use_rules(cfg.rules):
        ini = create_train_state(cfg, make_mesh(cfg.mesh), lambda rngs: HourLlava(mcfg, rngs=rngs))
    targets = traverse_util.flatten_dict(ini.abstract_state.params)
    base = _status()
    samples: list[dict[str, int]] = []
    put = init_lib._put

    def measured_put(x, sharding):  # sampled at the fullest point: tensor read and cast
        samples.append(_status())
        return put(x, sharding)

    init_lib._put = measured_put
    params, unused = init_lib.load_params_placed(path, targets, dtype="float32")
    end = _status()
    if unused or len(params) != len(targets):  # a partial load would measure less than the real one
        raise SystemExit(f"init_memory: {len(params)}/{len(targets)} parameters loaded, {len(unused)} source tensors unused")
    placed = sum(int(np.prod(t.shape)) * 4 for t in targets.values())
    largest = max(int(np.prod(t.shape)) for t in targets.values())
    anon_peak = max(s["RssAnon"] for s in samples + [end])
    jax.block_until_ready(list(params.values()))
    return {
        "num_params": sum(int(np.prod(t.shape)) for t in targets.values()),
        "num_tensors": len(targets), "loaded": len(params), "unused": len(unused),
        "placed_fp32_bytes": placed,
        "largest_tensor_params": largest,
        "largest_tensor_bf16_plus_fp32_bytes": largest * 6,
        "baseline_rss_anon_bytes": base["RssAnon"],
        "peak_rss_anon_bytes": anon_peak,
        "peak_rss_anon_above_baseline_minus_placed_bytes": anon_peak - base["RssAnon"] - placed,
        "peak_rss_file_bytes": max(s["RssFile"] for s in samples + [end]),
        "vm_hwm_bytes": end["VmHWM"],
        "checkpoint_bytes": sum(f.stat().st_size for f in Path(path).glob("*.safetensors")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/init_memory.json")
    ap.add_argument("--phase", choices=("write", "load"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase == "write":
        return write(a.path, a.scale)
    if a.phase == "load":
        print(json.dumps(load(a.path, a.scale)))
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory(prefix="init_memory-") as tmp:
        ckpt = str(Path(tmp) / "ckpt")
        for phase in ("write", "load"):
            r = subprocess.run([sys.executable, __file__, "--phase", phase, "--path", ckpt, "--scale", str(a.scale)],
                               env=env, capture_output=True, text=True, check=False)
            if r.returncode:
                sys.exit(f"{phase} failed:\n{r.stderr[-3000:]}")
        result = json.loads(r.stdout.strip().splitlines()[-1])
    result.update(what="init.from a 7B-layout HF directory (scaled widths, full vocabulary): host RSS while loading",
                  scale=a.scale, loadavg=os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
