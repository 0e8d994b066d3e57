"""``hourllava-convert export``: a training workdir's checkpoint -> an Hour-LLaVA HF directory.

The workdir is written directly (a tiny Hour-LLaVA's params in a TrainState checkpoint + the
run's ``train_config.yaml``), so no step is compiled; the trained-then-exported path runs in
``tests/train/test_stage_chain.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from hourllava_jax.config.base import save_yaml
from hourllava_jax.convert import load_pretrained
from hourllava_jax.convert.cli import main
from hourllava_jax.train.checkpoint import Checkpointer
from hourllava_jax.train.config import load_train_config
from hourllava_jax.train.state import TrainState

sys.path.insert(0, str(Path(__file__).parents[1] / "infer"))
from infer_fixtures import tiny_model, tiny_tokenizer  # noqa: E402


def _flat(tree) -> dict[str, np.ndarray]:
    return {".".join(map(str, k)): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Checkpoints 1 and 2 (different params) of a tiny Hour-LLaVA run."""
    d = tmp_path_factory.mktemp("export")
    tiny_tokenizer(d / "tok")
    (d / "run").mkdir()
    save_yaml(load_train_config("tiny", [f"data.tokenizer={d / 'tok'}"]), d / "run" / "train_config.yaml")
    ckpt = Checkpointer(d / "run" / "checkpoints", every=1, keep=3, async_save=False)
    params = {}
    for step, seed in ((1, 0), (2, 1)):
        _, model = tiny_model(seed=seed, llm_scale=1.0)
        params[step] = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        state = TrainState(step=jnp.array(step, jnp.int32), params=params[step], opt_state={"count": jnp.zeros((), jnp.int32)},
                           rng=jax.random.PRNGKey(0), skipped=jnp.zeros((), jnp.int32))
        ckpt.save(step, state, {"position": step}, force=True)
    ckpt.close()
    return d, {s: _flat(p) for s, p in params.items()}


def test_export_newest_and_chosen_step_bitwise(workdir, capsys):
    d, params = workdir
    for step, out in ((None, d / "hf"), (1, d / "hf1")):
        argv = ["export", "--workdir", str(d / "run"), "--out", str(out)] + ([] if step is None else ["--step", str(step)])
        assert main(argv) == 0
        cfg, model = load_pretrained(out)
        got = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        want = params[step or 2]
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want), step
        assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
        hf = json.loads((out / "config.json").read_text())
        assert hf["architectures"] == ["LlavaQwenForCausalLM"] and hf["vision_config"]["hidden_size"] == 32
        assert cfg.memory.pool_size == 4 and cfg.memaug.depth == 2  # the run's model config, not defaults
    # bf16 export: the published dtype, loadable with dtype=None (keeps the stored one)
    assert main(["export", "--workdir", str(d / "run"), "--out", str(d / "hf16"), "--dtype", "bfloat16"]) == 0
    _, m16 = load_pretrained(d / "hf16", dtype=None)
    assert m16.llm.embed_tokens.embedding[...].dtype == jnp.bfloat16


def test_export_errors_name_the_problem(workdir, tmp_path, capsys):
    d, _ = workdir
    assert main(["export", "--workdir", str(d / "run"), "--out", str(tmp_path / "x"), "--step", "7"]) == 2
    assert "step 7" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "no train_config.yaml" in capsys.readouterr().err
    assert main(["export", "--workdir", str(d / "run"), "--out", str(tmp_path / "z"), "--tokenizer", str(tmp_path / "none")]) == 2
    assert "is not a directory" in capsys.readouterr().err and not (tmp_path / "z").exists()
