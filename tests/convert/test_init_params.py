"""``convert/init.load_params_placed`` (``init.from`` an HF directory) and the warm start's merge:
placed on the target shardings, modules absent on either side, errors naming the parameter."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from hourllava_jax.convert import save_pretrained
from hourllava_jax.convert.init import load_params_placed
from hourllava_jax.convert.mapping import ConversionError
from hourllava_jax.model.hour_llava import HourLlava
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.config import load_train_config
from hourllava_jax.train.state import TrainState
from hourllava_jax.train.warm_start import LoadedParams, warm_start

sys.path.insert(0, str(Path(__file__).parents[1] / "infer"))
from infer_fixtures import tiny_model  # noqa: E402


def _targets(cfg, mesh):
    """Abstract fp32 params of ``cfg``'s model, embeddings sharded over ``fsdp`` (others replicated)."""
    abstract = nnx.eval_shape(lambda: HourLlava(cfg, rngs=nnx.Rngs(0)))
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    spec = lambda p, s: PartitionSpec("fsdp") if p[-1] == "embedding" else PartitionSpec()  # noqa: E731
    return {p: jax.ShapeDtypeStruct(a.shape, jnp.float32, sharding=NamedSharding(mesh, spec(p, a.shape))) for p, a in flat.items()}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("initp")
    cfg, model = tiny_model(llm_scale=1.0)
    save_pretrained(model, cfg, d / "with")
    no_cfg = dataclasses.replace(cfg, use_memaug=False)
    save_pretrained(HourLlava(no_cfg, rngs=nnx.Rngs(1)), no_cfg, d / "without")
    want = {".".join(map(str, k)): np.asarray(v) for k, v in
            traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()}
    return d, cfg, no_cfg, want


def test_placed_on_target_shardings_bitwise(dirs):
    d, cfg, _, want = dirs
    mesh = make_mesh({"data": 1, "fsdp": 2}, devices=jax.devices()[:2]) if len(jax.devices()) >= 2 else make_mesh({"data": 1})
    targets = _targets(cfg, mesh)
    loaded, unused = load_params_placed(d / "with", targets, dtype="float32")
    assert set(loaded) == set(targets) and unused == []
    for p, x in loaded.items():
        assert x.sharding == targets[p].sharding and x.dtype == jnp.float32
        assert np.array_equal(np.asarray(x), want[".".join(map(str, p))])


def test_scanned_targets_take_the_per_layer_checkpoint(dirs):
    # The 3B/7B presets scan their layers: init.from must fill every stack from the per-layer
    # names (a per-layer read would match none of the stacked paths and leave them fresh).
    d, cfg, _, want = dirs
    scfg = dataclasses.replace(cfg, scan_layers=True)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    targets = _targets(scfg, mesh)
    stacks = [p for p in targets if "layers" in p]
    assert stacks and all(not isinstance(p[p.index("layers") + 1], int) for p in stacks)
    loaded, unused = load_params_placed(d / "with", targets, dtype="float32")
    assert set(loaded) == set(targets) and unused == []
    for p, x in loaded.items():
        if p in stacks:
            i = p.index("layers")
            for layer in range(x.shape[0]):
                key = ".".join(map(str, p[: i + 1] + (layer,) + p[i + 1:]))
                assert np.array_equal(np.asarray(x[layer]), want[key]), key
        else:
            assert np.array_equal(np.asarray(x), want[".".join(map(str, p))])


def test_absent_modules_on_either_side(dirs, capsys):
    d, cfg, no_cfg, _ = dirs
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    targets = _targets(cfg, mesh)
    loaded, unused = load_params_placed(d / "without", targets, dtype="float32")
    missing = [p for p in targets if p not in loaded]
    assert missing and all(p[0] == "memaug" for p in missing) and unused == []
    loaded, unused = load_params_placed(d / "with", _targets(no_cfg, mesh), dtype="float32")
    assert unused and all(u.startswith("memaug.") for u in unused)

    # The warm start keeps the fresh init where the source has nothing, and says so in one line.
    tcfg = load_train_config("tiny", [f"init.from={d / 'without'}"])
    fresh = {p: jnp.full(t.shape, 7.0) for p, t in targets.items()}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=traverse_util.unflatten_dict(fresh), opt_state={},
                       rng=jax.random.PRNGKey(0), skipped=jnp.zeros((), jnp.int32))
    abstract = traverse_util.unflatten_dict(targets)
    hf = lambda src, t, dtype: LoadedParams(*load_params_placed(src, t, dtype=dtype)[:1], (), src)  # noqa: E731
    out = warm_start(tcfg, state, abstract, hf)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("init:")]
    n_mem = sum(1 for p in targets if p[0] == "memaug")
    assert lines[0] == f"init: {len(targets) - n_mem}/{len(targets)} parameters from {d / 'without'}"
    assert lines[1] == f"init: not in the source, initialised as the model does: memaug (all {n_mem})" and len(lines) == 2
    flat = traverse_util.flatten_dict(out.params)
    assert all(np.all(np.asarray(flat[p]) == 7.0) == (p[0] == "memaug") for p in targets)


def test_wrong_shape_and_wrong_kind_are_errors(dirs, tmp_path):
    d, cfg, _, _ = dirs
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    big = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, intermediate_size=256))
    with pytest.raises(ConversionError, match=r"parameter llm\.layers\.0\.mlp\.gate_proj\.kernel has shape \(64, 128\) "
                                              r"in the source but \(64, 256\) in the model"):
        load_params_placed(d / "with", _targets(big, mesh), dtype="float32")
    save_pretrained(tiny_model()[1].llm, cfg.llm, tmp_path / "qwen")
    with pytest.raises(ConversionError, match="a llm directory; training starts from an Hour-LLaVA directory"):
        load_params_placed(tmp_path / "qwen", _targets(cfg, mesh), dtype="float32")
