"""What every attention path shares: input checks and the choice of implementation.

:func:`~hourllava_jax.kernels.attention.attention` and
:func:`~hourllava_jax.kernels.memory_parallel.memory_parallel_attention` both check their inputs
here and build their kernel with :func:`build`, so neither imports the other's module.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from hourllava_jax.kernels.blocks import BlockSizeError, BlockSizes, resolve
from hourllava_jax.kernels.chunked import chunked_attention
from hourllava_jax.kernels.masks import MaskSpec

Impl = Literal["auto", "reference", "chunked", "pallas_tpu", "pallas_gpu"]
IMPLS = ("auto", "reference", "chunked", "pallas_tpu", "pallas_gpu")


class AttentionInputError(ValueError):
    """Shapes, dtypes or options that no attention implementation accepts."""


def check_inputs(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise AttentionInputError(f"attention expects [B, L, heads, D] arrays, got q{q.shape} k{k.shape} v{v.shape}")
    if 0 in q.shape or 0 in k.shape:
        raise AttentionInputError(f"attention needs non-empty inputs, got q{q.shape} k{k.shape}")
    if k.shape != v.shape:
        raise AttentionInputError(f"k{k.shape} and v{v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise AttentionInputError(f"batch/head_dim mismatch: q{q.shape} vs k{k.shape}")
    if q.shape[2] % k.shape[2]:
        raise AttentionInputError(f"{q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"dtypes differ: q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise AttentionInputError(f"attention needs floating-point inputs, got {q.dtype}")


def check_mask(mask: MaskSpec, b: int, lq: int, lk: int) -> None:
    def shape_ok(x, want):
        return x is None or (tuple(jnp.shape(x)) == want or tuple(jnp.shape(x)) == (1,) + want[1:])

    if not shape_ok(mask.kv_mask, (b, lk)):
        raise AttentionInputError(f"kv_mask must be bool[{b}, {lk}], got shape {jnp.shape(mask.kv_mask)}")
    if mask.kv_mask is not None and jnp.asarray(mask.kv_mask).dtype != jnp.bool_:
        raise AttentionInputError(f"kv_mask must be bool, got {jnp.asarray(mask.kv_mask).dtype}")
    if (mask.q_segment_ids is None) != (mask.kv_segment_ids is None):
        raise AttentionInputError("q_segment_ids and kv_segment_ids must be given together")
    if not shape_ok(mask.q_segment_ids, (b, lq)) or not shape_ok(mask.kv_segment_ids, (b, lk)):
        raise AttentionInputError(
            f"segment ids must be int[{b}, {lq}] / int[{b}, {lk}], got {jnp.shape(mask.q_segment_ids)} / {jnp.shape(mask.kv_segment_ids)}"
        )
    off = jnp.shape(mask.q_offset)
    if off not in ((), (1,), (b,)):
        raise AttentionInputError(f"q_offset must be an int or int[{b}], got shape {off}")


def default_impl(backend: str | None = None) -> str:
    """What ``auto`` resolves to: our Pallas kernel on TPU/GPU, the chunked XLA path on CPU."""
    backend = backend or jax.default_backend()
    return {"tpu": "pallas_tpu", "gpu": "pallas_gpu", "cuda": "pallas_gpu", "rocm": "pallas_gpu"}.get(backend, "chunked")


def build(impl: str, lq: int, lk: int, *, causal: bool, scale: float, block_sizes: BlockSizes | None, interpret: bool | None):
    """(differentiable attn, its static opts) for a non-reference impl at these lengths."""
    try:
        block_q, block_k, blocks = resolve(impl, block_sizes, lq, lk)
    except BlockSizeError as e:
        raise AttentionInputError(str(e)) from e
    opts = {"scale": scale, "causal": causal, "block_q": block_q, "block_k": block_k}
    if impl == "chunked":
        return chunked_attention, tuple(sorted(opts.items()))
    if impl == "pallas_tpu":
        from hourllava_jax.kernels.pallas_tpu import pallas_tpu_attention as attn

        interpret = jax.default_backend() != "tpu" if interpret is None else interpret
    else:
        from hourllava_jax.kernels.pallas_gpu import pallas_gpu_attention as attn

        interpret = jax.default_backend() != "gpu" if interpret is None else interpret
        opts.update(num_warps=blocks.num_warps, num_stages=blocks.num_stages)
    opts["interpret"] = bool(interpret)
    return attn, tuple(sorted(opts.items()))


__all__ = ["IMPLS", "AttentionInputError", "Impl", "build", "check_inputs", "check_mask", "default_impl"]
