"""``init.from`` a training workdir (stand-in model): params only, resume wins, shape errors.

The Hugging Face branch (compose output -> stage 1 -> stage 2 -> export) runs in
``tests/train/test_stage_chain.py``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from standin import BUILDERS
from train_harness import host_tree, tiny_cfg

from hourllava_jax.cli.train import run_training
from hourllava_jax.config.base import ConfigError
from hourllava_jax.train.checkpoint import CheckpointParams


@pytest.fixture(scope="module")
def stage_a(tmp_path_factory):
    work = tmp_path_factory.mktemp("a")
    res = run_training(tiny_cfg("num_steps=4"), work, builders=BUILDERS)
    return work, host_tree(res.state.params)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_init_from_workdir_takes_params_only(stage_a, tmp_path, capsys):
    a_dir, a_params = stage_a
    # Another seed: without init the params would differ; stop_after=0 keeps the start state.
    res = run_training(tiny_cfg("seed=7", f"init.from={a_dir}"), tmp_path, builders=BUILDERS, stop_after=0)
    assert res.initialised_from == str(a_dir) and res.resumed_from is None
    assert _leaves_equal(host_tree(res.state.params), a_params)
    assert int(res.state.step) == 0
    moments = [x for x in jax.tree.leaves(host_tree(res.state.opt_state)) if np.ndim(x) > 0]
    assert moments and all(not np.any(m) for m in moments)  # fresh Adam moments
    assert "init: 17/17 parameters from checkpoint 4 of" in capsys.readouterr().out


def test_init_step_and_resume_wins(stage_a, tmp_path, capsys):
    a_dir, _ = stage_a
    at2 = CheckpointParams(a_dir, step=2)
    cfg = tiny_cfg("seed=7", f"init.from={a_dir}", "init.step=2", "num_steps=2")
    res = run_training(cfg, tmp_path, builders=BUILDERS, stop_after=0)
    assert np.array_equal(np.asarray(res.state.params["llm"]["embed"]), at2.read("llm.embed"))
    res = run_training(cfg, tmp_path, builders=BUILDERS)  # trains 2 steps on top of the init
    trained = host_tree(res.state.params)
    capsys.readouterr()
    # The workdir now has checkpoint 2: a second launch resumes it and ignores init.from.
    res = run_training(cfg.__class__(**{**cfg.__dict__, "num_steps": 3}), tmp_path, builders=BUILDERS, stop_after=0)
    out = capsys.readouterr().out
    assert res.resumed_from == 2 and res.initialised_from is None
    assert "resumed from checkpoint 2 (init.from=" in out and "ignored" in out and "init: " not in out
    assert _leaves_equal(host_tree(res.state.params), trained)
    with pytest.raises(ConfigError, match=r"step 5: .* has no such complete checkpoint"):
        run_training(tiny_cfg(f"init.from={a_dir}", "init.step=5"), tmp_path / "new", builders=BUILDERS, stop_after=0)


def test_wrong_shaped_source_names_the_key(stage_a, tmp_path):
    a_dir, _ = stage_a
    with pytest.raises(ConfigError, match=r"parameter llm\.embed has shape \(64, 32\) in the source but \(96, 32\) in the model"):
        run_training(tiny_cfg("data.vocab_size=96", f"init.from={a_dir}"), tmp_path, builders=BUILDERS, stop_after=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a training workdir"):
        run_training(tiny_cfg(f"init.from={tmp_path / 'empty'}"), tmp_path / "w", builders=BUILDERS, stop_after=0)


def test_init_yaml_spelling_round_trips():
    from hourllava_jax.config.base import to_dict

    cfg = tiny_cfg("init.from=/runs/s1", "init.step=3")
    assert (cfg.init.source, cfg.init.step) == ("/runs/s1", 3)
    assert to_dict(cfg)["init"] == {"from": "/runs/s1", "step": 3}
    with pytest.raises(ConfigError, match="init.step needs init.from"):
        tiny_cfg("init.step=3")
