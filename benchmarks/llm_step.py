"""Qwen2 forward and forward+backward on CPU: hourllava_jax vs transformers PyTorch, same weights.

A ~100M-parameter Qwen2-shaped config (tied 32k vocabulary, GQA 12/2), fp32 (or bf16 compute), one run measuring
both frameworks and the matmul peak, so the efficiency numbers share one machine state.
FLOPs: 2·N·T forward and 6·N·T forward+backward, N = matmul parameters (every Linear plus the
tied lm_head; the embedding lookup is not a matmul), plus causal attention 2·2·B·layers·heads·D·L(L+1)/2
forward (x3 with backward). Every length of ``--seq`` (default 256 512 1024 2048) in fp32 and bf16
(JAX bf16 compute vs torch autocast); ``speedups`` holds the goal's ratios (torch time / JAX time)
and, beside each, the *ceiling*: transformers' time over the step's matmul floor
(``matmul_floor.py``: the step's dense matmuls alone on XLA's dots, timed in the same run, plus the
causal attention's FLOPs at the matmul peak measured next to it), the largest speed-up any
implementation on XLA:CPU's matmuls could show in that run. Writes benchmarks/results/llm_step.json.

    .venv/bin/python benchmarks/llm_step.py [--batch 1] [--seq 256 1024] [--repeats 3] [--dtypes float32] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from matmul_floor import time_floor  # noqa: E402
from peak import best_time, best_wall, measure_matmul_peak  # noqa: E402

from hourllava_jax.config.model import LLMConfig  # noqa: E402
from hourllava_jax.convert.hf_config import llm_to_hf_config  # noqa: E402
from hourllava_jax.convert.mapping import params_from_tensors  # noqa: E402
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules  # noqa: E402
from hourllava_jax.model.hour_llava import lm_loss  # noqa: E402
from hourllava_jax.model.qwen2 import Qwen2  # noqa: E402
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu  # noqa: E402

CFG = LLMConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True, eos_token_id=1, pad_token_id=0, bos_token_id=None)  # fmt: skip


def attention_flops(cfg: LLMConfig, b: int, l: int) -> float:
    """Forward FLOPs of every layer's causal attention (the visible query-key pairs only)."""
    return 2 * 2 * b * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.kv_head_dim * l * (l + 1) / 2


def flops(cfg: LLMConfig, n_matmul: int, b: int, l: int) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs of one step."""
    fwd = 2 * n_matmul * b * l + attention_flops(cfg, b, l)
    return fwd, 3 * fwd


def time_torch(hf, ids_np, repeats: int, bf16: bool) -> dict:
    """bf16: autocast (fp32 master weights, bf16 matmuls), the torch analogue of dtype=bfloat16."""
    import torch

    ids = torch.tensor(ids_np)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def fwd():
        with torch.no_grad(), cast:
            return hf(ids).logits

    def fwd_bwd():
        hf.zero_grad(set_to_none=True)
        with cast:
            loss = hf(ids, labels=ids).loss
        loss.backward()
        return loss

    loss = float(fwd_bwd().detach())
    return {"forward_s": best_wall(fwd, repeats), "forward_backward_s": best_wall(fwd_bwd, repeats), "loss": loss}


def jax_step_fns(model: Qwen2):
    """(params, jitted forward(params, ids) -> logits, jitted value_and_grad of the training loss).

    The loss is the trainer's own (``model.hour_llava.lm_loss``: mean next-token cross-entropy,
    labels shifted rather than logits sliced), the quantity transformers' ``labels=`` computes.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, ids):
        logits = nnx.merge(graphdef, params, rest)(ids)
        with jax.named_scope("cross_entropy"):
            return lm_loss(logits, ids)[0]

    fwd = jax.jit(lambda p, ids: nnx.merge(graphdef, p, rest)(ids))
    return params, fwd, jax.jit(jax.value_and_grad(loss_fn))


def time_jax(model: Qwen2, ids_np, repeats: int) -> dict:
    params, fwd, fwd_bwd = jax_step_fns(model)
    ids = jnp.asarray(ids_np, jnp.int32)
    t0 = time.perf_counter()
    jax.block_until_ready(fwd_bwd(params, ids))
    compile_s = time.perf_counter() - t0
    loss = float(fwd_bwd(params, ids)[0])
    return {"forward_s": best_time(fwd, params, ids, repeats=repeats), "forward_backward_s": best_time(fwd_bwd, params, ids, repeats=repeats),
            "loss": loss, "fwd_bwd_first_call_s": compile_s}  # fmt: skip


