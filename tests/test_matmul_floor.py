"""benchmarks/matmul_floor.py: the skeleton the speed-up ceiling is computed from runs every matmul
of the step it stands for in the model's shapes (nothing dead-code-eliminated, every weight trained)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hourllava_jax.config.model import LLMConfig

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("matmul_floor", REPO / "benchmarks" / "matmul_floor.py")
floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor)

CFG = LLMConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip


def _numpy_forward(params, ids):
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p64["embed"][ids]
    b, length, _ = x.shape
    for p in p64["layers"]:
        q = (x @ p["q"]).reshape(b, length, 2, 2, 8)
        kv = (x @ p["k"] + x @ p["v"]).reshape(b, length, 2, 1, 8)
        x = x + (q + kv).reshape(b, length, 32) @ p["o"]
        x = x + ((x @ p["gate"]) * (x @ p["up"])) @ p["down"]
    return x @ p64["embed"].T


def test_floor_runs_the_step_matmuls_in_the_model_shapes_and_trains_every_weight():
    params = floor.floor_params(CFG)
    assert {k: v.shape for k, v in params["layers"][0].items()} == {
        "q": (32, 32), "k": (32, 16), "v": (32, 16), "o": (32, 32), "gate": (32, 48), "up": (32, 48), "down": (48, 32)}  # fmt: skip
    assert params["embed"].shape == (64, 32) and len(params["layers"]) == 2
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 5))
    fwd, fwd_bwd = floor.floor_fns(CFG, jnp.float32)
    np.testing.assert_allclose(np.asarray(fwd(params, jnp.asarray(ids, jnp.int32))), _numpy_forward(params, ids), rtol=1e-5, atol=1e-6)
    _, grads = fwd_bwd(params, jnp.asarray(ids, jnp.int32))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
