"""Qwen2 decoder: fp32 parity with HF Qwen2ForCausalLM, padding, KV cache, conversion, axes, remat."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.convert.mapping import tensors_from_params
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules
from hourllava_jax.model.qwen2 import Qwen2

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the helper importable
from qwen2_ref import hf_twin, tiny_cfg, to_np  # noqa: E402

TOL = 2e-5  # logits are O(1); fp32 implementations agree to ~1e-7 (design §8.5)


@pytest.mark.parametrize(
    "tie,heads,kv_heads,impl",
    [(False, 4, 2, "reference"), (True, 4, 1, "chunked"), (False, 6, 2, "chunked"), (True, 6, 6, "reference")],
)
def test_logits_match_hf(torch_fp32, rng, tie, heads, kv_heads, impl):
    torch = torch_fp32
    cfg = tiny_cfg(tie_word_embeddings=tie, num_attention_heads=heads, num_key_value_heads=kv_heads, hidden_size=16 * heads)
    hf, model = hf_twin(cfg, torch, attention_impl=impl)
    ids = rng.integers(0, cfg.vocab_size, (2, 21))
    ref = to_np(hf(torch.tensor(ids)).logits)
    out = np.asarray(model(jnp.asarray(ids, jnp.int32)))
    assert out.shape == ref.shape == (2, 21, cfg.vocab_size)
    assert np.abs(ref).max() > 0.3  # outputs of order 1, so the tolerance is meaningful
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)
    # hidden_states + logits is the same computation split in two (Hour-LLaVA uses both).
    np.testing.assert_allclose(np.asarray(model.logits(model.hidden_states(jnp.asarray(ids)))), out, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def twin(torch_fp32):
    return hf_twin(tiny_cfg(), torch_fp32, attention_impl="chunked")


def test_right_padding_matches_hf_on_valid_positions(torch_fp32, rng, twin):
    torch = torch_fp32
    hf, model = twin
    ids = rng.integers(1, 97, (3, 17))
    lens = np.array([17, 11, 4])
    mask = np.arange(17)[None] < lens[:, None]
    ref = to_np(hf(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))).logits)
    out = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    np.testing.assert_allclose(out[mask], ref[mask], atol=TOL, rtol=0)
    # Right padding never changes a valid position: same as each row alone.
    alone = np.asarray(model(jnp.asarray(ids[2:, :4])))
    np.testing.assert_allclose(out[2, :4], alone[0], atol=1e-5, rtol=0)


def test_long_positions_match_hf(torch_fp32, rng, twin):
    """Hour-LLaVA prompts reach 32k positions: RoPE angles must agree there too (fp32 angles)."""
    torch = torch_fp32
    hf, model = twin
    ids = rng.integers(0, 97, (1, 8))
    pos = np.array([[0, 1, 2, 9000, 9001, 20000, 32000, 32767]])
    ref = to_np(hf(torch.tensor(ids), position_ids=torch.tensor(pos)).logits)
    out = np.asarray(model(jnp.asarray(ids), positions=jnp.asarray(pos, jnp.int32)))
    np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_inputs_embeds_equals_input_ids(rng, twin):
    _, model = twin
    ids = jnp.asarray(rng.integers(0, 97, (2, 9)), jnp.int32)
    emb = model.embed(ids)
    assert emb.shape == (2, 9, 64)
    np.testing.assert_array_equal(np.asarray(model(inputs_embeds=emb)), np.asarray(model(ids)))
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=emb)


def test_kv_cache_decoding_equals_full_forward(rng, twin):
    _, model = twin
    ids = jnp.asarray(rng.integers(0, 97, (2, 12)), jnp.int32)
    full = np.asarray(model(ids))
    step = nnx.jit(lambda m, x, c: m(x, cache=c))
    cache = model.init_cache(2, 16)
    logits, cache = step(model, ids[:, :7], cache)  # prefill 7 tokens
    got = [np.asarray(logits)]
    for t in range(7, 12):  # then one token at a time
        logits, cache = step(model, ids[:, t : t + 1], cache)
        got.append(np.asarray(logits))
    assert int(cache.index) == 12 and np.asarray(cache.mask).sum() == 24
    with pytest.raises(ValueError, match="overflow"):
        model(ids[:, :5], cache=cache)  # 12 + 5 > 16 slots
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-5, rtol=0)


def test_left_padded_cache_prefill_matches_hf(torch_fp32, rng, twin):
    """HF's left-padded batch (positions = cumsum(mask) - 1) through the cache path."""
    torch = torch_fp32
    hf, model = twin
    ids = rng.integers(1, 97, (2, 10))
    mask = np.ones((2, 10), bool)
    mask[1, :4] = False
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    ref = to_np(hf(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)), position_ids=torch.tensor(pos)).logits)
    out, _ = model(jnp.asarray(ids), positions=jnp.asarray(pos, jnp.int32), attention_mask=jnp.asarray(mask), cache=model.init_cache(2, 16))
    np.testing.assert_allclose(np.asarray(out)[mask], ref[mask], atol=TOL, rtol=0)


