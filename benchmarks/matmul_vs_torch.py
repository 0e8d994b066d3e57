"""f32 matmul rates of XLA and torch on the same CPU, at the llm_step model's shapes.

    python benchmarks/matmul_vs_torch.py [--out results/matmul_vs_torch.json]

In one process, alternating per shape: ``jax.jit(jnp.matmul)`` and ``torch.mm`` on the same
``[M, K] x [K, N]`` f32 arrays, best of 5 each. The shapes are a 1024 cube, the MLP's up and
down projections and the tied lm_head at 2,048 tokens. docs/performance.md uses these rates to
bound how much faster than transformers a whole step can be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak import best_time, best_wall  # noqa: E402

from hourllava_jax.parallel.host_heap import keep_heap_for_cpu  # noqa: E402

SHAPES = ((1024, 1024, 1024), (2048, 768, 2048), (2048, 2048, 768), (2048, 768, 32000))


def main() -> None:
    keep_heap_for_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "matmul_vs_torch.json"))
    args = ap.parse_args()
    import torch

    load0, rows = os.getloadavg(), []
    mm = jax.jit(jnp.matmul)
    for m, k, n in SHAPES:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t_torch = best_wall(lambda: torch.mm(ta, tb), args.repeats)
        t_jax = best_time(mm, jnp.asarray(a), jnp.asarray(b), repeats=args.repeats)
        gflop = 2 * m * k * n / 1e9
        rows.append({"shape": [m, k, n], "xla_gflops": gflop / t_jax, "torch_gflops": gflop / t_torch, "load_avg": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    out = {"what": "f32 matmul GFLOP/s, XLA (jax.jit jnp.matmul) vs torch.mm, same arrays, best of repeats", "rows": rows,
           "versions": {"jax": jax.__version__, "torch": torch.__version__}, "cpu_count": os.cpu_count(),
           "load_avg_at_start": load0, "load_avg_at_end": os.getloadavg()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
