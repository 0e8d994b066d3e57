"""chunked (pure-XLA, memory-linear) attention against the reference: values, gradients, memory."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the helper importable
from attention_cases import Case, assert_matches_reference  # noqa: E402

from hourllava_jax.kernels import BlockSizes, attention  # noqa: E402

BF16 = jnp.bfloat16
# Lengths are deliberately not multiples of the chunks (8 x 16): internal padding is exercised.
CASES = [
    Case(2, 13, 37, 4, 2, mask="pad"),
    Case(2, 13, 37, 7, 1, mask="segments"),
    Case(2, 9, 50, 2, 2, dtype=BF16),
    Case(2, 24, 24, 4, 2, causal=True),
    Case(2, 20, 25, 7, 1, causal=True, mask="offset"),
    Case(2, 24, 24, 2, 1, causal=True, mask="segments", dtype=BF16),
    Case(2, 13, 37, 14, 2, mask="pad", dtype=BF16),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_chunked_matches_reference(case):
    assert_matches_reference(case, "chunked", block_sizes=BlockSizes(block_q=8, block_k=16))


def test_chunked_default_blocks_single_chunk():
    assert_matches_reference(Case(2, 5, 7, 4, 2, mask="pad"), "chunked")


def _temp_bytes(lk: int, lq: int = 64, h: int = 4, d: int = 32) -> int:
    """Compiled scratch memory of forward+backward at this key length."""
    q = jax.ShapeDtypeStruct((1, lq, h, d), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, lk, 2, d), jnp.float32)
    loss = lambda q, k, v: attention(q, k, v, impl="chunked", block_sizes=BlockSizes(64, 256)).sum()
    return jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def test_chunked_memory_is_linear_in_keys():
    small, big = _temp_bytes(4096), _temp_bytes(16384)
    scores_big = 64 * 16384 * 4 * 4  # one f32 [Lq, Lk, H] score matrix, what the reference holds
    assert big < scores_big / 2, (small, big)
    # 4x the keys: temp grows by at most ~4x (the O(Lk·D) gradient accumulators), not 16x.
    assert big < 4.5 * small, (small, big)
