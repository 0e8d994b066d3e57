"""How per-token losses become one number (issue: the release's loss weighting).

The release's loss is the token mean of each device's micro-batch, averaged over devices and
accumulation steps. With 1 sample per device (3B) that is the mean over samples of each sample's
token mean; with 2 or 4 samples per device (7B) a token mean within each group of 2 or 4, then
the mean of groups. The three reductions here reproduce those, or a plain token mean:

=====================  ==========================================================================
``per_sample``         mean over samples of each sample's token-mean cross-entropy
``per_device_group``   rows cut into consecutive groups of ``group_size``: token mean per group,
                       then the mean of groups (the release's per-device mean with N per device)
``per_token``          token mean over the whole global batch (long answers weigh more)
=====================  ==========================================================================

Every reduction is a ratio ``sum(numerators) / sum(denominators)`` whose numerator is a sum over
rows or groups of one micro-batch and whose denominator is a count: micro-batches add up their
numerators (and gradients) and counts, and the step divides once. So the result is the same for
any number of accumulation steps and any mesh. Groups are consecutive rows *of a micro-batch*
(``step._split_micro`` gives micro-batch ``i`` the global rows ``i, i+accum, ...``). Rows or groups
without a supervised token (padding) count for nothing.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

LossReduction = Literal["per_sample", "per_token", "per_device_group"]
REDUCTIONS: tuple[str, ...] = ("per_sample", "per_token", "per_device_group")
# The keys a loss_fn puts in its aux dict for the reduction: float32[B] each.
SAMPLE_CE, SAMPLE_TOKENS = "sample_ce", "sample_tokens"


def reduce_terms(ce_sum: jax.Array, tokens: jax.Array, reduction: str, group_size: int = 1) -> tuple[jax.Array, jax.Array]:
    """One micro-batch's ``(numerator, denominator)``; the loss is ``sum num / sum den`` over
    micro-batches.

    ce_sum float32[B]: each row's summed token cross-entropy; tokens float32[B]: its supervised
    token count. ``group_size`` is used by ``per_device_group`` only and must divide B.
    """
    ce_sum = ce_sum.astype(jnp.float32)
    tokens = tokens.astype(jnp.float32)
    if reduction == "per_token":
        return ce_sum.sum(), tokens.sum()
    if reduction == "per_device_group":
        b = ce_sum.shape[0]
        if group_size < 1 or b % group_size:
            raise ValueError(f"loss_group_size {group_size} does not divide the micro-batch of {b} rows")
        ce_sum = ce_sum.reshape(b // group_size, group_size).sum(-1)
        tokens = tokens.reshape(b // group_size, group_size).sum(-1)
    elif reduction != "per_sample":
        raise ValueError(f"loss_reduction: unknown {reduction!r}; valid {list(REDUCTIONS)}")
    valid = tokens > 0
    num = jnp.sum(jnp.where(valid, ce_sum / jnp.maximum(tokens, 1.0), 0.0))
    return num, valid.sum().astype(jnp.float32)
