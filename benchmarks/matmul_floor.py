"""The matmul floor of a Qwen2 step: its dense matmuls alone, in the model's shapes, on XLA's dots.

``llm_step.py`` times this skeleton beside both frameworks to say how fast *any* implementation
built on XLA:CPU's matmuls could run the step, and so how large a speed-up over transformers is
attainable at all on the machine of the run. The skeleton keeps every projection of every layer
(q/k/v/o, gate/up/down), the tied lm_head, the embedding gather and its scatter-add gradient, the
residual adds and the SwiGLU product; attention, RMSNorm, RoPE, SiLU and the softmax
cross-entropy are left out (the attention is replaced by an elementwise sum of q with its group's
k and v, so that every projection still reaches the output). ``llm_step.py`` adds the causal
attention's FLOPs at the matmul peak measured beside it, a rate no softmax loop reaches; the
floor is therefore optimistic, and the ceiling it gives (transformers' time / floor) an upper
bound on the speed-up.

    .venv/bin/python benchmarks/matmul_floor.py [--seq 1024] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hourllava_jax.config.model import LLMConfig  # noqa: E402
from hourllava_jax.model.dense import matmul  # noqa: E402


def floor_params(cfg: LLMConfig, seed: int = 0) -> dict:
    """Random f32 weights in the model's shapes: ``embed [V, H]`` and per layer ``q [H, N·D]``,
    ``k``/``v [H, K·D]``, ``o [N·D, H]``, ``gate``/``up [H, I]``, ``down [I, H]``."""
    h, d, i = cfg.hidden_size, cfg.kv_head_dim, cfg.intermediate_size
    shapes = {"q": (h, cfg.num_attention_heads * d), "k": (h, cfg.num_key_value_heads * d), "v": (h, cfg.num_key_value_heads * d),
              "o": (cfg.num_attention_heads * d, h), "gate": (h, i), "up": (h, i), "down": (i, h)}  # fmt: skip
    rng = np.random.default_rng(seed)

    def w(shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32) * 0.02)

    return {"embed": w((cfg.vocab_size, h)), "layers": [{n: w(s) for n, s in shapes.items()} for _ in range(cfg.num_hidden_layers)]}


def floor_forward(params: dict, ids: jax.Array, cfg: LLMConfig, dtype) -> jax.Array:
    """ids int[B, L] -> logits float32[B, L, V] through the step's matmuls only (module docstring)."""
    b, length = ids.shape
    kh, g, d = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads, cfg.kv_head_dim
    x = params["embed"][ids].astype(dtype)
    for p in params["layers"]:
        q = matmul(x, p["q"], dtype).reshape(b, length, kh, g, d)
        kv = (matmul(x, p["k"], dtype) + matmul(x, p["v"], dtype)).reshape(b, length, kh, 1, d)
        a = (q + kv).reshape(b, length, kh * g * d).astype(dtype)
        x = x + matmul(a, p["o"], dtype).astype(dtype)
        gu = matmul(x, p["gate"], dtype) * matmul(x, p["up"], dtype)
        x = x + matmul(gu.astype(dtype), p["down"], dtype).astype(dtype)
    return matmul(x, params["embed"], dtype, w_transposed=True)


def floor_fns(cfg: LLMConfig, dtype):
    """(jitted forward(params, ids) -> logits, jitted value_and_grad of 0.5·mean(logits²))."""

    def loss(params, ids):
        logits = floor_forward(params, ids, cfg, dtype)
        return 0.5 * jnp.mean(logits * logits)  # its cotangent is a dense [B, L, V], like a cross-entropy's

    return jax.jit(lambda p, ids: floor_forward(p, ids, cfg, dtype)), jax.jit(jax.value_and_grad(loss))


def time_floor(cfg: LLMConfig, dtype, ids_np, repeats: int) -> dict:
    """Best forward and forward+backward seconds of the skeleton on ``ids_np`` int[B, L]."""
    from peak import best_time  # a sibling script: on the path when run from benchmarks/

    params, ids = floor_params(cfg), jnp.asarray(ids_np, jnp.int32)
    fwd, fwd_bwd = floor_fns(cfg, dtype)
    return {"forward_s": best_time(fwd, params, ids, repeats=repeats), "forward_backward_s": best_time(fwd_bwd, params, ids, repeats=repeats)}


def main() -> None:
    from llm_step import CFG

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (1, args.seq))
    print(json.dumps({"seq": args.seq, "dtype": args.dtype} | time_floor(CFG, jnp.dtype(args.dtype), ids, args.repeats)))


if __name__ == "__main__":
    main()
