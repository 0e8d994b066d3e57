"""Generation: greedy parity with HF ``generate``, padding, end tokens, sampling, embeddings, streaming."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.infer.generate import generate, sample_next, stream

sys.path.insert(0, str(Path(__file__).parents[1] / "model"))  # --import-mode=importlib: shared helper
from qwen2_ref import hf_twin, tiny_cfg  # noqa: E402

N = 20


@pytest.fixture(scope="module")
def twin(torch_fp32):
    return hf_twin(tiny_cfg(tie_word_embeddings=True, num_key_value_heads=1), torch_fp32, seed=3, attention_impl="chunked", weight_scale=8.0)


@pytest.fixture(scope="module")
def prompt():
    """Two prompts of lengths 9 and 5, left-padded (HF's convention) and right-padded."""
    r = np.random.default_rng(7)
    a, b = r.integers(1, 96, 9), r.integers(1, 96, 5)
    left = np.zeros((2, 9), np.int64)
    left[0], left[1, 4:] = a, b
    right = np.zeros((2, 9), np.int64)
    right[0], right[1, :5] = a, b
    return left, left != 0, right, right != 0


def test_greedy_matches_hf_generate_token_for_token(torch_fp32, twin, prompt):
    torch = torch_fp32
    hf, model = twin
    left, lmask, _, _ = prompt
    hf.generation_config.eos_token_id = None  # no stopping: compare all N tokens
    ref = hf.generate(torch.tensor(left), attention_mask=torch.tensor(lmask.astype(np.int64)), max_new_tokens=N,
                      min_new_tokens=N, do_sample=False, pad_token_id=0).numpy()[:, left.shape[1]:]  # fmt: skip
    out = generate(model, jnp.asarray(left), attention_mask=jnp.asarray(lmask), max_new_tokens=N, eos_ids=())
    assert ref.shape == (2, N) and len(np.unique(ref)) > 3  # a non-degenerate continuation
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)
    np.testing.assert_array_equal(np.asarray(out.lengths), [N, N])


def test_right_padding_and_bucket_do_not_change_tokens(twin, prompt):
    _, model = twin
    left, lmask, right, rmask = prompt
    a = generate(model, jnp.asarray(left), attention_mask=jnp.asarray(lmask), max_new_tokens=N, eos_ids=())
    b = generate(model, jnp.asarray(right), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=(), bucket=16)
    alone = generate(model, jnp.asarray(right[1:, :5]), max_new_tokens=N, eos_ids=())
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.tokens[1:]), np.asarray(alone.tokens))


def test_inputs_embeds_prefill_equals_input_ids(twin, prompt):
    _, model = twin
    _, _, right, rmask = prompt
    ids = generate(model, jnp.asarray(right), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=())
    emb = generate(model, inputs_embeds=model.embed(jnp.asarray(right, jnp.int32)), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=())
    np.testing.assert_array_equal(np.asarray(emb.tokens), np.asarray(ids.tokens))


def test_end_token_stops_row_and_pads(twin, prompt):
    _, model = twin
    _, _, right, rmask = prompt
    free = np.asarray(generate(model, jnp.asarray(right), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=()).tokens)
    eos = int(free[0, 3])  # row 0 emits it at step 3 (or earlier)
    k = int(np.argmax(free[0] == eos))
    out = generate(model, jnp.asarray(right), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=(eos,), pad_id=-1)
    toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
    np.testing.assert_array_equal(toks[0, : k + 1], free[0, : k + 1])
    assert (toks[0, k + 1 :] == -1).all() and lens[0] == k + 1
    k1 = int(np.argmax(free[1] == eos)) if (free[1] == eos).any() else N - 1
    assert lens[1] == k1 + 1
    np.testing.assert_array_equal(toks[1, : k1 + 1], free[1, : k1 + 1])


def test_stream_yields_the_same_tokens(twin, prompt):
    _, model = twin
    _, _, right, rmask = prompt
    kw = dict(attention_mask=jnp.asarray(rmask), max_new_tokens=8, eos_ids=(), temperature=0.7, top_p=0.9, rng=jax.random.key(5))
    full = np.asarray(generate(model, jnp.asarray(right), **kw).tokens)
    steps = list(stream(model, jnp.asarray(right), **kw))
    assert len(steps) == 8
    np.testing.assert_array_equal(np.stack(steps, axis=1), full)


def test_seeded_sampling_is_reproducible_and_seed_dependent(twin, prompt):
    _, model = twin
    _, _, right, rmask = prompt

    def run(seed, **kw):
        kw = dict(attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=(), temperature=1.0, rng=jax.random.key(seed)) | kw
        return np.asarray(generate(model, jnp.asarray(right), **kw).tokens)

    np.testing.assert_array_equal(run(0), run(0))
    assert (run(0) != run(1)).any()
    greedy = np.asarray(generate(model, jnp.asarray(right), attention_mask=jnp.asarray(rmask), max_new_tokens=N, eos_ids=()).tokens)
    np.testing.assert_array_equal(run(2, top_p=1e-6), greedy)  # nucleus of one token = argmax
    with pytest.raises(ValueError, match="rng"):
        generate(model, jnp.asarray(right), max_new_tokens=2, temperature=1.0)


def test_top_p_keeps_the_smallest_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: sample_next(logits, k, 1.0, 0.75))(jax.random.split(jax.random.key(0), 2000))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=4)
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 >= 0.75: only the first two survive
    assert abs(counts[0] / 2000 - 0.625) < 0.05  # renormalised 0.5 / 0.8
