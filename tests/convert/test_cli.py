"""hourllava-convert: compose a stage-1 starting point from SigLIP + Qwen2 directories."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.convert import load_pretrained
from hourllava_jax.convert.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_compose_inspect_and_reshard(tmp_path, capsys):
    torch.manual_seed(0)
    vis = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14)).eval()
    llm = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True)).eval()
    vis.save_pretrained(tmp_path / "siglip")
    llm.save_pretrained(tmp_path / "qwen")
    assert main(["compose", "--vision", str(tmp_path / "siglip"), "--llm", str(tmp_path / "qwen"),
                 "--out", str(tmp_path / "hl"), "--memaug-depth", "2"]) == 0
    cfg, model = load_pretrained(tmp_path / "hl")
    assert cfg.vision.num_hidden_layers == 2 and cfg.vision.feature_layer == -1 and cfg.memaug.depth == 2
    px = np.random.default_rng(0).standard_normal((1, 56, 56, 3)).astype(np.float32)
    ids = np.array([[3, 7, 11, 2]])
    with torch.no_grad():
        want_v = vis(torch.tensor(px.transpose(0, 3, 1, 2)), output_hidden_states=True).hidden_states[-2].numpy()
        want_l = llm(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model.vision_tower(jnp.asarray(px))), want_v, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.llm(jnp.asarray(ids))), want_l, atol=1e-5)
    assert main(["inspect", str(tmp_path / "hl")]) == 0
    assert "HourLlava" in capsys.readouterr().out
    assert main(["reshard", str(tmp_path / "hl"), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    _, m16 = load_pretrained(tmp_path / "bf16", dtype=None)  # None keeps the stored dtype
    assert m16.llm.embed_tokens.embedding[...].dtype == jnp.bfloat16
    assert main(["inspect", str(tmp_path / "missing")]) == 2