def test_conversion_round_trip_and_rules(torch_fp32, twin):
    hf, model = twin
    cfg = model.cfg
    back = tensors_from_params(model, qwen2_hf_rules(cfg))
    ref = {k: to_np(v) for k, v in hf.state_dict().items()}
    assert set(back) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)
    tied = [r.hf_key for r in qwen2_hf_rules(tiny_cfg(tie_word_embeddings=True), prefix="model.")]
    assert "lm_head.weight" not in tied and len(tied) == len(back) - 1
    nested = qwen2_hf_rules(cfg, prefix="language_model.model.", path_prefix=("llm",))
    assert nested[0].hf_key == "language_model.model.embed_tokens.weight" and nested[0].path == ("llm", "embed_tokens", "embedding")


def test_every_param_has_logical_axes():
    model = Qwen2(tiny_cfg(), rngs=nnx.Rngs(0))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    flat = {tuple(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(specs)}
    want = {
        ("embed_tokens", "embedding"): ("vocab", "embed"),
        ("layers", "0", "self_attn", "q_proj", "kernel"): ("embed", "heads"),
        ("layers", "0", "self_attn", "k_proj", "kernel"): ("embed", "kv_heads"),
        ("layers", "1", "self_attn", "v_proj", "bias"): ("kv_heads",),
        ("layers", "0", "self_attn", "o_proj", "kernel"): ("heads", "embed"),
        ("layers", "0", "mlp", "up_proj", "kernel"): ("embed", "mlp"),
        ("layers", "0", "mlp", "down_proj", "kernel"): ("mlp", "embed"),
        ("layers", "0", "input_layernorm", "weight"): ("norm",),
        ("norm", "weight"): ("norm",),
        ("lm_head", "kernel"): ("embed", "vocab"),
    }
    for path, axes in want.items():
        assert tuple(flat[path]) == axes, path
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert all(getattr(v, "out_sharding", None) for v in leaves)


def test_remat_gives_same_gradients(rng):
    cfg = tiny_cfg()
    ids = jnp.asarray(rng.integers(0, 97, (2, 8)), jnp.int32)

    def grads(remat):
        model = Qwen2(cfg, remat=remat, rngs=nnx.Rngs(1))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        @jax.jit
        def f(params):
            m = nnx.merge(graphdef, params, rest)
            return jnp.mean(jax.nn.log_softmax(m(ids)[:, :-1]) * jax.nn.one_hot(ids[:, 1:], cfg.vocab_size))

        return jax.grad(f)(params)

    g0, g1 = grads(False), grads(True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g0, g1)
    assert float(jnp.abs(g0["layers"][0]["self_attn"]["q_proj"]["kernel"][...]).max()) > 0


def test_bf16_compute_runs_close_to_fp32(rng, twin):
    _, ref_model = twin
    model = Qwen2(tiny_cfg(), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(ref_model, nnx.Param))
    ids = jnp.asarray(rng.integers(0, 97, (1, 16)), jnp.int32)
    out = model(ids)
    assert out.dtype == jnp.bfloat16 and model.init_cache(1, 4).keys[0].dtype == jnp.bfloat16
    assert float(jnp.abs(out.astype(jnp.float32) - ref_model(ids)).max()) < 0.1
