"""The evaluation answerer: the eval protocol, teacher-forced option log-likelihoods against an
independent KV-cache computation, parameters sharded over 8 devices answering exactly as on one,
and a full ``hourllava-eval`` run on a Video-MME fixture."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.eval.items import EvalItem, Prediction
from hourllava_jax.eval.prompt import build_prompt
from hourllava_jax.infer import generate as gen
from hourllava_jax.infer.memory_cache import MemoryCache
from hourllava_jax.infer.pipeline import VideoQA

sys.path.insert(0, str(Path(__file__).parents[1] / "infer"))
from infer_fixtures import tiny_model, tiny_tokenizer, tiny_video  # noqa: E402

N = 8
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pytest.importorskip("hourllava_jax.convert.hour_llava_keys")
    from hourllava_jax.convert import save_pretrained

    d = tmp_path_factory.mktemp("answerer")
    cfg, model = tiny_model()
    tok = tiny_tokenizer(d / "tok")
    ckpt = save_pretrained(model, cfg, d / "ckpt")
    tok.save_pretrained(str(ckpt))  # load_answerer reads the tokenizer from the checkpoint by default
    root = d / "videomme"
    tiny_video(root / "data" / "vidA.mp4")
    tiny_video(root / "data" / "vidB.mp4", seconds=5, size=(64, 48))
    (root / "data" / "vidC.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)  # corrupt mp4
    return d, cfg, model, tok, ckpt, root


def _item(video: Path, qid: str = "q1", options=("red", "green square", "blue", "a yellow circle")) -> EvalItem:
    return EvalItem("videomme", qid, str(video), "What colour is the square?", tuple(options), "A", video_id=video.stem)


def _reference_loglikelihood(qa: VideoQA, item: EvalItem, cont: list[int]) -> float:
    """log p(cont | prompt) token by token through generate.py's KV cache (prefill + decode steps),
    on the unpadded prompt: an independent path to the batched teacher-forced forward."""
    enc, _ = qa.encode(item.video)
    embeds, valid = qa.llm_inputs([qa.prompt_ids(build_prompt(item, enc.timestamps.tolist()), enc)], enc)
    n = int(valid[0].sum())
    g, st = nnx.split(qa.model.llm)  # jitted: eager NNX on CPU is slow
    logits, cache, pos = gen._prefill_jit(g, st, None, embeds[:, :n], valid[:, :n], cache_len=n + len(cont))
    total = 0.0
    for j, tok in enumerate(cont):
        total += float(jax.nn.log_softmax(logits[0])[tok])
        logits, cache = gen._step_jit(g, st, jnp.asarray([tok]), pos + j, cache)
    return total


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _full_forward_logprobs(graphdef, state, embeds, ids):
    """log p(ids[j] | embeds, ids[:j]) with one cache-free causal forward over the whole sequence."""
    llm = nnx.merge(graphdef, state)
    x = jnp.concatenate([embeds, llm.embed(ids[None])], axis=1)
    logp = jax.nn.log_softmax(llm(inputs_embeds=x)[0, embeds.shape[1] - 1 : -1], axis=-1)
    return jnp.take_along_axis(logp, ids[:, None], axis=-1)[:, 0]


def test_load_answerer_answers_items(env, tmp_path):
    from hourllava_jax.eval.answerer import ModelAnswerer, load_answerer, local_mesh

    d, cfg, model, tok, ckpt, root = env
    ans = load_answerer(ckpt, cache_dir=tmp_path / "cache", max_new_tokens=N, mesh=local_mesh({"tensor": 1}))
    assert isinstance(ans, ModelAnswerer)
    item = _item(root / "data" / "vidA.mp4")
    pred = ans.answer(item)
    assert isinstance(pred, Prediction) and isinstance(pred.text, str)
    assert pred.frame_indices == tuple(range(16)) and pred.timestamps == tuple(i / 4 for i in range(16))
    # Same as asking the pipeline the multiple-choice prompt directly.
    qa = VideoQA(model, cfg, tok)
    enc, _ = qa.encode(item.video)
    direct = qa.answer_encoded(enc, build_prompt(item, enc.timestamps.tolist()), max_new_tokens=N)
    assert pred.text == direct.text
    assert len(ans.qa.cache) == 1
    ans.release_video(item.video)
    assert len(ans.qa.cache) == 0


def test_option_loglikelihoods_match_token_by_token_decoding(env):
    from hourllava_jax.eval.answerer import ModelAnswerer

    d, cfg, model, tok, ckpt, root = env
    qa = VideoQA(model, cfg, tok, cache=MemoryCache())
    ans = ModelAnswerer(qa, max_new_tokens=N)
    item = _item(root / "data" / "vidA.mp4")
    pred = ans.option_loglikelihoods(item)
    ll = np.asarray(pred.option_loglikelihoods)
    assert ll.shape == (4,) and np.all(ll < 0) and len(np.unique(ll)) == 4
    for i, opt in enumerate(item.options):
        cont = tok.encode(ans.continuation("ABCD"[i], opt), add_special_tokens=False)
        np.testing.assert_allclose(ll[i], _reference_loglikelihood(qa, item, cont), rtol=1e-4, atol=1e-3)
    # And against a cache-free forward over prompt + continuation (no KV cache code at all).
    enc, _ = qa.encode(item.video)
    embeds, valid = qa.llm_inputs([qa.prompt_ids(build_prompt(item, enc.timestamps.tolist()), enc)], enc)
    n = int(valid[0].sum())
    g, st = nnx.split(model.llm)
    for i, opt in enumerate(item.options):
        cont = jnp.asarray(tok.encode(ans.continuation("ABCD"[i], opt), add_special_tokens=False), jnp.int32)
        np.testing.assert_allclose(ll[i], float(_full_forward_logprobs(g, st, embeds[:, :n], cont).sum()), rtol=1e-4, atol=1e-3)


def _write_videomme(root: Path) -> None:
    base = {"domain": "Knowledge", "sub_category": "Astronomy", "url": "https://www.youtube.com/watch?v=x", "task_type": "OCR Problems"}
    opts = ["A. red", "B. green", "C. blue", "D. yellow"]
    rows = [{**base, "video_id": vid, "duration": "short", "videoID": name, "question_id": f"{vid}-{k}",
             "question": q, "options": opts, "answer": "ABCD"[k % 4]}
            for vid, name in (("001", "vidA"), ("002", "vidB"), ("003", "vidC"), ("004", "vidMissing"))
            for k, q in enumerate(("What colour is the square?", "What colour is the background?", "Which colour is last?"))]
    (root / "videomme.json").write_text(json.dumps(rows))


@pytest.mark.parametrize("mode", ["generate", "loglikelihood"])
def test_evaluate_cli_runs_the_model_answerer(env, tmp_path, monkeypatch, mode):
    d, cfg, model, tok, ckpt, root = env
    _write_videomme(root)
    from hourllava_jax.cli import evaluate

    rep = evaluate.run(["--benchmark", "videomme", "--root", str(root), "--checkpoint", str(ckpt), "--out",
                         str(tmp_path / "out"), "--mode", mode, "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                         "--max-new-tokens", str(N), "--mesh", "tensor=1"])
    assert rep is not None
    lines = [json.loads(x) for f in sorted((tmp_path / "out" / "results" / "videomme").glob("*.jsonl")) for x in f.read_text().splitlines()]
    by_video = {}
    for r in lines:
        by_video.setdefault(Path(r["video"]).stem, []).append(r)
    assert len(lines) == 12
    assert all(r["status"] == "ok" for v in ("vidA", "vidB") for r in by_video[v])
    assert {r["reason_code"] for r in by_video["vidC"]} == {"corrupt_video"}
    assert {r["reason_code"] for r in by_video["vidMissing"]} == {"missing_video"}
    assert "vidC.mp4" in by_video["vidC"][0]["reason"]
    ok = [r for r in lines if r["status"] == "ok"]
    assert all(r["frame_indices"] for r in ok)
    if mode == "loglikelihood":
        assert all(len(r["option_loglikelihoods"]) == 4 and r["predicted"] in "ABCD" for r in ok)
    # Encoded once per video: one cache entry per readable video on disk.
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2


def test_sharded_answers_equal_single_device(env, tmp_path):
    """Acceptance: the parameters sharded over 8 devices (fsdp 2 x tensor 4) give the same
    generated text and option log-likelihoods as on one device, for both prompt styles."""
    from hourllava_jax.eval.answerer import load_answerer, local_mesh

    d, cfg, model, tok, ckpt, root = env
    assert len(jax.local_devices()) == 8
    one = load_answerer(ckpt, max_new_tokens=N, mesh=local_mesh({"tensor": 1}))
    many = load_answerer(ckpt, max_new_tokens=N, mesh=local_mesh({"fsdp": 2, "tensor": 4}))
    # Really sharded: the LLM's MLP matrix is split 4 ways over tensor and 2 over fsdp.
    w = nnx.state(many.qa.model.llm, nnx.Param)
    leaves = [x for x in jax.tree.leaves(w) if x.ndim == 2 and x.shape[0] * x.shape[1] >= 64 * 128]
    assert leaves and all(len(x.sharding.device_set) == 8 for x in leaves)
    assert any(x.addressable_shards[0].data.size * 8 == x.size for x in leaves)
    item = _item(root / "data" / "vidA.mp4")
    for style in ("llava_vid", "llava"):
        one.prompt = many.prompt = style
        a, b = one.answer(item), many.answer(item)
        assert a.text and a.text == b.text and a.frame_indices == b.frame_indices and a.timestamps == b.timestamps
    la = one.option_loglikelihoods(item).option_loglikelihoods
    lb = many.option_loglikelihoods(item).option_loglikelihoods
    assert len(set(la)) == 4  # distinct scores: the comparison below is not vacuous
    np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-5)


def test_local_mesh_shapes():
    from hourllava_jax.eval.answerer import local_mesh

    assert local_mesh().shape["tensor"] == 8  # default: tensor over every local device
    one = local_mesh({"tensor": 1})
    assert one.devices.size == 1 and one.devices.flat[0] == jax.local_devices()[0]
    assert dict(local_mesh({"fsdp": 2, "tensor": 2}).shape) == {"data": 1, "fsdp": 2, "tensor": 2, "memory": 1}
    with pytest.raises(ValueError, match="needs 16 devices"):
        local_mesh({"tensor": 16})
