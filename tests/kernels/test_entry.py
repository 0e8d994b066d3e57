"""The attention entry point: dispatch, and clear errors for bad input before anything runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.kernels import AttentionInputError, BlockSizes, attention, default_impl
from hourllava_jax.kernels.blocks import BlockSizeError, check_block_sizes, fit_block


def _qkv(lq=6, lk=10, h=4, kh=2, d=8, dtype=jnp.float32):
    r = np.random.default_rng(0)
    return tuple(jnp.asarray(r.standard_normal(s), dtype) for s in [(2, lq, h, d), (2, lk, kh, d), (2, lk, kh, d)])


def test_auto_is_chunked_on_cpu_and_matches_reference():
    assert default_impl("cpu") == "chunked" and default_impl("tpu") == "pallas_tpu" and default_impl("gpu") == "pallas_gpu"
    q, k, v = _qkv()
    np.testing.assert_allclose(attention(q, k, v), attention(q, k, v, impl="reference"), atol=1e-6)
    assert attention(q, k, v).dtype == jnp.float32


@pytest.mark.parametrize("lq,lk,causal", [(6, 10, False), (40, 40, True), (300, 300, True), (20, 600, False)])
def test_auto_on_cpu_is_exactly_chunked_at_every_size(lq, lk, causal):
    # No size threshold switches CPU to a fused path (docs/kernels.md): auto's pick, bit for bit.
    q, k, v = _qkv(lq=lq, lk=lk)
    np.testing.assert_array_equal(attention(q, k, v, causal=causal), attention(q, k, v, causal=causal, impl="chunked"))


def test_custom_scale_is_used():
    q, k, v = _qkv()
    for impl in ("reference", "chunked"):
        a = attention(q, k, v, scale=0.5, impl=impl)
        b = attention(q * (0.5 / 8**-0.5), k, v, impl=impl)
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((2, 6, 5, 8), (2, 10, 2, 8), (2, 10, 2, 8)), "not a multiple of 2 kv heads"),
        (((2, 6, 4, 8), (2, 10, 2, 16), (2, 10, 2, 16)), "head_dim mismatch"),
        (((2, 6, 4, 8), (1, 10, 2, 8), (1, 10, 2, 8)), "batch/head_dim mismatch"),
        (((2, 6, 4, 8), (2, 10, 2, 8), (2, 11, 2, 8)), "same shape"),
        (((2, 6, 4), (2, 10, 2, 8), (2, 10, 2, 8)), r"\[B, L, heads, D\]"),
    ],
)
def test_bad_shapes(shapes, match):
    q, k, v = (jnp.zeros(s) for s in shapes)
    with pytest.raises(AttentionInputError, match=match):
        attention(q, k, v)


def test_bad_dtypes_and_masks():
    q, k, v = _qkv()
    with pytest.raises(AttentionInputError, match="dtypes differ"):
        attention(q, k.astype(jnp.bfloat16), v)
    with pytest.raises(AttentionInputError, match="floating-point"):
        attention(*(x.astype(jnp.int32) for x in (q, k, v)))
    with pytest.raises(AttentionInputError, match=r"kv_mask must be bool\[2, 10\]"):
        attention(q, k, v, kv_mask=jnp.ones((2, 9), bool))
    with pytest.raises(AttentionInputError, match="kv_mask must be bool"):
        attention(q, k, v, kv_mask=jnp.ones((2, 10), jnp.int32))
    with pytest.raises(AttentionInputError, match="given together"):
        attention(q, k, v, q_segment_ids=jnp.zeros((2, 6), jnp.int32))
    with pytest.raises(AttentionInputError, match="segment ids"):
        attention(q, k, v, q_segment_ids=jnp.zeros((2, 7), jnp.int32), kv_segment_ids=jnp.zeros((2, 10), jnp.int32))
    with pytest.raises(AttentionInputError, match="q_offset"):
        attention(q, k, v, causal=True, q_offset=jnp.zeros((3,), jnp.int32))
    with pytest.raises(AttentionInputError, match="unknown"):
        attention(q, k, v, impl="flash")


@pytest.mark.parametrize(
    "impl, blocks, match",
    [
        ("pallas_tpu", BlockSizes(12, 128), "multiple of 8"),
        ("pallas_tpu", BlockSizes(8, 64), "block_k of 128"),
        ("pallas_gpu", BlockSizes(48, 16), "power of two"),
        ("pallas_gpu", BlockSizes(16, 8), ">= 16"),
        ("pallas_gpu", BlockSizes(16, 16, num_warps=0), "num_warps"),
        ("chunked", BlockSizes(0, 16), "positive"),
    ],
)
def test_block_sizes_the_target_rejects(impl, blocks, match):
    q, k, v = _qkv()
    with pytest.raises(BlockSizeError, match=match):
        check_block_sizes(impl, blocks)
    with pytest.raises(AttentionInputError, match=match):  # raised before any kernel is traced
        attention(q, k, v, impl=impl, block_sizes=blocks)


def test_blocks_shrink_to_short_sequences():
    assert fit_block("pallas_tpu", 512, 20, lane=True) == 128
    assert fit_block("pallas_tpu", 512, 20, lane=False) == 24
    assert fit_block("pallas_tpu", 512, 4096, lane=True) == 512
    assert fit_block("pallas_gpu", 64, 20, lane=False) == 32
    assert fit_block("chunked", 1024, 37, lane=True) == 37


def test_fully_masked_rows_are_zero_in_every_cpu_impl():
    q, k, v = _qkv()
    kv_mask = jnp.zeros((2, 10), bool).at[0, :3].set(True)
    for impl in ("reference", "chunked"):
        out = attention(q, k, v, kv_mask=kv_mask, impl=impl)
        assert not np.asarray(out[1]).any() and np.asarray(out[0]).any()
        dq, dk = jax.grad(lambda q, k: attention(q, k, v, kv_mask=kv_mask, impl=impl).sum(), (0, 1))(q, k)
        assert not np.asarray(dq[1]).any() and not np.asarray(dk[1]).any() and not np.asarray(dk[0, 3:]).any()
