"""The product path at tiny sizes: two Hugging Face directories (transformers' SigLIP and Qwen2)
-> ``hourllava-convert compose`` -> stage 1 (``init.from`` the composed directory) -> a second
stage (``init.from`` stage 1's workdir) -> export (``export_hf``) -> ``launch/answer.py`` with no
``--tokenizer`` and ``launch/evaluate.py --benchmark needle`` on the exported directory.

The second stage uses ``configs/train/tiny.yaml`` (the stage-3 recipe on pre-extracted features:
stage 2 proper decodes raw videos, which the trainer tests cover elsewhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx, traverse_util

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([PY, *cmd], capture_output=True, text=True, cwd=REPO, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd[:2]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _host_params(tree) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(tree)
    return {".".join(map(str, k)): np.asarray(jax.device_get(v)) for k, v in flat.items()}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> dict[str, Path]:
    """Tiny SigLIP + Qwen2 written by transformers, composed, and synthetic data featurised with
    the composed tower (configs/model/tiny.yaml's sizes)."""
    from hourllava_jax.convert.cli import main as convert

    root = tmp_path_factory.mktemp("chain")
    torch.manual_seed(0)
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=112,
        patch_size=14, layer_norm_eps=1e-6)).save_pretrained(root / "siglip")
    transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=2, pad_token_id=0)).save_pretrained(root / "qwen")
    assert convert(["compose", "--vision", str(root / "siglip"), "--llm", str(root / "qwen"), "--out",
                    str(root / "s0"), "--memaug-depth", "2"]) == 0
    data = root / "data"
    _run("launch/make_synthetic.py", "--out", str(data), "--num-videos", "8", "--min-seconds", "16", "--max-seconds",
         "24", "--tokenizer-vocab", "512")
    _run("launch/extract_features.py", "--videos", str(data / "videos"), "--out", str(data / "features"), "--model",
         str(root / "s0"), "--pool-size", "4", "--min-frames", "16", "--no-progress")
    return {"root": root, "s0": root / "s0", "data": data}


def _data_overrides(data: Path) -> list[str]:
    return [f"data.records=[{data / 'synthetic.jsonl'}]", f"data.feature_store={data / 'features'}",
            f"data.tokenizer={data / 'tokenizer'}", "num_steps=2", "checkpoint.every=2"]


STAGE1 = ["stage=1", "forgetting=spatial", "optim.modules.projector.trainable=false",
          "optim.modules.llm.trainable=false", "optim.modules.image_newline.trainable=false"]


@pytest.mark.slow
def test_compose_stage1_stage2_export_answer_evaluate(start, tmp_path, capsys):
    from hourllava_jax.cli.train import run_training
    from hourllava_jax.convert import load_pretrained

    s0, data = start["s0"], start["data"]
    # ---------------------------------------------------------------- stage 1 from the composed directory
    r1 = run_training("tiny", tmp_path / "s1", [*_data_overrides(data), *STAGE1, f"init.from={s0}"])
    out = capsys.readouterr().out
    assert r1.initialised_from == str(s0) and int(r1.state.step) == 2
    assert "parameters from Hugging Face directory" in out
    _, composed = load_pretrained(s0)
    want = _host_params(nnx.to_pure_dict(nnx.state(composed, nnx.Param)))
    got1 = _host_params(r1.state.params)
    assert set(got1) == set(want)
    frozen = [k for k in want if not k.startswith("memaug")]
    assert all(np.array_equal(got1[k], want[k]) for k in frozen)  # frozen in stage 1: the composed weights, bitwise
    assert any(not np.array_equal(got1[k], want[k]) for k in want if k.startswith("memaug"))  # MemAug trained

    # ---------------------------------------------------------------- stage 2 from stage 1's workdir, exported
    hf = tmp_path / "export"
    r2 = run_training("tiny", tmp_path / "s2", [*_data_overrides(data), f"init.from={tmp_path / 's1'}", "export_hf=true",
                                               f"export_dir={hf}"])
    out = capsys.readouterr().out
    assert f"parameters from checkpoint 2 of {tmp_path / 's1'}" in out
    assert r2.exported == hf and (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file()
    cfg, loaded = load_pretrained(hf)
    got2 = _host_params(r2.state.params)
    back = _host_params(nnx.to_pure_dict(nnx.state(loaded, nnx.Param)))
    assert set(back) == set(got2) and all(np.array_equal(back[k], got2[k]) for k in got2)  # bitwise round trip
    hf_cfg = json.loads((hf / "config.json").read_text())
    assert hf_cfg["architectures"] == ["LlavaQwenForCausalLM"] and hf_cfg["hourllava"]["memory"]["pool_size"] == 4

    # ---------------------------------------------------------------- the exported directory answers and scores
    video = next((data / "videos").rglob("*.mp4"))
    r = _run("launch/answer.py", "--checkpoint", str(hf), "--video", str(video), "--question", "What happens?",
             "--max-new-tokens", "4")
    # Two steps of training answer with whitespace; what counts: it loaded, encoded, generated.
    assert r.stdout.endswith("\n") and " frames " in r.stderr and " tokens" in r.stderr, r.stderr[-2000:]
    needle = tmp_path / "needle"
    _run("-m", "hourllava_jax.eval.tasks.needle", "--videos", str(video), "--out", str(needle), "--depths", "0.5",
         "--lengths", "8", "--needles-per-cell", "2")
    _run("launch/evaluate.py", "--benchmark", "needle", "--root", str(needle), "--checkpoint", str(hf), "--out",
         str(tmp_path / "eval"), "--mode", "loglikelihood", "--no-progress")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert "needle" in json.dumps(report) and (tmp_path / "eval" / "needle_heatmap.png").is_file()


def test_compose_output_with_wrong_shape_names_the_key(start, tmp_path):
    from hourllava_jax.cli.train import run_training
    from hourllava_jax.convert.mapping import ConversionError

    # llm.vocab_size 256 against the composed 512-row embedding.
    with pytest.raises(ConversionError, match=r"parameter llm\.embed_tokens\.embedding has shape \(512, 64\) in the "
                                              r"source but \(256, 64\) in the model"):
        run_training("tiny", tmp_path / "w", [*_data_overrides(start["data"]), "model_overrides=[llm.vocab_size=256]",
                                              f"init.from={start['s0']}"])
