"""Tile sizes of the attention implementations, with per-backend defaults and the target's rules.

A block size is an upper bound: for short sequences it shrinks to the (aligned) sequence length,
and sequences are padded internally to a block multiple (padded keys are masked out).
"""

from __future__ import annotations

import dataclasses


class BlockSizeError(ValueError):
    """A block size the target (TPU Mosaic, GPU Triton, XLA) cannot use."""


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Query and key tile sizes; the backward kernels use the same tiles.

    block_q: queries per tile; block_k: keys per tile.
    num_warps / num_stages: Triton launch parameters (GPU kernel only).
    """

    block_q: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2

    @classmethod
    def from_config(cls, pair: tuple[int, int] | None) -> BlockSizes | None:
        """``(block_q, block_k)`` from a model config (``attention_block_sizes``); None: the
        per-backend defaults below."""
        return None if pair is None else cls(block_q=int(pair[0]), block_k=int(pair[1]))


# Why these defaults: chunked tiles of 256 x 256 let causal attention skip the key tiles above the
# diagonal (with 1024-key tiles a 1k-token causal step computed the full square) while keeping the
# per-tile loop overhead and the softmax passes over the f32 score tile ([H, 256, 256]) small
# against the tile's matmuls; docs/performance.md has the sweeps (an earlier one, on a loaded
# machine, had picked 128 x 256; the later idle sweeps put 256 x 256 ahead). TPU tiles of 512
# fill the 128x128 MXU with few grid steps and fit v5e's 16 MB scoped VMEM (q, k, v, o tiles +
# f32 scratch, double-buffered, ~3 MB at D=128); GPU tiles of 64 are the Triton
# flash-attention sweet spot for D=128 with 4 warps.
DEFAULTS = {
    "chunked": BlockSizes(block_q=256, block_k=256),
    "pallas_tpu": BlockSizes(block_q=512, block_k=512),
    "pallas_gpu": BlockSizes(block_q=64, block_k=64),
}


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def check_block_sizes(impl: str, blocks: BlockSizes) -> None:
    """Raises BlockSizeError for tiles the target rejects (before anything is traced)."""
    bq, bk = blocks.block_q, blocks.block_k
    if bq <= 0 or bk <= 0:
        raise BlockSizeError(f"{impl}: block sizes must be positive, got block_q={bq}, block_k={bk}")
    if impl == "pallas_tpu" and (bq % 8 or bk % 128):
        # Mosaic: a tile's last two dims must be multiples of (8, 128); keys sit on the lane axis.
        raise BlockSizeError(f"pallas_tpu: block_q must be a multiple of 8 and block_k of 128, got block_q={bq}, block_k={bk}")
    if impl == "pallas_gpu":
        # Triton: every tensor dim a power of two; tl.dot needs at least 16 rows/cols.
        for name, v in (("block_q", bq), ("block_k", bk)):
            if v < 16 or v & (v - 1):
                raise BlockSizeError(f"pallas_gpu: {name} must be a power of two >= 16, got {v}")
        if blocks.num_warps <= 0 or blocks.num_stages <= 0:
            raise BlockSizeError(f"pallas_gpu: num_warps/num_stages must be positive, got {blocks.num_warps}/{blocks.num_stages}")


def fit_block(impl: str, block: int, length: int, *, lane: bool) -> int:
    """The tile actually used for a sequence of ``length``: at most ``block``, valid for the target.

    lane: True for the key axis (TPU lane axis, multiple of 128), False for the query axis.
    """
    if impl == "pallas_tpu":
        return min(block, _round_up(length, 128 if lane else 8))
    if impl == "pallas_gpu":
        return min(block, max(16, _next_pow2(length)))
    return min(block, length)


def resolve(impl: str, blocks: BlockSizes | None, lq: int, lk: int) -> tuple[int, int, BlockSizes]:
    """Returns (block_q, block_k, validated BlockSizes) for these sequence lengths."""
    blocks = DEFAULTS[impl] if blocks is None else blocks
    check_block_sizes(impl, blocks)
    return fit_block(impl, blocks.block_q, lq, lane=False), fit_block(impl, blocks.block_k, lk, lane=True), blocks
