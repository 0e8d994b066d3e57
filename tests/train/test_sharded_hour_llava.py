"""Acceptance (a) on the real model: 2 Hour-LLaVA steps on 1 device == on a data x fsdp x tensor mesh."""

from __future__ import annotations

import jax
import numpy as np
from train_harness import REPO, host_tree, one_device_mesh, run_steps

from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import video_layout
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.config import load_train_config, model_config


def _batches(cfg, n_batches: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    mcfg = model_config(cfg)
    p2, c = mcfg.memory.pool_size**2, mcfg.vision.hidden_size
    out = []
    for _ in range(n_batches):
        samples = []
        for _ in range(cfg.global_batch_size):
            key = jax.random.key(int(rng.integers(1 << 30)))  # training's random spatial forgetting
            t, length = int(rng.integers(12, 17)), int(rng.integers(24, 40))
            ids = rng.integers(3, mcfg.llm.vocab_size, length).astype(np.int32)
            ids[4] = mcfg.image_token_id
            labels = np.where(np.arange(length) > length // 2, ids, -100).astype(np.int32)
            samples.append(Sample(ids, labels, rng.standard_normal((t, p2, c)).astype(np.float32), video_layout(t, mcfg.memory, key=key)))
        out.append(collate(samples, image_token_id=mcfg.image_token_id))
    return out


def test_hour_llava_on_a_3d_mesh_matches_one_device():
    assert len(jax.devices()) == 8
    cfg = load_train_config(REPO / "configs/train/tiny.yaml", ["compute_dtype=float32", "global_batch_size=8"])
    batches = _batches(cfg, 2, np.random.default_rng(0))
    ref_metrics, ref_state, ref_params0, _ = run_steps(cfg, one_device_mesh(), 2, batches=batches)
    metrics, state, params0, _ = run_steps(cfg, make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), 2, batches=batches)
    jax.tree.map(np.testing.assert_array_equal, params0, ref_params0)
    for m, r in zip(metrics, ref_metrics):
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), host_tree(state.params), host_tree(ref_state.params))
    # Frozen tower bitwise unchanged; trained parts moved.
    jax.tree.map(np.testing.assert_array_equal, host_tree(state.params["vision_tower"]), params0["vision_tower"])
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), host_tree(state.params["memaug"]), params0["memaug"])
    assert all(jax.tree.leaves(moved))


def test_a_memory_axis_makes_memaug_memory_parallel_and_changes_nothing(monkeypatch):
    """mesh data x fsdp x memory: MemAug's cross-attention splits the memory over ``memory``
    (picked up from the trainer's ``jax.set_mesh``), with the same losses and updates as 1 device."""
    import importlib

    kernels = importlib.import_module("hourllava_jax.kernels.attention")  # the module, not the re-exported function

    calls = []
    real = kernels.memory_parallel_attention

    def counting(*a, **kw):
        calls.append((kw["mesh"].shape["memory"], kw.get("batch_axis")))
        return real(*a, **kw)

    monkeypatch.setattr(kernels, "memory_parallel_attention", counting)
    cfg = load_train_config(REPO / "configs/train/tiny.yaml", ["compute_dtype=float32", "global_batch_size=8"])
    batches = _batches(cfg, 2, np.random.default_rng(1))
    ref_metrics, ref_state, _, _ = run_steps(cfg, one_device_mesh(), 2, batches=batches)
    assert calls == []  # no memory axis: plain attention
    metrics, state, _, _ = run_steps(cfg, make_mesh({"data": 2, "fsdp": 2, "memory": 2}), 2, batches=batches)
    assert calls and all(c == (2, ("data", "fsdp")) for c in calls)  # every MemAug block, batch kept split
    for m, r in zip(metrics, ref_metrics):
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), host_tree(state.params), host_tree(ref_state.params))
