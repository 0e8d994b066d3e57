"""Acceptance (b): two processes on loopback (2 CPU devices each, ``jax.distributed``) train 3
steps matching the single-process losses, save a checkpoint together, and both restore it to
continue; the 2-process checkpoint also restores in one process on another mesh."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from train_harness import free_port, host_tree, launch_train, run_steps, tiny_cfg

from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.checkpoint import Checkpointer
from hourllava_jax.train.metrics import read_metrics
from hourllava_jax.train.state import create_train_state
from standin import build_model_and_loss

pytestmark = pytest.mark.multiprocess
TIMEOUT = 300


def _two_processes(workdir, *args):
    port = free_port()
    procs = [
        launch_train(workdir, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                     *args, num_cpu_devices=2)
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def test_two_processes_match_single_process(tmp_path):
    common = ("--set", "compute_dtype=float32", "--set", "checkpoint.every=3")
    _two_processes(tmp_path, *common, "--set", "num_steps=4", "--stop-after", "3")
    cfg = tiny_cfg("compute_dtype=float32", "num_steps=4")
    ref, ref_state, _, _ = run_steps(cfg, make_mesh({"data": 4}, devices=jax.devices()[:4]), 4)
    got = read_metrics(tmp_path / "metrics.jsonl")
    assert sorted(got) == [1, 2, 3]
    np.testing.assert_allclose([got[s]["loss"] for s in (1, 2, 3)], [m["loss"] for m in ref[:3]], rtol=1e-6)

    # Both processes restore step 3 together and take step 4.
    outs = _two_processes(tmp_path, *common, "--set", "num_steps=4")
    assert "resumed from checkpoint 3" in outs[0]
    got = read_metrics(tmp_path / "metrics.jsonl")
    np.testing.assert_allclose(got[4]["loss"], ref[3]["loss"], rtol=1e-6)

    # The 2-process checkpoint restores in this single process on an 8-device mesh.
    ini = create_train_state(cfg, make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), build_model_and_loss(cfg)[0])
    ck = Checkpointer(tmp_path / "checkpoints", every=3, keep=3)
    state, data_state, step = ck.restore_latest(ini.abstract_state)
    ck.close()
    assert step == 4 and data_state["next_batch"] == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 host_tree(state.params), host_tree(ref_state.params))
