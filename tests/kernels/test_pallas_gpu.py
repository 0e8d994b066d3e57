"""The Pallas GPU (Triton) kernels (forward, dQ, dK/dV) in interpret mode against the reference.

16x16 tiles (Triton's smallest dot) give several query and key tiles per case; head_dim 24
checks the zero-padding to a power of two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the helper importable
from attention_cases import Case, assert_matches_reference  # noqa: E402

from hourllava_jax.kernels import BlockSizes  # noqa: E402

BLOCKS = BlockSizes(block_q=16, block_k=16)
CASES = [
    Case(2, 20, 40, 4, 2, mask="pad"),  # cross, Lq != Lk, G=2, a fully masked batch row
    Case(2, 32, 40, 7, 1, causal=True, mask="offset"),  # causal with KV-cache offsets, G=7
    Case(1, 16, 33, 2, 2, mask="segments", dtype=jnp.bfloat16),  # G=1, segment ids, bf16
    Case(1, 16, 20, 2, 1, d=24),  # head_dim not a power of two
    pytest.param(Case(2, 32, 32, 4, 2, causal=True, dtype=jnp.bfloat16), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_pallas_gpu_matches_reference(case):
    assert_matches_reference(case, "pallas_gpu", block_sizes=BLOCKS, interpret=True)
