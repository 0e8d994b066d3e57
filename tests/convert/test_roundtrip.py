"""load_pretrained / save_pretrained on directories written by transformers' save_pretrained."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.convert import ConversionError, load_pretrained, save_pretrained
from hourllava_jax.convert.safetensors_io import INDEX_NAME, CheckpointReader
from hourllava_jax.model.hour_llava import HourLlava

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tensors(path):
    with CheckpointReader(path) as r:
        return {k: r.get(k) for k in r.keys()}


def _assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def qwen_dir(request, tmp_path_factory):
    cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=1e6, tie_word_embeddings=request.param)
    torch.manual_seed(0)
    m = transformers.Qwen2ForCausalLM(cfg).eval()
    _randomize(m)
    d = tmp_path_factory.mktemp("qwen") / "hf"
    m.save_pretrained(d, max_shard_size="20KB")  # forces an index-sharded directory
    return d, m


def test_qwen2_load_matches_hf_and_round_trips(qwen_dir, tmp_path):
    d, hf_model = qwen_dir
    assert (d / INDEX_NAME).is_file()
    cfg, model = load_pretrained(d, dtype=jnp.float32)
    ids = np.array([[1, 5, 9, 33, 2, 70, 4]])
    with torch.no_grad():
        ref = hf_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref, atol=1e-5, rtol=1e-5)
    out = save_pretrained(model, cfg, tmp_path / "out", max_shard_bytes=30_000)
    _assert_same_tensors(_tensors(d), _tensors(out))
    # transformers reads our export back and computes the same logits.
    back = transformers.Qwen2ForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.tensor(ids)).logits.numpy(), ref, atol=1e-6)


def test_siglip_round_trip(tmp_path):
    cfg = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                          num_attention_heads=4, image_size=56, patch_size=14)
    m = transformers.SiglipVisionModel(cfg).eval()
    _randomize(m, 1)
    m.save_pretrained(tmp_path / "hf")
    vcfg, tower = load_pretrained(tmp_path / "hf")
    assert vcfg.feature_layer == -2 and vcfg.num_hidden_layers == 3
    px = np.random.default_rng(0).standard_normal((2, 56, 56, 3)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.tensor(px.transpose(0, 3, 1, 2)), output_hidden_states=True).hidden_states[-2].numpy()
    np.testing.assert_allclose(np.asarray(tower(jnp.asarray(px))), ref, atol=1e-5)
    out = save_pretrained(tower, vcfg, tmp_path / "out")
    a, b = _tensors(tmp_path / "hf"), _tensors(out)
    # transformers 5 saves a bare SiglipVisionModel without the ``vision_model.`` prefix; we write the hub's.
    _assert_same_tensors({k.removeprefix("vision_model."): v for k, v in a.items()}, {k.removeprefix("vision_model."): v for k, v in b.items()})


@pytest.fixture(scope="module")
def hour_llava_dir(tmp_path_factory):
    cfg = load_model_config("tiny")
    model = HourLlava(cfg, rngs=nnx.Rngs(3))
    d = tmp_path_factory.mktemp("hl") / "ckpt"
    save_pretrained(model, cfg, d, max_shard_bytes=200_000)
    return cfg, model, d


def test_hour_llava_round_trip(hour_llava_dir, tmp_path):
    cfg, model, d = hour_llava_dir
    keys = set(_tensors(d))
    assert "model.image_newline" in keys and "model.mm_projector.0.weight" in keys
    assert "model.vision_resampler.layers.1.cross_attn.Wkv.weight" in keys
    assert "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight" in keys
    cfg2, model2 = load_pretrained(d)
    assert cfg2.llm == cfg.llm and cfg2.vision == cfg.vision and cfg2.memaug == cfg.memaug and cfg2.memory == cfg.memory
    for (p, a), (q, b) in zip(nnx.to_flat_state(nnx.state(model, nnx.Param)), nnx.to_flat_state(nnx.state(model2, nnx.Param))):
        assert p == q and np.array_equal(np.asarray(a[...]), np.asarray(b[...])), p
    out = save_pretrained(model2, cfg2, tmp_path / "again", max_shard_bytes=200_000)
    _assert_same_tensors(_tensors(d), _tensors(out))


def test_bf16_load_casts(hour_llava_dir):
    _, model, d = hour_llava_dir
    _, m16 = load_pretrained(d, dtype=jnp.bfloat16)
    assert m16.llm.embed_tokens.embedding[...].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(m16.image_newline[...], np.float32), np.asarray(model.image_newline[...]), rtol=1e-2)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_checkpoints_name_the_problem(hour_llava_dir, tmp_path):
    _, _, d = hour_llava_dir
    bad = _copy(d, tmp_path / "unknown")
    conf = json.loads((bad / "config.json").read_text())
    conf.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    conf.pop("mm_vision_tower")
    (bad / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConversionError, match="unknown architecture.*GPT2LMHeadModel"):
        load_pretrained(bad)
    gone = _copy(d, tmp_path / "missing_shard")
    next(gone.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(ConversionError, match="model-00002-of-.*missing"):
        load_pretrained(gone)
    shapes = _copy(d, tmp_path / "shape")
    conf = json.loads((shapes / "config.json").read_text())
    conf["intermediate_size"] = 96
    (shapes / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConversionError, match=r"model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight: shape"):
        load_pretrained(shapes)
    with pytest.raises(ConversionError, match="not found"):
        load_pretrained(tmp_path / "does_not_exist")


def test_failed_export_writes_nothing(hour_llava_dir, tmp_path):
    """A config that does not describe the model fails the export and leaves nothing behind."""
    import dataclasses

    cfg, model, _ = hour_llava_dir
    wrong = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_hidden_layers=3))
    with pytest.raises(ConversionError, match="layers.2"):
        save_pretrained(model, wrong, tmp_path / "x", max_shard_bytes=1000)
    assert not any(tmp_path.iterdir())


def test_truncated_siglip_tower_round_trips_its_feature_layer(tmp_path):
    """A tower whose output is its last layer (the release's truncated tower) comes back so."""
    from hourllava_jax.config import VisionConfig
    from hourllava_jax.model.siglip import SiglipVisionTower

    vcfg = VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, feature_layer=-1,
                        num_attention_heads=2, image_size=28, patch_size=14)
    tower = SiglipVisionTower(vcfg, rngs=nnx.Rngs(0))
    save_pretrained(tower, vcfg, tmp_path / "t")
    back, _ = load_pretrained(tmp_path / "t")
    assert back == vcfg
