"""VideoQA end to end on the tiny model: determinism, cache == no cache bit for bit, streaming,
seeded sampling, prompt (design §4), no recompilation across questions, bad files, loading, CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hourllava_jax.data.chat import time_instruction
from hourllava_jax.data import encoder as frame_encoder
from hourllava_jax.data.errors import DataError
from hourllava_jax.infer import generate as gen
from hourllava_jax.infer import pipeline as pl
from hourllava_jax.infer.memory_cache import MemoryCache
from hourllava_jax.infer.pipeline import VideoQA

sys.path.insert(0, str(Path(__file__).parent))
from infer_fixtures import tiny_model, tiny_tokenizer, tiny_video  # noqa: E402

N = 8  # max_new_tokens everywhere: it is a static argument of the compiled generation loop
Q1 = "What colour is the square?"
Q2 = "Where does the square move, and how many frames are there in this video?"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    cfg, model = tiny_model()
    tok = tiny_tokenizer(d / "tok")
    videos = {"a": tiny_video(d / "a.mp4"), "b": tiny_video(d / "b.mp4", seconds=5, size=(64, 48))}
    qa = VideoQA(model, cfg, tok, cache=MemoryCache(d / "cache"))
    return d, cfg, model, tok, videos, qa


def test_prompt_is_time_instruction_plus_chatml(env):
    _, cfg, _, tok, videos, qa = env
    enc, _ = qa.encode(videos["a"])
    ids = qa.prompt_ids(Q1, enc)
    assert int((ids == cfg.image_token_id).sum()) == 1
    text = tok.decode(np.where(ids == cfg.image_token_id, tok.convert_tokens_to_ids("<|endoftext|>"), ids))
    ti = time_instruction(4.0, 16)  # 16 frames at 4 fps: all sampled (16 < 128), 4.00 s
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"<|endoftext|>\n{ti}\n{Q1}<|im_end|>\n<|im_start|>assistant\n")
    np.testing.assert_array_equal(enc.frame_indices, np.arange(16))
    np.testing.assert_allclose(enc.timestamps, np.arange(16) / 4)
    assert enc.features.shape == (16, cfg.memory.pool_size**2, cfg.vision.hidden_size)


def test_greedy_is_deterministic_and_depends_on_the_video(env):
    _, _, _, _, videos, qa = env
    a1 = qa.answer(videos["a"], Q1, max_new_tokens=N)
    a2 = qa.answer(videos["a"], Q1, max_new_tokens=N)
    assert a1.text == a2.text and np.array_equal(a1.token_ids, a2.token_ids)
    assert len(set(a1.token_ids.tolist())) > 2  # a varied answer, not one repeated token
    # The visual path is live: another video gives other LLM inputs.
    ea, _ = qa.encode(videos["a"])
    eb, _ = qa.encode(videos["b"])
    xa, va = qa.llm_inputs([qa.prompt_ids(Q1, ea)], ea)
    xb, vb = qa.llm_inputs([qa.prompt_ids(Q1, eb)], eb)
    assert xa.shape == xb.shape and not np.allclose(np.asarray(xa), np.asarray(xb))


def test_cached_answers_equal_uncached_bit_for_bit(env):
    d, cfg, model, tok, videos, qa = env
    plain = VideoQA(model, cfg, tok, cache=False)
    disk_only = VideoQA(model, cfg, tok, cache=MemoryCache(d / "cache"))  # fresh RAM, same disk store
    for k, q in enumerate((Q1, Q2)):
        ref = plain.answer(videos["b"], q, max_new_tokens=N)
        first = qa.answer(videos["b"], q, max_new_tokens=N)
        again = qa.answer(videos["b"], q, max_new_tokens=N)
        from_disk = disk_only.answer(videos["b"], q, max_new_tokens=N)
        assert ref.source == "computed" and again.source == "memory"
        assert from_disk.source == ("disk" if k == 0 else "memory")
        for got in (first, again, from_disk):
            np.testing.assert_array_equal(got.token_ids, ref.token_ids)
            assert got.text == ref.text
            np.testing.assert_array_equal(got.frame_indices, ref.frame_indices)
            np.testing.assert_array_equal(got.timestamps, ref.timestamps)
    e_ref, _ = plain.encode(videos["b"])
    e_disk, _ = disk_only.encode(videos["b"])
    np.testing.assert_array_equal(e_disk.features, e_ref.features)
    x_ref, _ = plain.llm_inputs([plain.prompt_ids(Q2, e_ref)], e_ref)
    x_disk, _ = disk_only.llm_inputs([disk_only.prompt_ids(Q2, e_disk)], e_disk)
    np.testing.assert_array_equal(np.asarray(x_disk), np.asarray(x_ref))


def test_stream_pieces_concatenate_to_the_answer(env):
    _, _, _, _, videos, qa = env
    pieces: list[str] = []
    streamed = qa.answer(videos["a"], Q2, max_new_tokens=N, stream=pieces.append)
    whole = qa.answer(videos["a"], Q2, max_new_tokens=N)
    np.testing.assert_array_equal(streamed.token_ids, whole.token_ids)
    assert "".join(pieces) == streamed.text == whole.text
    assert len(pieces) > 1  # it really streamed


def test_stream_decoder_holds_back_partial_characters(env):
    tok = env[3]
    ids = tok.encode("héllo → wörld", add_special_tokens=False)
    dec = pl.StreamDecoder(tok)
    out = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(out) == "héllo → wörld"
    assert all("\ufffd" not in p for p in out)


def test_seeded_sampling_is_reproducible(env):
    _, _, _, _, videos, qa = env
    kw = dict(max_new_tokens=N, temperature=1.0, top_p=0.9)
    a = qa.answer(videos["a"], Q1, seed=1, **kw)
    b = qa.answer(videos["a"], Q1, seed=1, **kw)
    c = qa.answer(videos["a"], Q1, seed=2, **kw)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert a.text == b.text
    assert not np.array_equal(a.token_ids, c.token_ids)
    pieces: list[str] = []
    s = qa.answer(videos["a"], Q1, seed=1, stream=pieces.append, **kw)
    np.testing.assert_array_equal(s.token_ids, a.token_ids)
    assert "".join(pieces) == a.text


def test_random_forgetting_needs_its_seed(env):
    _, cfg, model, tok, videos, qa = env
    r1 = VideoQA(model, cfg, tok, forgetting="random", forgetting_seed=3)
    r2 = VideoQA(model, cfg, tok, forgetting="random", forgetting_seed=3)
    r3 = VideoQA(model, cfg, tok, forgetting="random", forgetting_seed=4)
    lay = [q.layout(16).decayed[0] for q in (r1, r2, r3, qa)]
    np.testing.assert_array_equal(lay[0], lay[1])
    assert not np.array_equal(lay[0], lay[2]) and not np.array_equal(lay[0], lay[3])
    np.testing.assert_array_equal(lay[3], qa.layout(16).decayed[0])  # uniform: fixed
    with pytest.raises(ValueError, match="forgetting"):
        VideoQA(model, cfg, tok, forgetting="keyframe")


def test_further_questions_do_not_recompile(env):
    _, _, _, _, videos, qa = env
    qa.answer(videos["a"], Q1, max_new_tokens=N)
    sizes = (frame_encoder._encode_chunk._cache_size(), pl._llm_inputs._cache_size(), gen._generate_jit._cache_size())
    for q in ("Is it red?", "Describe what happens in the video from the start to the end.", Q2):
        qa.answer(videos["a"], q, max_new_tokens=N)
    qa.release_video(videos["a"])
    qa.answer(videos["a"], Q1, max_new_tokens=N)  # from disk
    assert (frame_encoder._encode_chunk._cache_size(), pl._llm_inputs._cache_size(), gen._generate_jit._cache_size()) == sizes


def test_encode_chunks_match_one_batch(env):
    _, cfg, model, tok, videos, _ = env
    frames = np.random.default_rng(0).integers(0, 256, (11, 112, 112, 3), dtype=np.uint8)
    a = VideoQA(model, cfg, tok, frame_chunk=4).encode_frames(frames)
    b = VideoQA(model, cfg, tok, frame_chunk=16).encode_frames(frames)
    assert a.shape == (11, cfg.memory.pool_size**2, cfg.vision.hidden_size)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_bad_videos_raise_errors_naming_the_file(env):
    d, _, _, _, videos, qa = env
    with pytest.raises(DataError, match=r"missing\.mp4: missing_file"):
        qa.answer(d / "missing.mp4", Q1, max_new_tokens=N)
    junk = d / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(DataError, match=r"junk\.mp4: not_a_video"):
        qa.answer(junk, Q1, max_new_tokens=N)
    cut = d / "cut.mp4"
    cut.write_bytes(videos["a"].read_bytes()[:600])
    with pytest.raises(DataError, match=r"cut\.mp4: corrupt_video"):
        qa.answer(cut, Q1, max_new_tokens=N)
    assert not list((d / "cache").rglob("*.tmp"))


@pytest.fixture(scope="module")
def checkpoint(env):
    """The tiny model saved as an Hour-LLaVA HF directory, tokenizer files alongside."""
    pytest.importorskip("hourllava_jax.convert.hour_llava_keys")
    from hourllava_jax.convert import save_pretrained

    d, cfg, model, tok, _, _ = env
    path = save_pretrained(model, cfg, d / "ckpt")
    tok.save_pretrained(str(path))
    return path


def test_from_pretrained_and_cli_give_the_same_answer(env, checkpoint, capsys):
    d, _, _, _, videos, qa = env
    ref = qa.answer(videos["a"], Q1, max_new_tokens=N)
    loaded = VideoQA.from_pretrained(checkpoint, cache_dir=d / "cache")
    got = loaded.answer(videos["a"], Q1, max_new_tokens=N)
    np.testing.assert_array_equal(got.token_ids, ref.token_ids)
    assert got.source == "disk"  # same vision tower -> same fingerprint -> the earlier entry

    from hourllava_jax.infer.cli import main

    rc = main(["--checkpoint", str(checkpoint), "--video", str(videos["a"]), "--question", Q1, "--question", Q1,
               "--max-new-tokens", str(N), "--cache-dir", str(d / "cache")])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out == f"{ref.text}\n{ref.text}\n"
    assert "16 frames" in out.err and "features: disk" in out.err and "features: memory" in out.err
    rc = main(["--checkpoint", str(checkpoint), "--video", str(d / "nope.mp4"), "--question", Q1])
    assert rc == 2 and "nope.mp4: missing_file" in capsys.readouterr().err


def test_null_eos_in_config_falls_back_to_im_end(env, checkpoint, tmp_path, capsys):
    """``"eos_token_id": null`` is valid for transformers: the answer CLI ends turns at the
    tokenizer's <|im_end|> (id 2 here, the tiny config's own eos: same answer as before)."""
    import json
    import shutil

    from hourllava_jax.convert.hf_config import llm_from_hf_config
    from hourllava_jax.data.tokenizer import chat_token_ids
    from hourllava_jax.infer.cli import main

    d, _, _, tok, videos, qa = env
    ckpt = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    hf = json.loads((ckpt / "config.json").read_text())
    hf["eos_token_id"] = None
    (ckpt / "config.json").write_text(json.dumps(hf))
    assert llm_from_hf_config(hf).eos_ids == ()
    loaded = VideoQA.from_pretrained(ckpt)
    assert loaded.eos_ids == (chat_token_ids(tok).im_end,)
    ref = qa.answer(videos["a"], Q1, max_new_tokens=N)
    rc = main(["--checkpoint", str(ckpt), "--video", str(videos["a"]), "--question", Q1, "--max-new-tokens", str(N), "--quiet"])
    assert rc == 0 and capsys.readouterr().out == f"{ref.text}\n"


def test_too_long_prompt_is_an_error_not_a_silent_cut(env):
    import dataclasses

    _, cfg, model, tok, videos, _ = env
    short = VideoQA(model, dataclasses.replace(cfg, max_length=60), tok)
    with pytest.raises(DataError, match=r"a\.mp4: too_long: .* exceed max_length 60"):
        short.answer(videos["a"], Q1, max_new_tokens=N)
