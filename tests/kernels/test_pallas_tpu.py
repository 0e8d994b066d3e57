"""The Pallas TPU kernels (forward, dQ, dK/dV) in TPU interpret mode against the reference.

Tiles are the smallest Mosaic allows (8 queries x 128 keys) so every case has several query
tiles, and the causal/offset cases several key tiles (diagonal skipping). TPU interpret mode
simulates VMEM and DMAs and is slow, so the matrix is lean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the helper importable
from attention_cases import Case, assert_matches_reference  # noqa: E402

from hourllava_jax.kernels import BlockSizes  # noqa: E402

BLOCKS = BlockSizes(block_q=8, block_k=128)
CASES = [
    Case(2, 16, 150, 4, 2, mask="pad"),  # cross, Lq != Lk, G=2, a fully masked batch row
    Case(2, 16, 140, 7, 1, causal=True, mask="offset"),  # causal with KV-cache offsets, G=7
    Case(1, 8, 130, 2, 2, mask="segments", dtype=jnp.bfloat16),  # G=1, segment ids, bf16
    pytest.param(Case(2, 24, 24, 4, 2, causal=True, dtype=jnp.bfloat16), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_pallas_tpu_matches_reference(case):
    assert_matches_reference(case, "pallas_tpu", block_sizes=BLOCKS, interpret=True)
