"""Images in the batched model (design §1.4): anyres and multi-image samples, padded and batched
with videos, give the logits of a literal single-sample reference built from ``anyres.py``.

Tiny geometry: crops of 112 px (SigLIP patch 14 -> g = 8, 64 tokens per crop), pinpoints
(i*112, j*112), at most 9 crops before the grid is downscaled.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hourllava_jax.data.anyres import anyres_grid_shape
from hourllava_jax.memory.image_grid import unpad_slices
from hourllava_jax.memory.reference import anyres_grid_features, build_anyres_memory, build_multi_image_memory
from hourllava_jax.model.hour_llava import HourLlava
from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import NEWLINE, PAD, image_layout, multi_image_layout, video_layout
from hourllava_jax.memory.reference import build_video_memory

IMG = -200
G, CROP = 8, 112  # tiny: 112 px crops of 14 px patches


@nnx.jit
def _forward(model, batch):
    return model(batch)


def _random_mode(cfg):
    return dataclasses.replace(cfg.memory, spatial_mode="random")


def _text(rng, cfg, length, placeholders, supervised):
    ids = rng.integers(3, cfg.llm.vocab_size, length).astype(np.int32)
    ids[list(placeholders)] = IMG
    labels = np.full(length, -100, np.int32)
    labels[list(supervised)] = ids[list(supervised)]
    return ids, labels


def _anyres_sample(rng, cfg, size, key, length, ph_at):
    npw, nph = anyres_grid_shape(size, cfg.memory.image_grid_pinpoints_max, CROP)
    feats = rng.standard_normal((1 + npw * nph, G * G, cfg.vision.hidden_size)).astype(np.float32)
    ids, labels = _text(rng, cfg, length, [ph_at], range(ph_at + 6, length))
    return Sample(ids, labels, feats, image_layout(size, (npw, nph), G, _random_mode(cfg), key=key)), (npw, nph)


# ------------------------------------------------------------------ the literal references


def _reference_logits(model, ids, labels, memory, memory_pos, blocks) -> np.ndarray:
    """design §2.4 written out for one unpadded sample. blocks: per placeholder, (decayed tokens
    float[N, H], their memory ids int[N]). The query and the LLM input are listed on the host as
    rows of [text embeddings; decayed tokens] and of [text embeddings; MemAug output]."""
    ph = np.flatnonzero(ids == IMG)
    assert len(ph) == len(blocks)
    length, bounds = len(ids), [-1, *ph.tolist(), len(ids)]
    q_rows, pos, spans, maxp, n_dec = [], [], [], -1, 0
    for i in range(len(bounds) - 1):
        seg = [t for t in range(bounds[i] + 1, bounds[i + 1]) if labels[t] == -100]
        q_rows += seg
        pos.append(np.arange(len(seg)) + maxp + 1)  # P += arange(len(s_i)) + maxp + 1
        maxp = pos[-1].max() if seg else maxp
        if i < len(blocks):
            dpos = np.asarray(blocks[i][1])
            spans.append(np.arange(len(q_rows), len(q_rows) + len(dpos)))
            q_rows += list(length + n_dec + np.arange(len(dpos)))
            pos.append(dpos + maxp + 1)
            maxp, n_dec = pos[-1].max(), n_dec + len(dpos)
    llm_rows, prev = [], 0
    for span, t in zip(spans, ph):
        llm_rows += [*range(prev, t), *(length + span)]
        prev = t + 1
    llm_rows += list(range(prev, length))
    decayed = jnp.concatenate([jnp.asarray(d) for d, _ in blocks])
    return np.asarray(_memaug_then_llm(model, jnp.asarray(np.where(ids == IMG, 0, ids)), decayed, jnp.asarray(q_rows),
                                       jnp.asarray(np.concatenate(pos), jnp.int32), memory,
                                       jnp.asarray(memory_pos, jnp.int32), jnp.asarray(llm_rows)))


@nnx.jit
def _memaug_then_llm(model, ids, decayed, q_rows, q_pos, memory, memory_pos, llm_rows):
    emb = model.llm.embed(ids[None])[0]
    q = jnp.concatenate([emb, decayed])[q_rows]
    out = model.memaug(q[None], memory[None], q_pos[None], memory_pos[None])[0]
    x = jnp.concatenate([emb, out])[llm_rows]
    return model.llm(inputs_embeds=x[None], positions=jnp.arange(x.shape[0])[None])[0]


def _anyres_reference(model, cfg, s, num_patches, size, key):
    proj = model.project(jnp.asarray(s.features))  # [1 + crops, g², H]
    grid = anyres_grid_features(proj[1:], num_patches, size, max_crops=cfg.memory.image_max_crops)
    m = build_anyres_memory(proj[0], grid, model.image_newline[...], keep_ratio=cfg.memory.spatial_keep_ratio,
                            mode="random", rng=key)
    return _reference_logits(model, s.input_ids, s.labels, m.memory, m.memory_positions, [(m.query, m.query_positions)])


def _check(logits, labels, i, ref):
    n = ref.shape[0]
    np.testing.assert_allclose(np.asarray(logits[i, :n]), ref, atol=2e-5, rtol=1e-5)
    assert (np.asarray(labels[i, n:]) == -100).all()


# ------------------------------------------------------------------ batched == reference


def test_anyres_images_and_a_video_in_one_batch(cfg, model):
    rng = np.random.default_rng(0)
    small, big = (200, 150), (600, 400)  # 12x16 grid kept as is; 32x48 downscaled to 19x29
    ka, kb = jax.random.key(1), jax.random.key(2)
    sa, pa = _anyres_sample(rng, cfg, small, ka, 24, 5)
    sb, pb = _anyres_sample(rng, cfg, big, kb, 20, 3)
    assert sa.layout.num_memory == G * G + 12 * 17 and sb.layout.num_memory == G * G + 19 * 30
    ids, labels = _text(rng, cfg, 26, [7], range(12, 26))
    frames = rng.standard_normal((20, cfg.memory.pool_size**2, cfg.vision.hidden_size)).astype(np.float32)
    sv = Sample(ids, labels, frames, video_layout(20, cfg.memory))
    batch = collate([sa, sv, sb])
    assert batch["memory_src"].shape[-1] == 4 and batch["features"].shape[2] == G * G  # video packed into 64-token units
    logits, out_labels = _forward(model, {k: jnp.asarray(v) for k, v in batch.items()})

    _check(logits, out_labels, 0, _anyres_reference(model, cfg, sa, pa, small, ka))
    _check(logits, out_labels, 2, _anyres_reference(model, cfg, sb, pb, big, kb))
    vm = build_video_memory(model.project(jnp.asarray(frames)), model.image_newline[...], cfg.memory)
    _check(logits, out_labels, 1, _reference_logits(model, ids, labels, vm.memory, vm.memory_positions,
                                                    [(vm.decayed, vm.decayed_positions)]))


def test_multi_image_sample_alone_and_next_to_an_anyres_image(cfg, model):
    rng = np.random.default_rng(1)
    key = jax.random.key(5)
    ids, labels = _text(rng, cfg, 30, [4, 15], [*range(9, 12), *range(22, 30)])
    feats = rng.standard_normal((2, G * G, cfg.vision.hidden_size)).astype(np.float32)
    sm = Sample(ids, labels, feats, multi_image_layout(2, G * G, _random_mode(cfg), key=key))
    proj = model.project(jnp.asarray(feats))
    m = build_multi_image_memory(proj, model.image_newline[...], keep_ratio=cfg.memory.spatial_keep_ratio, rng=key)
    ref = _reference_logits(model, ids, labels, m.memory, m.memory_positions,
                            [(m.query[i], m.query_positions[i]) for i in range(2)])
    alone = collate([sm])
    assert "memory_w" not in alone and alone["memory_src"].ndim == 2  # 1-tap gather path
    logits, out_labels = _forward(model, {k: jnp.asarray(v) for k, v in alone.items()})
    _check(logits, out_labels, 0, ref)
    # Next to an anyres image the batch takes the 4-tap path; the multi-image sample is unchanged.
    sa, _ = _anyres_sample(rng, cfg, (300, 120), jax.random.key(6), 16, 2)
    mixed = collate([sa, sm])
    assert mixed["memory_src"].shape[-1] == 4
    logits, out_labels = _forward(model, {k: jnp.asarray(v) for k, v in mixed.items()})
    _check(logits, out_labels, 1, ref)


# ------------------------------------------------------------------ layouts == anyres.py


def _tap_memory(layout, flat, newline):
    """The memory a layout describes, in numpy: slot = sum_t w_t * flat[src_t], newline slots."""
    src, w = layout.memory_src, layout.memory_w
    mem = np.einsum("mt,mtc->mc", np.where(src >= 0, w, 0), flat[np.clip(src, 0, None)])
    mem[src[:, 0] == NEWLINE] = newline
    assert not (src[:, 0] == PAD).any()
    return mem


@pytest.mark.parametrize("size,g,crop,mode,scaled", [
    ((200, 150), 8, 112, "random", False),    # rows cut by unpadding, no downscale
    ((150, 400), 8, 112, "uniform", False),   # columns cut, no downscale
    ((600, 400), 8, 112, "random", True),     # downscaled 32x48 -> 19x29
    ((700, 260), 8, 112, "uniform", True),    # unpadded and downscaled
    ((1920, 1080), 27, 384, "random", True),  # release geometry: 6x4 crops of 27², downscaled
])
def test_image_layout_is_build_anyres_memory(cfg, size, g, crop, mode, scaled):
    mc = dataclasses.replace(cfg.memory, spatial_mode=mode)
    npw, nph = anyres_grid_shape(size, mc.image_grid_pinpoints_max, crop)
    x = np.random.default_rng(0).standard_normal((1 + npw * nph, g * g, 3)).astype(np.float32)
    nl = np.array([7.0, -8.0, 9.0], np.float32)
    key = jax.random.key(3)
    lay = image_layout(size, (npw, nph), g, mc, key=key)
    grid = anyres_grid_features(jnp.asarray(x[1:]), (npw, nph), size, max_crops=mc.image_max_crops)
    ref = build_anyres_memory(jnp.asarray(x[0]), grid, jnp.asarray(nl), keep_ratio=mc.spatial_keep_ratio, mode=mode, rng=key)
    h, w = grid.shape[:2]
    # Positions: identical ids, every newline id h*w, base ids shared with grid tokens.
    np.testing.assert_array_equal(lay.memory_pos, np.asarray(ref.memory_positions))
    assert (lay.memory_pos[g * g:].reshape(h, w + 1)[:, w] == h * w).all()
    mem = _tap_memory(lay, x.reshape(-1, 3), nl)
    rows, cols = unpad_slices(nph * g, npw * g, size)
    assert scaled == ((h, w) != (len(range(nph * g)[rows]), len(range(npw * g)[cols])))
    if scaled:  # a bilinear mix: weights of a token sum to 1
        np.testing.assert_allclose(mem, np.asarray(ref.memory), atol=1e-5)
        grid_w = lay.memory_w[g * g:].reshape(h, w + 1, 4)[:, :w]
        np.testing.assert_allclose(grid_w.sum(-1), 1.0, atol=1e-6)
    else:  # a pure gather: one tap of weight 1, bit-exact
        assert (lay.memory_src[:, 1:] == PAD).all() and (lay.memory_w[:, 0] == 1).all()
        np.testing.assert_array_equal(mem, np.asarray(ref.memory))
    # Query: the decayed slots carry exactly the reference's query tokens and ids.
    (dec,) = lay.decayed
    np.testing.assert_array_equal(lay.memory_pos[dec], np.asarray(ref.query_positions))
    np.testing.assert_allclose(mem[dec], np.asarray(ref.query), atol=1e-5)


@pytest.mark.parametrize("mode", ["random", "uniform"])
def test_multi_image_layout_is_build_multi_image_memory(cfg, mode):
    mc = dataclasses.replace(cfg.memory, spatial_mode=mode)
    x = np.random.default_rng(1).standard_normal((3, 81, 2)).astype(np.float32)
    key = jax.random.key(4)
    lay = multi_image_layout(3, 81, mc, key=key)
    ref = build_multi_image_memory(jnp.asarray(x), jnp.array([5.0, 6.0]), keep_ratio=mc.spatial_keep_ratio, mode=mode, rng=key)
    np.testing.assert_array_equal(lay.memory_pos, np.asarray(ref.memory_positions))
    flat = np.concatenate([x.reshape(-1, 2), [[5.0, 6.0]]])
    mem = flat[np.where(lay.memory_src == NEWLINE, len(flat) - 1, lay.memory_src)]
    np.testing.assert_array_equal(mem, np.asarray(ref.memory))
    for i, d in enumerate(lay.decayed):
        np.testing.assert_array_equal(lay.memory_pos[d], np.asarray(ref.query_positions[i]))
        np.testing.assert_array_equal(mem[d], np.asarray(ref.query[i]))


def test_collate_packs_smaller_units_and_keeps_videos_one_tap(cfg):
    rng = np.random.default_rng(2)
    p2 = cfg.memory.pool_size**2
    frames = rng.standard_normal((9, p2, 5)).astype(np.float32)
    video = Sample(np.array([1, IMG, 2], np.int32), None, frames, video_layout(9, cfg.memory))
    only = collate([video])
    assert "memory_w" not in only and only["memory_src"].shape == (1, 384) and only["features"].shape == (1, 16, p2, 5)
    image = Sample(np.array([IMG], np.int32), None, rng.standard_normal((5, 64, 5)).astype(np.float32),
                   image_layout((200, 150), (2, 2), 8, cfg.memory))
    b = collate([image, video], unit_multiple=1)
    assert b["features"].shape == (2, 5, 64, 5)  # the video's 9 x 16 tokens fill 3 units of 64
    np.testing.assert_array_equal(b["features"][1].reshape(-1, 5)[: 9 * p2], frames.reshape(-1, 5))
    assert not b["features"][1].reshape(-1, 5)[9 * p2:].any()
    # The video's slots become tap 0 with weight 1.
    v = only["memory_src"][0]
    np.testing.assert_array_equal(b["memory_src"][1, :, 0][: v.shape[0]], v)
    assert (b["memory_w"][1, :, 0][v != PAD] == 1).all() and (b["memory_src"][1, :, 1:] == PAD).all()
    with pytest.raises(ValueError, match="do not match"):
        collate([image, dataclasses.replace(video, features=frames[..., :4])])


def test_image_pixels_through_the_unpooled_tower(cfg, model):
    """``pixels`` of [base, crops...] with ``video=False``: the tower's g² tokens per crop feed
    the same layout (no pooling, design §1.2)."""
    rng = np.random.default_rng(3)
    key = jax.random.key(7)
    size = (150, 250)
    npw, nph = anyres_grid_shape(size, cfg.memory.image_grid_pinpoints_max, CROP)
    pixels = rng.standard_normal((1 + npw * nph, CROP, CROP, 3)).astype(np.float32)
    ids, labels = _text(rng, cfg, 14, [3], range(9, 14))
    lay = image_layout(size, (npw, nph), G, _random_mode(cfg), key=key)
    batch = collate([Sample(ids, labels, np.zeros((1 + npw * nph, G * G, 1), np.float32), lay)])
    del batch["features"]
    batch["pixels"] = pixels[None]
    logits, out_labels = nnx.jit(lambda m, b: m(b, video=False))(model, {k: jnp.asarray(v) for k, v in batch.items()})
    feats = np.asarray(model.vision_tower(jnp.asarray(pixels)))  # [crops, 64, C]
    assert feats.shape == (1 + npw * nph, G * G, cfg.vision.hidden_size)
    ref = _anyres_reference(model, cfg, Sample(ids, labels, feats, lay), (npw, nph), size, key)
    _check(logits, out_labels, 0, ref)
