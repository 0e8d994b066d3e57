"""loss_reduction (train/loss_reduction.py): per_sample, per_token and per_device_group, each
against a hand computation, and each the same under gradient accumulation and on any mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_harness import host_tree, one_device_mesh, run_steps, tiny_cfg

from hourllava_jax.config.base import ConfigError
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.loss_reduction import reduce_terms
from standin import build_data


def test_reduce_terms_by_hand():
    ce = jnp.asarray([6.0, 1.0, 0.0, 9.0])  # summed cross-entropy per row
    n = jnp.asarray([3.0, 1.0, 0.0, 3.0])  # supervised tokens per row (row 2: padding)
    num, den = reduce_terms(ce, n, "per_token")
    assert float(num / den) == pytest.approx(16.0 / 7.0)
    num, den = reduce_terms(ce, n, "per_sample")  # rows 0, 1, 3: (2 + 1 + 3) / 3; padding not counted
    assert (float(num), float(den)) == pytest.approx((6.0, 3.0))
    num, den = reduce_terms(ce, n, "per_device_group", 2)  # groups (7/4) and (9/3)
    assert (float(num), float(den)) == pytest.approx((7 / 4 + 3.0, 2.0))
    with pytest.raises(ValueError, match="loss_group_size 3 does not divide"):
        reduce_terms(ce, n, "per_device_group", 3)


def _batches(cfg, n: int):
    """Stand-in batches whose rows have very different supervised-token counts (so the three
    reductions differ), one row with none."""
    it = build_data(cfg, 0, 1)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        b = dict(next(it))
        labels = b["labels"].copy()
        for r in range(labels.shape[0]):
            keep = int(rng.integers(0, labels.shape[1] + 1)) if r else 0
            labels[r, keep:] = -100
        labels[1, :] = b["labels"][1]  # a long answer
        b["labels"] = labels
        out.append(b)
    return out


def _hand_loss(cfg, params0, batch, reduction, group):
    """The loss of the first step from the stand-in's own forward, reduced by hand in numpy."""
    from standin import StandInModel
    from flax import nnx

    model = StandInModel(nnx.Rngs(0), vocab=cfg.data.vocab_size)
    nnx.update(model, nnx.State(jax.tree.map(jnp.asarray, params0)))
    logits = model(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["features"], jnp.float32))
    labels = batch["labels"]
    mask = labels != -100
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, labels, 0))) * mask
    rows_ce, rows_n = ce.sum(1), mask.sum(1)
    if reduction == "per_token":
        return rows_ce.sum() / rows_n.sum()
    if reduction == "per_device_group":
        # micro-batch i holds rows i, i+accum, ...; groups are consecutive rows of a micro-batch
        accum = cfg.grad_accum_steps
        terms = []
        for i in range(accum):
            mc, mn = rows_ce[i::accum], rows_n[i::accum]
            for g in range(0, len(mc), group):
                if mn[g:g + group].sum() > 0:
                    terms.append(mc[g:g + group].sum() / mn[g:g + group].sum())
        return float(np.mean(terms))
    return float(np.mean([c / k for c, k in zip(rows_ce, rows_n) if k > 0]))


@pytest.mark.parametrize("reduction,group", [("per_sample", 1), ("per_token", 1), ("per_device_group", 2)])
def test_each_reduction_matches_hand_and_is_exact_under_accumulation_and_mesh(reduction, group):
    base = ("compute_dtype=float32", f"loss_reduction={reduction}", f"loss_group_size={group}")
    cfg = tiny_cfg(*base)
    batches = _batches(cfg, 2)
    m1, s1, params0, _ = run_steps(cfg, one_device_mesh(), 2, batches=batches)
    # The first step's loss is the hand computation from the initial params.
    assert m1[0]["loss"] == pytest.approx(_hand_loss(cfg, params0, batches[0], reduction, group), rel=1e-5)
    ref = host_tree(s1.params)
    # Same update with 2 accumulation steps on a 4-device mesh, and on 8 devices (data x fsdp).
    variants = [(tiny_cfg(*base, "grad_accum_steps=2"), make_mesh({"data": 4}, devices=jax.devices()[:4])),
                (cfg, make_mesh({"data": 2, "fsdp": 4}))]
    for vcfg, mesh in variants:
        m2, s2, _, _ = run_steps(vcfg, mesh, 2, batches=batches)
        if reduction != "per_device_group" or vcfg.grad_accum_steps == 1:
            for a, b in zip(m1, m2):
                np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6), ref, host_tree(s2.params))
        else:  # groups are per micro-batch: accumulation regroups the rows, as it would in the release
            assert m2[0]["loss"] == pytest.approx(_hand_loss(vcfg, params0, batches[0], reduction, group), rel=1e-5)


def test_the_three_reductions_differ_here():
    """Guards the test above: on these batches the reductions give different losses."""
    losses = {}
    for reduction in ("per_sample", "per_token", "per_device_group"):
        cfg = tiny_cfg("compute_dtype=float32", f"loss_reduction={reduction}", "loss_group_size=2")
        m, *_ = run_steps(cfg, one_device_mesh(), 1, batches=_batches(cfg, 1))
        losses[reduction] = m[0]["loss"]
    assert len({round(v, 5) for v in losses.values()}) == 3, losses


def test_group_size_must_divide_the_micro_batch():
    with pytest.raises(ConfigError, match="loss_group_size 3 must divide the micro-batch of 8"):
        tiny_cfg("loss_reduction=per_device_group", "loss_group_size=3")
