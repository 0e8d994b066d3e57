"""Chunked attention tile sweep on CPU, beside transformers' SDPA on the same causal shapes.

    python benchmarks/attention_tiles.py [--tiles 128x256 256x256 ...] [--seq 1024 2048] [--out results/attention_tiles.json]

One Qwen2 layer's causal self-attention (the llm_step model: 12 query / 2 key-value heads, D=64,
f32, batch 1): forward and forward+backward ms for each ``block_q x block_k`` tile of the chunked
kernel, then ``torch.nn.functional.scaled_dot_product_attention(is_causal=True, enable_gqa=True)``
at the same shapes; and MemAug's cross-attention shape (Lq 1,024, Lk 16,384, 16/2 heads, D=128,
forward, bf16 and f32) per tile. Best of ``--repeats``; the chunked default in
``kernels/blocks.py`` was chosen from this sweep (docs/performance.md).
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

from hourllava_jax.kernels import BlockSizes, attention  # noqa: E402
from hourllava_jax.parallel.host_heap import keep_heap_for_cpu  # noqa: E402


def _arrays(shape_q, shape_kv, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in (shape_q, shape_kv, shape_kv, shape_q)]


def causal_rows(seq: int, tiles: list[tuple[int, int]], repeats: int) -> list[dict]:
    """Chunked fwd and fwd+bwd ms per tile for q float32[1, seq, 12, 64], k/v float32[1, seq, 2, 64]."""
    q, k, v, w = _arrays((1, seq, 12, 64), (1, seq, 2, 64), jnp.float32)
    rows = []
    for bq, bk in tiles:
        bs = BlockSizes(bq, bk)
        attn = lambda q, k, v, bs=bs: attention(q, k, v, causal=True, impl="chunked", block_sizes=bs)  # noqa: E731
        fwd = jax.jit(attn)
        grad = jax.jit(jax.grad(lambda q, k, v, attn=attn: jnp.sum(attn(q, k, v) * w), argnums=(0, 1, 2)))
        rows.append({"shape": "causal self", "seq": seq, "tile": f"{bq}x{bk}", "dtype": "float32",
                     "forward_ms": 1e3 * best_time(fwd, q, k, v, repeats=repeats),
                     "forward_backward_ms": 1e3 * best_time(grad, q, k, v, repeats=repeats), "load_avg": os.getloadavg()[0]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def torch_row(seq: int, repeats: int) -> dict:
    """transformers' attention at the same shapes: torch SDPA, causal, grouped-query."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    q = torch.randn(1, 12, seq, 64, requires_grad=True)
    k, v = (torch.randn(1, 2, seq, 64, requires_grad=True) for _ in range(2))
    w = torch.randn(1, 12, seq, 64)

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        (F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) * w).sum().backward()

    return {"shape": "causal self", "seq": seq, "tile": "torch sdpa", "dtype": "float32", "forward_ms": 1e3 * best_wall(fwd, repeats),
            "forward_backward_ms": 1e3 * best_wall(fwd_bwd, repeats), "load_avg": os.getloadavg()[0]}  # fmt: skip


def cross_rows(tiles: list[tuple[int, int]], repeats: int) -> list[dict]:
    """Chunked forward ms per tile for MemAug's cross-attention shape, bf16 and f32."""
    rows = []
    for dtype in (jnp.bfloat16, jnp.float32):
        q, k, v, _ = _arrays((1, 1024, 16, 128), (1, 16384, 2, 128), dtype)
        for bq, bk in tiles:
            f = jax.jit(lambda q, k, v, bs=BlockSizes(bq, bk): attention(q, k, v, impl="chunked", block_sizes=bs))
            rows.append({"shape": "cross (Lq 1024, Lk 16384, 16/2 heads, D 128)", "tile": f"{bq}x{bk}", "dtype": jnp.dtype(dtype).name,
                         "forward_ms": 1e3 * best_time(f, q, k, v, repeats=repeats), "load_avg": os.getloadavg()[0]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    keep_heap_for_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", nargs="+", default=["128x256", "256x256", "128x512", "256x512", "512x256", "128x128", "64x256"])
    ap.add_argument("--cross-tiles", nargs="+", default=["128x256", "256x256"])
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "attention_tiles.json"))
    args = ap.parse_args()
    parse = lambda ts: [tuple(int(x) for x in t.split("x")) for t in ts]  # noqa: E731
    load0 = os.getloadavg()
    rows = []
    for seq in args.seq:
        rows += causal_rows(seq, parse(args.tiles), args.repeats)
        rows.append(torch_row(seq, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    rows += cross_rows(parse(args.cross_tiles), max(2, args.repeats // 3))
    out = {"what": "chunked attention tiles on CPU (forward / forward+backward ms, best of repeats) beside torch SDPA",
           "rows": rows, "jax": jax.__version__, "cpu_count": os.cpu_count(), "load_avg_at_start": load0, "load_avg_at_end": os.getloadavg()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
