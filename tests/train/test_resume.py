"""Acceptance (c): a run killed with SIGKILL part-way and restarted reproduces the uninterrupted
run exactly (per-step losses after the restart, final params bitwise, data order included);
SIGTERM saves a checkpoint at the current step and exits. Runs ``launch/train.py``'s main with the stand-in (``standin_main.py``) in subprocesses."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from train_harness import host_tree, launch_train, tiny_cfg

from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.checkpoint import Checkpointer
from hourllava_jax.train.metrics import read_metrics
from hourllava_jax.train.state import create_train_state
from standin import build_model_and_loss

TIMEOUT = 300


def _finish(proc, expect_rc: int = 0) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == expect_rc, out[-3000:]
    return out


def _wait_for_step(workdir: Path, step: int, proc) -> int:
    """Blocks until ``metrics.jsonl`` has logged ``step``; returns the newest logged step."""
    deadline = time.time() + TIMEOUT
    path = workdir / "metrics.jsonl"
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if path.exists():
            steps = read_metrics(path)
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.05)
    raise TimeoutError(f"step {step} never logged")


def _final_params(workdir: Path, step: int):
    cfg = tiny_cfg()
    ini = create_train_state(cfg, make_mesh(cfg.mesh), build_model_and_loss(cfg)[0])
    ck = Checkpointer(workdir / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep)
    state, data_state, got = ck.restore_latest(ini.abstract_state)
    ck.close()
    assert got == step
    return host_tree(state.params), data_state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("uninterrupted")
    _finish(launch_train(d))
    return d, read_metrics(d / "metrics.jsonl")


def test_sigkill_and_resume_is_exact(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    cfg = tiny_cfg()
    assert sorted(ref) == list(range(1, cfg.num_steps + 1))
    proc = launch_train(tmp_path, "--debug-step-sleep", "0.5")
    _wait_for_step(tmp_path, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    before = read_metrics(tmp_path / "metrics.jsonl")
    assert max(before) < cfg.num_steps
    out = _finish(launch_train(tmp_path))
    resumed = int(out.split("resumed from checkpoint ")[1].split()[0])
    assert resumed % cfg.checkpoint.every == 0 and 2 <= resumed <= max(before)
    after = read_metrics(tmp_path / "metrics.jsonl")
    assert sorted(after) == sorted(ref)
    for s in range(1, cfg.num_steps + 1):
        assert after[s]["loss"] == ref[s]["loss"], s  # bitwise (same program, same data order)
    params, data_state = _final_params(tmp_path, cfg.num_steps)
    ref_params, ref_data = _final_params(ref_dir, cfg.num_steps)
    assert data_state == ref_data
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, ref_params)


def test_sigterm_saves_current_step(tmp_path):
    proc = launch_train(tmp_path, "--debug-step-sleep", "0.5", "--set", "checkpoint.every=100")
    _wait_for_step(tmp_path, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, expect_rc=143)
    last = max(read_metrics(tmp_path / "metrics.jsonl"))
    assert f"SIGTERM: saved checkpoint {last}" in out
    ck = Checkpointer(tmp_path / "checkpoints", every=100, keep=3)
    assert ck.all_steps() == [last] and 3 <= last < tiny_cfg().num_steps
    ck.close()
