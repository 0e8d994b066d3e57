"""Checkpoint round trips, acceptance (e) (a corrupt latest checkpoint falls back to the previous
one) and restoring onto a different mesh."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_harness import host_tree, one_device_mesh, tiny_cfg

from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.checkpoint import Checkpointer
from hourllava_jax.train.state import create_train_state
from standin import build_model_and_loss


def _init(mesh):
    cfg = tiny_cfg()
    return create_train_state(cfg, mesh, build_model_and_loss(cfg)[0])


def _at_step(state, step: int):
    """A distinguishable state per step (params shifted by ``step``)."""
    return dataclasses.replace(state, step=jnp.asarray(step, jnp.int32),
                               params=jax.tree.map(lambda p: p + step, state.params))


@pytest.fixture
def saved(tmp_path):
    """Checkpoints 2 and 4 written on one device, with their data states."""
    ini = _init(one_device_mesh())
    base = ini.init()
    ck = Checkpointer(tmp_path / "ckpt", every=2, keep=3)
    for s in (2, 4):
        assert ck.save(s, _at_step(base, s), {"next_batch": s, "seed": 0})
    assert not ck.save(3, _at_step(base, 3), {"next_batch": 3})  # not due
    ck.wait()
    assert ck.all_steps() == [2, 4]
    ck.close()
    return tmp_path / "ckpt", ini, host_tree(base.params)


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_round_trip_with_data_state(saved):
    d, ini, base = saved
    ck = Checkpointer(d, every=2, keep=3)
    state, data_state, step = ck.restore_latest(ini.abstract_state)
    assert step == 4 and data_state == {"next_batch": 4, "seed": 0}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b + 4), host_tree(state.params), base)
    ck.close()


@pytest.mark.parametrize("damage", ["truncate", "delete_metadata", "delete_data_state"])
def test_corrupt_latest_falls_back(saved, damage, capsys):
    d, ini, base = saved
    if damage == "truncate":
        f = _largest_file(d / "4" / "state")
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    elif damage == "delete_metadata":
        (d / "4" / "state" / "_METADATA").unlink()
    else:
        next((d / "4" / "data").glob("process_*.json")).unlink()
    ck = Checkpointer(d, every=2, keep=2)
    state, data_state, step = ck.restore_latest(ini.abstract_state)
    assert step == 2 and data_state["next_batch"] == 2
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b + 2), host_tree(state.params), base)
    assert re.search(r"checkpoint 4 under \S+ is unusable", capsys.readouterr().out)
    # Kept for inspection, out of the way of new saves; the fallback is not deleted by them.
    assert (d / "corrupt.4").is_dir() and ck.all_steps() == [2]
    assert ck.save(4, _at_step(state, 4), {"next_batch": 4, "seed": 0})
    ck.wait()
    assert ck.all_steps() == [2, 4]
    assert ck.restore_latest(ini.abstract_state)[2] == 4
    ck.close()


def test_restore_onto_other_mesh(saved):
    d, _, base = saved
    ini8 = _init(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    ck = Checkpointer(d, every=2, keep=3)
    state, _, step = ck.restore_latest(ini8.abstract_state)
    assert step == 4
    emb = state.params["llm"]["embed"]
    assert tuple(emb.sharding.spec) == ("tensor", "fsdp") and len(emb.sharding.device_set) == 8
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b + 4), host_tree(state.params), base)
    ck.close()


def test_data_state_from_other_process_count(saved):
    """Identical per-process states (a global-order iterator) restore under a new process count."""
    d, ini, _ = saved
    data_dir = d / "4" / "data"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
    (data_dir / "process_1-of-2.json").write_text(json.dumps({"next_batch": 4, "seed": 0}))
    ck = Checkpointer(d, every=2, keep=3)
    assert ck.restore_latest(ini.abstract_state)[1:] == ({"next_batch": 4, "seed": 0}, 4)
    ck.close()
