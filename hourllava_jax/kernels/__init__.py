"""Attention kernels. The entry point is :func:`~hourllava_jax.kernels.attention.attention`
(re-exported here); see docs/kernels.md. Modules of this package import each other by module,
never this init."""

from hourllava_jax.kernels.attention import attention
from hourllava_jax.kernels.blocks import BlockSizeError, BlockSizes
from hourllava_jax.kernels.dispatch import AttentionInputError, Impl, build, default_impl
from hourllava_jax.kernels.masks import MaskSpec
from hourllava_jax.kernels.memory_parallel import combine_partials, memory_parallel_attention
from hourllava_jax.kernels.reference import attention_reference

__all__ = [
    "AttentionInputError",
    "BlockSizeError",
    "BlockSizes",
    "Impl",
    "MaskSpec",
    "attention",
    "attention_reference",
    "build",
    "combine_partials",
    "default_impl",
    "memory_parallel_attention",
]
