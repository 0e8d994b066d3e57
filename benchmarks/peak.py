"""Matmul peak of this machine, measured in the same run as a benchmark (design §8.1: report efficiency
against it, never against remembered numbers).

    python benchmarks/peak.py            # prints f32 and bf16 (f32 accumulate) peaks as JSON
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp


def best_wall(fn, repeats: int = 5) -> float:
    """Best wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up run; ``fn`` must return
    only once its work is done (a PyTorch call on CPU, or a JAX call that blocks)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def best_time(fn, *args, repeats: int = 5) -> float:
    """Best wall time (s) of the JAX call ``fn(*args)`` over ``repeats`` runs after one warm-up (compile) run."""
    return best_wall(lambda: jax.block_until_ready(fn(*args)), repeats)


def measure_matmul_peak(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of a jitted n x n x n matmul with inputs in ``dtype`` and f32 accumulation/output
    (bf16 -> f32 is how the model's bf16 matmuls should run). Best of ``repeats``."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    t = best_time(f, a, b, repeats=repeats)
    return {"dtype": jnp.dtype(dtype).name, "accumulate": "float32", "n": n, "seconds": t, "gflops": 2 * n**3 / t / 1e9}


if __name__ == "__main__":
    print(json.dumps([measure_matmul_peak(jnp.float32), measure_matmul_peak(jnp.bfloat16)], indent=2))
