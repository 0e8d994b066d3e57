"""``hourllava-convert``: inspect, compose and re-export Hugging Face checkpoints.

  hourllava-convert inspect DIR
      architecture, config and parameter count of an HF directory (loads it, streamed).
  hourllava-convert compose --vision SIGLIP_DIR --llm QWEN2_DIR --out DIR [--memaug-depth 4] [--seed 0]
      a stage-1 starting point (design §3.1): the published SigLIP (last layer dropped, as the
      release does) and Qwen2 weights with a freshly initialised projector, newline and MemAug.
  hourllava-convert reshard DIR --out DIR [--dtype bfloat16] [--max-shard-gb 5]
      load and write again (dtype change, re-sharding; also a round-trip check).
  hourllava-convert export --workdir W [--step N] --out DIR [--tokenizer DIR] [--dtype bfloat16]
      a training run's checkpoint (newest, or --step) as an Hour-LLaVA directory with its tokenizer
      (hourllava_jax/cli/export.py), ready for launch/answer.py and launch/evaluate.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.config import ConfigError, HourLlavaConfig, MemAugConfig
from hourllava_jax.convert.api import load_pretrained, save_pretrained
from hourllava_jax.convert.mapping import ConversionError


def _count(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def inspect(path: Path) -> None:
    cfg, model = load_pretrained(path)
    print(f"{path}: {type(model).__name__}, {_count(model):,} parameters")
    print(cfg)


def compose(vision: Path, llm: Path, out: Path, *, memaug_depth: int, seed: int, dtype: str) -> Path:
    """SigLIP + Qwen2 directories -> an Hour-LLaVA directory with fresh projector/newline/MemAug."""
    from hourllava_jax.model.hour_llava import HourLlava

    vcfg, tower = load_pretrained(vision, dtype=dtype)
    lcfg, llm_model = load_pretrained(llm, dtype=dtype)
    if type(tower).__name__ != "SiglipVisionTower" or type(llm_model).__name__ != "Qwen2":
        raise ConversionError(f"compose needs a SigLIP vision directory and a Qwen2 directory, got {type(tower).__name__} and {type(llm_model).__name__}")
    # The release deletes the last layer and the pooling head (design §1.1): keep the layers used.
    used = vcfg.num_used_layers
    vcfg_out = dataclasses.replace(vcfg, num_hidden_layers=used, feature_layer=-1, vision_use_head=False)
    cfg = HourLlavaConfig(vision=vcfg_out, llm=lcfg, memaug=MemAugConfig(depth=memaug_depth), param_dtype=dtype, dtype=dtype)
    model = HourLlava(cfg, rngs=nnx.Rngs(seed))
    for src, dst in ((tower, model.vision_tower), (llm_model, model.llm)):
        # Same module classes and paths: copy parameter by parameter (the unused last SigLIP
        # layer, post-layernorm and head of ``src`` have no counterpart and are left behind).
        have = dict(nnx.to_flat_state(nnx.state(src, nnx.Param)))
        for path, var in nnx.to_flat_state(nnx.state(dst, nnx.Param)):
            var.set_value(have[path].get_value())
    return save_pretrained(model, cfg, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hourllava-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect")
    p.add_argument("path", type=Path)
    p = sub.add_parser("compose")
    p.add_argument("--vision", type=Path, required=True)
    p.add_argument("--llm", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--memaug-depth", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p = sub.add_parser("reshard")
    p.add_argument("path", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16"])
    p.add_argument("--max-shard-gb", type=float, default=5.0)
    p = sub.add_parser("export", help="a training workdir's checkpoint -> an Hour-LLaVA HF directory")
    p.add_argument("--workdir", type=Path, required=True, help="training run directory (train_config.yaml, checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest complete one)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory to copy (default: the run's data.tokenizer)")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16"], help="stored dtype (default: as trained)")
    p.add_argument("--max-shard-gb", type=float, default=5.0)
    p.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "inspect":
            inspect(args.path)
        elif args.cmd == "compose":
            out = compose(args.vision, args.llm, args.out, memaug_depth=args.memaug_depth, seed=args.seed, dtype=args.dtype)
            print(f"wrote {out}")
        elif args.cmd == "export":
            from hourllava_jax.cli.export import export_workdir

            out = export_workdir(args.workdir, args.out, args.step, tokenizer=args.tokenizer, dtype=args.dtype,
                                 max_shard_bytes=int(args.max_shard_gb * 1024**3), overwrite=args.overwrite)
            print(f"wrote {out}")
        else:
            cfg, model = load_pretrained(args.path, dtype=args.dtype or jnp.float32)
            out = save_pretrained(model, cfg, args.out, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 1024**3))
            print(f"wrote {out}")
    except (ConversionError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
