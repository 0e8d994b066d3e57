"""The batched memory stage (host plan :mod:`memory.layout` + in-graph :mod:`memory.gather`)
against the single-sample specification :mod:`memory.reference`: the same memory, decayed
tokens and positions, bit for bit, for every forgetting mode the batched path supports."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.config import ConfigError, HourLlavaConfig, MemoryConfig, from_dict
from hourllava_jax.memory.gather import gather_decayed, gather_memory
from hourllava_jax.memory.layout import collate_layouts, multi_image_layout, video_layout
from hourllava_jax.memory.reference import build_multi_image_memory, build_video_memory
from hourllava_jax.memory.resize import repeat_indices

H = 6


def _batched(layouts, projected, newline):
    """Collate, gather; returns per-sample (memory, memory_pos, [(decayed, positions) per block])."""
    lay = collate_layouts(layouts, memory_multiple=16, decayed_multiple=8)
    mem, valid = gather_memory(projected, jnp.asarray(lay.memory_src), newline)
    dec, dpos, dvalid = gather_decayed(mem, jnp.asarray(lay.memory_pos), jnp.asarray(lay.decayed))
    out = []
    for i, l in enumerate(layouts):
        m = l.num_memory
        assert bool(valid[i, :m].all()) and not bool(valid[i, m:].any())
        assert not np.asarray(mem[i, m:]).any()  # padding slots are zero
        blocks = [(np.asarray(dec[i, j][dvalid[i, j]]), np.asarray(dpos[i, j][dvalid[i, j]])) for j in range(len(l.decayed))]
        out.append((np.asarray(mem[i, :m]), np.asarray(lay.memory_pos[i, :m]), blocks))
    return out


VIDEO_CASES = [
    dict(),  # the recipe's default: uniform temporal, uniform spatial
    dict(spatial_mode="random"),
    dict(temporal_mode="random", spatial_mode="random"),
    dict(temporal_mode="keyframe"),
    dict(temporal_forgetting=False),  # stage 1
]


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_video_layout_and_gather_equal_build_video_memory(case):
    cfg = dataclasses.replace(MemoryConfig(pool_size=4, min_frames=12, temporal_ratio=2, keyframe_window=3), **case)
    rng = np.random.default_rng(0)
    lengths = (7, 20)  # one video repeated up to min_frames, one longer
    frames = [jnp.asarray(rng.standard_normal((t, 16, H)), jnp.float32) for t in lengths]
    newline = jnp.asarray(rng.standard_normal(H), jnp.float32)
    keys = [jax.random.key(s) for s in (1, 2)]
    layouts = [video_layout(t, cfg, key=k, frame_emb=np.asarray(f.mean(axis=1))) for t, f, k in zip(lengths, frames, keys)]
    units = max(lengths)
    projected = jnp.zeros((2, units * 16, H), jnp.float32)
    for i, f in enumerate(frames):
        projected = projected.at[i, : f.shape[0] * 16].set(f.reshape(-1, H))
    for (mem, pos, blocks), f, k, l in zip(_batched(layouts, projected, newline), frames, keys, layouts):
        ref = build_video_memory(f, newline, cfg, rng=k)
        np.testing.assert_array_equal(mem, ref.memory)
        np.testing.assert_array_equal(pos, ref.memory_positions)
        (dec, dpos), = blocks
        np.testing.assert_array_equal(dec, ref.decayed)
        np.testing.assert_array_equal(dpos, ref.decayed_positions)
        # the layout reports input frames; the reference, frames after repetition
        np.testing.assert_array_equal(l.frame_indices, repeat_indices(f.shape[0], cfg.min_frames)[np.asarray(ref.frame_indices)])


@pytest.mark.parametrize("mode", ["uniform", "random"])
def test_multi_image_layout_and_gather_equal_build_multi_image_memory(mode):
    cfg = MemoryConfig(spatial_mode=mode)
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.standard_normal((3, 16, H)), jnp.float32)
    newline = jnp.asarray(rng.standard_normal(H), jnp.float32)
    key = jax.random.key(5)
    lay = multi_image_layout(3, 16, cfg, key=key)
    (mem, pos, blocks), = _batched([lay], images.reshape(1, -1, H), newline)
    ref = build_multi_image_memory(images, newline, keep_ratio=cfg.spatial_keep_ratio, mode=mode, rng=key)
    np.testing.assert_array_equal(mem, ref.memory)
    np.testing.assert_array_equal(pos, ref.memory_positions)
    for j, (dec, dpos) in enumerate(blocks):
        np.testing.assert_array_equal(dec, ref.query[j])
        np.testing.assert_array_equal(dpos, ref.query_positions[j])


def test_question_mode_is_rejected_by_the_batched_path_and_kept_by_the_reference():
    cfg = MemoryConfig(pool_size=4, min_frames=0, temporal_mode="question")
    for build in (lambda: from_dict(MemoryConfig, {"temporal_mode": "question"}),
                  lambda: HourLlavaConfig(memory=cfg).validate(),
                  lambda: video_layout(8, cfg)):
        with pytest.raises(ConfigError, match="memory.temporal_mode: 'question'"):
            build()
    # stage 1 never chooses frames, so the mode is irrelevant there
    video_layout(8, dataclasses.replace(cfg, temporal_forgetting=False))
    x = jnp.ones((8, 16, H), jnp.float32)
    vm = build_video_memory(x, jnp.zeros(H), cfg, question_emb=jnp.ones((2, H)))
    assert vm.frame_indices.shape == (2,)
