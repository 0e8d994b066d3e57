"""The assembled model: batched, padded forward == a literal single-sample reference (design §1.2, §2.4)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.model.hour_llava import HourLlava, lm_loss, loss_fn
from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import video_layout
from hourllava_jax.memory.reference import build_video_memory

IMG = -200


@nnx.jit
def _forward(model, batch):
    return model(batch)


def _sample(rng, cfg, frames, length, ph_at, supervised_from):
    ids = rng.integers(3, cfg.llm.vocab_size, length).astype(np.int32)
    ids[ph_at] = IMG
    labels = np.where(np.arange(length) >= supervised_from, ids, -100).astype(np.int32)
    p2 = cfg.memory.pool_size**2
    feats = rng.standard_normal((frames, p2, cfg.vision.hidden_size)).astype(np.float32)
    return Sample(ids, labels, feats, video_layout(frames, cfg.memory))


def _reference_logits(model, cfg, s: Sample) -> np.ndarray:
    """One sample, no padding, written from design §2, §2.4 with the standalone memory builder."""
    projected = model.project(jnp.asarray(s.features))
    vm = build_video_memory(projected, model.image_newline[...], cfg.memory)
    ids, labels = s.input_ids, s.labels
    ph = int(np.flatnonzero(ids == IMG)[0])
    emb = model.llm.embed(jnp.asarray(np.where(ids == IMG, 0, ids))[None])[0]
    pre = [t for t in range(ph) if labels[t] == -100]
    post = [t for t in range(ph + 1, len(ids)) if labels[t] == -100]
    n0 = len(pre)
    dpos = np.asarray(vm.decayed_positions) + n0  # maxp + 1 = n0 after the prefix
    post_pos = np.arange(len(post)) + dpos.max() + 1
    q = jnp.concatenate([emb[np.array(pre, int)], vm.decayed, emb[np.array(post, int)]])
    qpos = np.concatenate([np.arange(n0), dpos, post_pos]).astype(np.int32)
    out = model.memaug(q[None], vm.memory[None], jnp.asarray(qpos)[None], vm.memory_positions[None])[0]
    visual = out[n0 : n0 + len(dpos)]
    x = jnp.concatenate([emb[:ph], visual, emb[ph + 1 :]])
    return np.asarray(model.llm(inputs_embeds=x[None], positions=jnp.arange(x.shape[0])[None])[0])


def test_padded_batch_matches_single_sample_reference(cfg, model):
    rng = np.random.default_rng(0)
    samples = [_sample(rng, cfg, 20, 30, 9, 14), _sample(rng, cfg, 9, 23, 4, 12)]
    batch = {k: jnp.asarray(v) for k, v in collate(samples).items()}
    logits, labels = _forward(model, batch)
    for i, s in enumerate(samples):
        ref = _reference_logits(model, cfg, s)
        n = ref.shape[0]
        np.testing.assert_allclose(np.asarray(logits[i, :n]), ref, atol=2e-5, rtol=1e-5)
        assert (np.asarray(labels[i, n:]) == -100).all()
        # Each sample alone (different padding) gives the same logits.
        alone, _ = _forward(model, {k: jnp.asarray(v) for k, v in collate([s]).items()})
        np.testing.assert_allclose(np.asarray(alone[0, :n]), np.asarray(logits[i, :n]), atol=2e-5, rtol=1e-5)


def test_labels_follow_the_splice(cfg, model):
    rng = np.random.default_rng(1)
    s = _sample(rng, cfg, 16, 20, 3, 10)
    batch = {k: jnp.asarray(v) for k, v in collate([s]).items()}
    _, labels = _forward(model, batch)
    n_vis = len(s.layout.decayed[0])
    want = np.concatenate([s.labels[:3], np.full(n_vis, -100), s.labels[4:]])
    np.testing.assert_array_equal(np.asarray(labels[0, : len(want)]), want)


def test_gradients_reach_every_trainable_part(cfg):
    model = HourLlava(cfg, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(2)
    s = _sample(rng, cfg, 8, 20, 2, 8)
    batch = {k: jnp.asarray(v) for k, v in collate([s]).items()}
    del batch["features"]  # through the vision tower: pixels per frame
    size = cfg.vision.image_size
    batch["pixels"] = jnp.asarray(rng.standard_normal((1, 16, size, size, 3)).astype(np.float32))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def f(p):
        return loss_fn(nnx.merge(graphdef, p, rest), batch)[0]

    grads = jax.jit(jax.grad(f))(params)
    norms = {k: float(optax_norm(v)) for k, v in grads.items()}
    for part in ("vision_tower", "projector", "image_newline", "memaug", "llm"):
        assert norms[part] > 0, (part, norms)


def optax_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_without_memaug_is_the_decayed_token_ablation(cfg):
    c = dataclasses.replace(cfg, use_memaug=False)
    model = HourLlava(c, rngs=nnx.Rngs(0))
    assert model.memaug is None
    rng = np.random.default_rng(3)
    s = _sample(rng, c, 8, 16, 2, 8)
    batch = {k: jnp.asarray(v) for k, v in collate([s]).items()}
    x = model.llm_inputs(batch)
    vm = build_video_memory(model.project(jnp.asarray(s.features)), model.image_newline[...], c.memory)
    n = len(s.layout.decayed[0])
    np.testing.assert_allclose(np.asarray(x.embeds[0, 2 : 2 + n]), np.asarray(vm.decayed), atol=1e-6)


def test_text_only_batch_skips_the_visual_path(cfg, model):
    ids = np.arange(3, 15, dtype=np.int32)
    batch = {k: jnp.asarray(v) for k, v in collate([Sample(ids, ids)]).items()}
    logits, labels = model(batch)
    ref = model.llm(jnp.asarray(ids)[None])
    np.testing.assert_allclose(np.asarray(logits[0, :12]), np.asarray(ref[0]), atol=1e-5)
    loss, n = lm_loss(logits, labels)
    assert int(n) == 11 and np.isfinite(float(loss))


def test_placeholder_count_must_match_visual_inputs(cfg):
    rng = np.random.default_rng(4)
    s = _sample(rng, cfg, 8, 16, 2, 8)
    bad = dataclasses.replace(s, input_ids=np.where(s.input_ids == IMG, 5, s.input_ids))
    with pytest.raises(ValueError, match="0 <image> placeholder"):
        collate([bad])


def test_one_compile_per_bucket(cfg, model):
    """Samples of different lengths that fall in one bucket reuse the compiled program."""
    rng = np.random.default_rng(5)

    @nnx.jit
    def fwd(m, b):
        return m(b)

    shapes = set()
    for frames, length, ph in ((12, 30, 3), (16, 41, 7), (9, 25, 2)):
        batch = {k: jnp.asarray(v) for k, v in collate([_sample(rng, cfg, frames, length, ph, ph + 4)]).items()}
        shapes.add(tuple(sorted((k, v.shape) for k, v in batch.items())))
        fwd(model, batch)
    assert len(shapes) == 1
    assert fwd.jitted_fn._cache_size() == 1


def test_bf16_compute_tracks_fp32(cfg):
    m32 = HourLlava(cfg, rngs=nnx.Rngs(7))
    m16 = HourLlava(dataclasses.replace(cfg, dtype="bfloat16"), rngs=nnx.Rngs(7))
    rng = np.random.default_rng(6)
    batch = {k: jnp.asarray(v) for k, v in collate([_sample(rng, cfg, 8, 20, 2, 8)]).items()}
    l32 = np.asarray(_forward(m32, batch)[0])
    l16 = np.asarray(_forward(m16, batch)[0]).astype(np.float32)
    assert _forward(m16, batch)[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(l16, l32, atol=0.1)


def test_every_parameter_has_logical_axes_from_the_vocabulary(cfg):
    from hourllava_jax.parallel import axes

    names = {v for k, v in vars(axes).items() if k.isupper() and isinstance(v, str)}
    abstract = nnx.eval_shape(lambda: HourLlava(cfg, rngs=nnx.Rngs(0)))
    for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        ax = v.get_metadata().get("out_sharding")
        assert ax is not None and len(ax) == len(v.get_value().shape), path
        assert all(a is None or a in names for a in ax), (path, ax)


def test_attention_impl_and_block_sizes_come_from_the_config(cfg, model):
    """chunked attention with small configured tiles (several KV chunks per row) == the reference."""
    from hourllava_jax.kernels import BlockSizes

    c = dataclasses.replace(cfg, attention_impl="chunked", attention_block_sizes=(8, 16))
    m = HourLlava(c, rngs=nnx.Rngs(0))
    assert m.llm.layers[0].self_attn.attention_blocks == BlockSizes(8, 16)
    assert m.vision_tower.encoder.layers[0].self_attn.attention_blocks == BlockSizes(8, 16)
    assert m.memaug.dims.attention_blocks == BlockSizes(8, 16)
    ref = HourLlava(dataclasses.replace(cfg, attention_impl="reference"), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(8)
    batch = {k: jnp.asarray(v) for k, v in collate([_sample(rng, cfg, 12, 30, 3, 9)]).items()}
    np.testing.assert_allclose(np.asarray(_forward(m, batch)[0]), np.asarray(_forward(ref, batch)[0]), atol=2e-5, rtol=1e-5)