def run_dtype(args, dtype, hf, tensors, n_total: int, n_matmul: int) -> list[dict]:
    """Every sequence length for one compute dtype: JAX impls then torch, side by side."""
    rows = []
    for seq in args.seq:
        ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (args.batch, seq))
        f_fwd, f_fb = flops(CFG, n_matmul, args.batch, seq)
        results = []
        # The machine is shared: a peak is measured right before each framework's timing and
        # efficiency is reported against that adjacent peak.
        for impl in args.impls.split(","):
            model = Qwen2(CFG, dtype=dtype, attention_impl=impl, rngs=nnx.Rngs(0))
            params_from_tensors(model, tensors, qwen2_hf_rules(CFG))
            adjacent = measure_matmul_peak(dtype, n=1024, repeats=3)["gflops"]
            results.append({"framework": f"hourllava_jax ({impl} attention)"} | time_jax(model, ids, args.repeats) | {"adjacent_peak_gflops": adjacent})
            del model
        adjacent = measure_matmul_peak(dtype, n=1024, repeats=3)["gflops"]
        torch_r = time_torch(hf.train(), ids, args.repeats, bf16=dtype == jnp.bfloat16)  # train(): dropout is 0 anyway
        results.append({"framework": "transformers (sdpa)"} | torch_r | {"fwd_bwd_first_call_s": None, "adjacent_peak_gflops": adjacent})
        adjacent = measure_matmul_peak(dtype, n=1024, repeats=3)["gflops"]
        # More tries than the frameworks get: one slow outlier in the floor would lower the ceiling
        # and make the goal look further out of reach than it is.
        floor = time_floor(CFG, dtype, ids, max(args.repeats, 4))
        # The attention at the matmul peak, forward and (x3) forward+backward: faster than any
        # softmax loop runs, so the floor stays a lower bound on the step's time.
        attn_s = attention_flops(CFG, args.batch, seq) / (adjacent * 1e9)
        floor_r = {"framework": "matmul floor (matmul_floor.py) + attention FLOPs at the peak", "matmul_only_forward_s": floor["forward_s"],
                   "matmul_only_forward_backward_s": floor["forward_backward_s"], "forward_s": floor["forward_s"] + attn_s,
                   "forward_backward_s": floor["forward_backward_s"] + 3 * attn_s, "adjacent_peak_gflops": adjacent}  # fmt: skip
        for r in results:
            r.update(dtype=jnp.dtype(dtype).name, seq=seq, load_avg=[round(x, 2) for x in os.getloadavg()])
            r["forward_gflops"] = f_fwd / r["forward_s"] / 1e9
            r["forward_backward_gflops"] = f_fb / r["forward_backward_s"] / 1e9
            r["forward_frac_of_peak"] = r["forward_gflops"] / r["adjacent_peak_gflops"]
            r["forward_backward_frac_of_peak"] = r["forward_backward_gflops"] / r["adjacent_peak_gflops"]
            r["tokens_per_s_fwd_bwd"] = args.batch * seq / r["forward_backward_s"]
        torch_r = results[-1]
        for r in results[:-1]:
            # The goal's ratios (>= 1.2 wanted): how many times faster than transformers.
            r["speedup_forward_vs_torch"] = torch_r["forward_s"] / r["forward_s"]
            r["speedup_fwd_bwd_vs_torch"] = torch_r["forward_backward_s"] / r["forward_backward_s"]
            r["ceiling_forward_vs_torch"] = torch_r["forward_s"] / floor_r["forward_s"]
            r["ceiling_fwd_bwd_vs_torch"] = torch_r["forward_backward_s"] / floor_r["forward_backward_s"]
        results.append(floor_r | {"dtype": jnp.dtype(dtype).name, "seq": seq, "load_avg": [round(x, 2) for x in os.getloadavg()]})
        rows += results
        print(json.dumps(results), flush=True)
    return rows


def main() -> None:
    # The trainer's CPU heap settings; torch allocates through the same glibc heap in this process.
    heap_kept = keep_heap_for_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impls", default="auto", help="JAX attention impls to time, comma-separated (auto,chunked,reference)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes (params stay fp32; torch bf16 = autocast)")
    ap.add_argument("--quick", action="store_true", help="seq 128, fp32, one repeat (benchmarks/run_all.py --quick)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "llm_step.json"))
    args = ap.parse_args()
    if args.quick:
        args.seq, args.repeats, args.dtypes = [128], 1, "float32"
    load0 = os.getloadavg()

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(**llm_to_hf_config(CFG), attn_implementation="sdpa")).float()
    tensors = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    n_total = sum(v.size for v in tensors.values())
    n_matmul = n_total - tensors["model.embed_tokens.weight"].size + CFG.vocab_size * CFG.hidden_size
    peak = [measure_matmul_peak(jnp.dtype(d)) for d in args.dtypes.split(",")]
    rows = []
    for d in args.dtypes.split(","):
        rows += run_dtype(args, jnp.dtype(d), hf, tensors, n_total, n_matmul)
    keys = ("dtype", "seq", "framework", "speedup_forward_vs_torch", "speedup_fwd_bwd_vs_torch", "ceiling_forward_vs_torch", "ceiling_fwd_bwd_vs_torch")
    goals = [{k: r[k] for k in keys} for r in rows if "speedup_fwd_bwd_vs_torch" in r]
    out = {
        "host_heap_kept": heap_kept,
        "what": "Qwen2 ~100M step on CPU: hourllava_jax vs transformers (same weights, fp32 params), per length and dtype",
        "goal": "speedup_*_vs_torch >= 1.2 at every length 256..2048 (fp32); bf16 = JAX bf16 compute vs torch autocast",
        "config": {k: getattr(CFG, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")},  # fmt: skip
        "params_total": int(n_total), "params_matmul": int(n_matmul), "batch": args.batch,
        "matmul_peak": peak, "speedups": goals, "results": rows,
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "cpu_count": os.cpu_count(), "load_avg_at_start": load0, "load_avg_at_end": os.getloadavg(),
        "note": "2 shared cores: compare frameworks within one run; absolute numbers vary with load",
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(goals, indent=1))


if __name__ == "__main__":
    main()
