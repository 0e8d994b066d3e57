"""Op-class breakdown of the llm_step benchmark's forward+backward: hourllava_jax vs transformers.

Same ~100M Qwen2 and weights as ``llm_step.py``; both frameworks profiled in one run (so the
ratios share one machine state). Writes benchmarks/results/profile_llm_step.json.

    .venv/bin/python benchmarks/profile_llm_step.py [--seq 256 1024] [--impls chunked,xla] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from llm_step import CFG, jax_step_fns  # noqa: E402
from op_profile import profile_jitted, profile_torch  # noqa: E402

from hourllava_jax.convert.hf_config import llm_to_hf_config  # noqa: E402
from hourllava_jax.convert.mapping import params_from_tensors  # noqa: E402
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules  # noqa: E402
from hourllava_jax.model.qwen2 import Qwen2  # noqa: E402
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu  # noqa: E402


def main() -> None:
    keep_heap_for_cpu()  # the heap settings llm_step.py and the trainer run with
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--impls", default="chunked,auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="profile only hourllava_jax")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile_llm_step.json"))
    args = ap.parse_args()
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(**llm_to_hf_config(CFG), attn_implementation="sdpa")).float().train()
    tensors = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    runs = []
    for seq in args.seq:
        ids_np = np.random.default_rng(0).integers(0, CFG.vocab_size, (1, seq))
        for impl in args.impls.split(","):
            model = Qwen2(CFG, dtype=jnp.dtype(args.dtype), attention_impl=impl, rngs=nnx.Rngs(0))
            params_from_tensors(model, tensors, qwen2_hf_rules(CFG))
            params, _, fwd_bwd = jax_step_fns(model)
            r = profile_jitted(fwd_bwd, params, jnp.asarray(ids_np, jnp.int32), repeats=args.repeats)
            runs.append({"framework": f"hourllava_jax ({impl})", "seq": seq, "load_avg": os.getloadavg()} | r)
            print(json.dumps(runs[-1], indent=1))
        if args.no_torch:
            continue
        ids = torch.tensor(ids_np)
        cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

        def step():
            hf.zero_grad(set_to_none=True)
            with cast:
                loss = hf(ids, labels=ids).loss
            loss.backward()

        runs.append({"framework": "transformers (sdpa)", "seq": seq, "load_avg": os.getloadavg()} | profile_torch(step, args.repeats))
        print(json.dumps(runs[-1], indent=1))
    Path(args.out).write_text(json.dumps({"dtype": args.dtype, "cpu_count": os.cpu_count(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
