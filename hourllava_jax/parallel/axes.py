"""The logical-axis vocabulary shared by parameters and activations (design §7.2).

Every parameter is created through :func:`param_init`, which records its logical axis names as
``out_sharding`` metadata (``nnx.get_partition_spec`` reads it back). A rules table in the
training config maps these names to mesh axes (``data``, ``fsdp``, ``tensor``, ``memory``);
changing parallelism means changing that table, never the model code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flax import nnx

# Parameter axes.
EMBED = "embed"  # model width (LLM hidden, vision hidden)
HEADS = "heads"  # fused query heads x head_dim
KV_HEADS = "kv_heads"  # fused key/value heads x head_dim
MLP = "mlp"  # feed-forward hidden
VOCAB = "vocab"
NORM = "norm"  # scale/bias vectors of norms (replicated by default)
CONV = "conv"  # patch-embedding spatial/channel axes (replicated)
LAYERS = "layers"  # leading axis of a scanned layer stack (model/scan.py); never sharded
# Activation axes.
BATCH = "batch"
SEQ = "seq"
MEMORY = "memory"  # the memory repository's token axis (memory-parallel cross-attention)
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"

Axes = tuple[str | None, ...]


def param_init(init: Callable, axes: Sequence[str | None]) -> Callable:
    """Wraps an initializer so the created ``nnx.Param`` carries logical ``axes``.

    Eager sharding is off: parameters are sharded by the caller (jitted init with
    ``out_shardings`` derived from the rules table), so modules build with or without a mesh.
    """
    return nnx.with_partitioning(init, tuple(axes), eager_sharding=False)
