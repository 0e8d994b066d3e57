"""Why a bf16 step is no faster than f32 on XLA:CPU: one layer's matmuls, by output dtype.

    python benchmarks/bf16_dot.py [--seq 1024] [--hidden 768] [--ffn 3072] [--out results/bf16_dot.json]

Times, in one process, the forward matmul of one ``[L, H] x [H, F]`` layer and the two
contractions of its backward (``dW = x^T dy``, ``dx = dy W^T``) in f32, in bf16 with a bf16
result, and in bf16 with an f32 result (``preferred_element_type``: what the matmul peak in
``peak.py`` measures), plus ``nnx.Linear`` and the model's ``Dense`` (f32 params, ``dtype``
compute; ``Dense`` asks for an f32 result) forward and gradient.
GFLOP/s are against the bf16 and f32 peaks measured at the start (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import best_time, measure_matmul_peak  # noqa: E402

from hourllava_jax.model.dense import Dense  # noqa: E402


def _rate(flops: float, fn, *args) -> float:
    return flops / best_time(fn, *args) / 1e9


def measure(seq: int, hidden: int, ffn: int) -> list[dict]:
    """One row per (operation, dtype variant): GFLOP/s of the best of 5 runs."""
    ks = jax.random.split(jax.random.key(0), 3)
    flops = 2 * seq * hidden * ffn
    f32 = jnp.float32
    rows = []
    for name, dt, out in (("f32", f32, None), ("bf16 -> bf16", jnp.bfloat16, None), ("bf16 -> f32", jnp.bfloat16, f32)):
        x = jax.random.normal(ks[0], (seq, hidden), f32).astype(dt)
        w = jax.random.normal(ks[1], (hidden, ffn), f32).astype(dt)
        dy = jax.random.normal(ks[2], (seq, ffn), f32).astype(dt)
        fwd = jax.jit(lambda x, w, out=out: jnp.einsum("lh,hf->lf", x, w, preferred_element_type=out))
        dw = jax.jit(lambda x, dy, out=out: jnp.einsum("lh,lf->hf", x, dy, preferred_element_type=out))
        dx = jax.jit(lambda dy, w, out=out: jnp.einsum("lf,hf->lh", dy, w, preferred_element_type=out))
        rows.append({"op": "matmul", "variant": name, "forward_gflops": _rate(flops, fwd, x, w),
                     "dW_gflops": _rate(flops, dw, x, dy), "dx_gflops": _rate(flops, dx, dy, w)})
    for layer, op in ((nnx.Linear, "nnx.Linear (f32 params)"), (Dense, "model Dense (f32 params, f32 result)")):
        for dt in (f32, jnp.bfloat16):
            graph, params = nnx.split(layer(hidden, ffn, dtype=dt, param_dtype=f32, rngs=nnx.Rngs(0)))
            x = jax.random.normal(ks[0], (1, seq, hidden), dt)
            fwd = jax.jit(lambda p, x, graph=graph: nnx.merge(graph, p)(x))
            grad = jax.jit(jax.grad(lambda p, x, graph=graph: jnp.sum(nnx.merge(graph, p)(x).astype(f32)), argnums=(0, 1)))
            rows.append({"op": op, "variant": jnp.dtype(dt).name, "forward_gflops": _rate(flops, fwd, params, x),
                         "grad_gflops": _rate(2 * flops, grad, params, x)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--ffn", type=int, default=3072)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bf16_dot.json"))
    a = ap.parse_args()
    load0 = os.getloadavg()
    peak = [measure_matmul_peak(jnp.float32), measure_matmul_peak(jnp.bfloat16)]
    rows = measure(a.seq, a.hidden, a.ffn)
    out = {"what": "one layer's matmuls on XLA:CPU by dtype and result dtype (the llm_step MLP's up projection shape)",
           "shape": {"seq": a.seq, "hidden": a.hidden, "ffn": a.ffn}, "peak": peak, "rows": rows, "jax": jax.__version__,
           "backend": jax.default_backend(), "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load0],
           "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
