"""scan_layers through the real trainer: the tiny Hour-LLaVA trained 3 steps with stacked layers
gives the unrolled model's losses (same initial weights, moved into the stacked layout)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from train_harness import REPO, run_steps

from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import video_layout
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.config import load_train_config
from hourllava_jax.train.config import model_config


def _cfg(scan: bool, remat: str):
    return load_train_config(REPO / "configs" / "train" / "tiny.yaml", [f"model_overrides=[scan_layers={str(scan).lower()}]",
                             "global_batch_size=2", "mesh={data: 1}", f"remat={remat}", "num_steps=10",
                             "spatial_mode=uniform"])  # fmt: skip  (the host batches below carry no forgetting key)


def _batches(mcfg, n: int, frames: int = 20):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        samples = []
        for length in (40, 33):
            ids = rng.integers(3, mcfg.llm.vocab_size, length).astype(np.int32)
            ids[5] = mcfg.image_token_id
            labels = np.where(np.arange(length) >= length // 2, ids, -100).astype(np.int32)
            feats = rng.standard_normal((frames, mcfg.memory.pool_size**2, mcfg.vision.hidden_size)).astype(np.float32)
            samples.append(Sample(ids, labels, feats, video_layout(frames, mcfg.memory)))
        out.append(collate(samples, pad_id=0, image_token_id=mcfg.image_token_id))
    return out


def _stack_layers(tree):
    """Pure param dict of an unrolled model -> the scanned layout ({"layers": {0: .., 1: ..}} stacked)."""
    if not isinstance(tree, dict):
        return tree
    if tree and all(isinstance(k, int) for k in tree):
        layers = [_stack_layers(tree[i]) for i in range(len(tree))]
        return jax.tree.map(lambda *xs: np.stack(xs), *layers)
    return {k: _stack_layers(v) for k, v in tree.items()}


@pytest.mark.parametrize("remat", ["none", "full"])
def test_three_steps_scanned_equal_unrolled(remat):
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    cfg0, cfg1 = _cfg(False, remat), _cfg(True, remat)
    batches = _batches(model_config(cfg0), 3)
    m0, _, params0, _ = run_steps(cfg0, mesh, 3, batches=batches)

    # Same initial weights in the stacked layout: init the scanned state, swap its params in.
    _, _, _, ini1 = run_steps(cfg1, mesh, 0, batches=batches)
    state1 = ini1.init()
    stacked = _stack_layers(params0)
    assert jax.tree.structure(stacked) == jax.tree.structure(state1.params)
    state1 = dataclasses.replace(state1, params=jax.device_put(stacked, ini1.shardings.params))
    m1, _, _, _ = run_steps(cfg1, mesh, 3, batches=batches, init_state=state1)
    l0, l1 = [m["loss"] for m in m0], [m["loss"] for m in m1]
    assert l0[2] != l0[0]  # the steps really train
    np.testing.assert_allclose(l1, l0, rtol=1e-6, atol=0)


def test_scanned_on_a_3d_mesh_matches_one_device():
    from train_harness import one_device_mesh

    assert len(jax.devices()) == 8
    cfg = load_train_config(REPO / "configs/train/tiny.yaml", ["compute_dtype=float32", "global_batch_size=8",
                                                               "model_overrides=[scan_layers=true]", "num_steps=10",
                                                               "spatial_mode=uniform"])  # fmt: skip
    batches = _batches(model_config(cfg), 2) * 4  # 2 steps of 8 samples: reuse the 2-sample batches
    batches = [jax.tree.map(lambda *xs: np.concatenate(xs), *batches[i::2]) for i in range(2)]
    ref, _, _, _ = run_steps(cfg, one_device_mesh(), 2, batches=batches)
    got, state, _, _ = run_steps(cfg, make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), 2, batches=batches)
    # The stack axis is never sharded; the layer's own axes follow the rules as unstacked.
    spec = tuple(state.params["llm"]["layers"]["mlp"]["gate_proj"]["kernel"].sharding.spec)
    assert spec[0] is None and spec[1:] == ("fsdp", "tensor"), spec
    np.testing.assert_allclose([m["loss"] for m in got], [m["loss"] for m in ref], rtol=1e-5)
