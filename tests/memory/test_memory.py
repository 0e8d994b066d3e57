"""Video memory repository, pooling and forgetting (design §1.2, §2): golden values by hand, torch parity."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.config import MemoryConfig
from hourllava_jax.memory.forgetting import local_avg_cosine, spatial_keep_indices, temporal_frame_indices, uniform_frame_indices
from hourllava_jax.memory.reference import build_video_memory
from hourllava_jax.memory.resize import bilinear_resize, pool_frames, repeat_indices

# Uniform [::2, ::2] of an 8x8 grid, written out: rows 0, 2, 4, 6 x cols 0, 2, 4, 6.
GRID8 = [0, 2, 4, 6, 16, 18, 20, 22, 32, 34, 36, 38, 48, 50, 52, 54]


def _tokens(t, p2=64, h=4, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((t, p2, h)), jnp.float32)


# ------------------------------------------------------------------ pooling and repetition


@pytest.mark.parametrize("shape,size", [((2, 27, 27, 5), 8), ((1, 27, 27, 3), 4), ((1, 5, 7, 2), 8)])
def test_pool_frames_matches_torch_interpolate(shape, size, torch_fp32):
    torch = torch_fp32
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(size, size),
                                           mode="bilinear", align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(shape[0], size * size, shape[-1]).numpy()
    np.testing.assert_allclose(pool_frames(jnp.asarray(x), size), want, atol=1e-5)
    if shape[1] == shape[2]:  # the flat [T, g*g, C] layout gives the same
        flat = jnp.asarray(x.reshape(shape[0], -1, shape[-1]))
        np.testing.assert_allclose(pool_frames(flat, size), want, atol=1e-5)


def test_bilinear_resize_non_square_matches_torch(torch_fp32):
    torch = torch_fp32
    x = np.random.default_rng(1).standard_normal((3, 54, 81, 2)).astype(np.float32)
    for oh, ow in [(20, 31), (54, 27), (60, 90)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(oh, ow), mode="bilinear")
        np.testing.assert_allclose(bilinear_resize(jnp.asarray(x), oh, ow), want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_jax_image_resize_agrees_on_the_27_to_8_pooling(torch_fp32):
    """Records the brief's question: jax.image.resize(antialias=False) equals torch for 27 -> 8."""
    x = np.random.default_rng(2).standard_normal((2, 27, 27, 3)).astype(np.float32)
    ours = pool_frames(jnp.asarray(x), 8).reshape(2, 8, 8, 3)
    theirs = jax.image.resize(jnp.asarray(x), (2, 8, 8, 3), "bilinear", antialias=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("t", [5, 100, 127])
def test_repeat_indices_truncate(t, torch_fp32):
    # Hand rule: floor(i * (T-1) / 127) in exact integer arithmetic (127 is prime, so no ties).
    want = np.array([(i * (t - 1)) // 127 for i in range(128)])
    np.testing.assert_array_equal(repeat_indices(t, 128), want)
    np.testing.assert_array_equal(repeat_indices(t, 128), torch_fp32.linspace(0, t - 1, 128).long().numpy())


def test_repeat_identity_and_disabled():
    np.testing.assert_array_equal(repeat_indices(200, 128), np.arange(200))
    np.testing.assert_array_equal(repeat_indices(8, 0), np.arange(8))
    with pytest.raises(ValueError):
        repeat_indices(0, 128)


# ------------------------------------------------------------------ temporal rule


def test_uniform_frame_indices_rule():
    # T=130: F=32, linspace(0, 129, 32) = floor(i*129/31) (31 prime, no ties); ends on 129.
    want = [(i * 129) // 31 for i in range(32)]
    np.testing.assert_array_equal(uniform_frame_indices(130, 32), want)
    # F=1 (T=6): linspace gives [0] and the last frame is appended; F=0 (T=3): only the last frame.
    np.testing.assert_array_equal(uniform_frame_indices(6, 1), [0, 5])
    np.testing.assert_array_equal(uniform_frame_indices(3, 0), [2])
    np.testing.assert_array_equal(uniform_frame_indices(8, 2), [0, 7])


@pytest.mark.parametrize("t,decayed,memory", [(128, 544, 8320), (600, 2550, 39000), (3600, 8704, 234000), (7200, 8704, 468000)])
def test_spec_table_counts(t, decayed, memory):
    frames = temporal_frame_indices(t, MemoryConfig())
    assert 17 * frames.shape[0] == decayed and 65 * t == memory


# ------------------------------------------------------------------ golden memories


def test_golden_t8_no_repetition():
    cfg = MemoryConfig(min_frames=0)
    x, nl = _tokens(8), jnp.arange(4, dtype=jnp.float32) + 100
    vm = build_video_memory(x, nl, cfg)
    np.testing.assert_array_equal(vm.memory_positions, np.arange(8 * 65))
    assert vm.memory.shape == (520, 4)
    np.testing.assert_array_equal(vm.memory[65 * 3 + 10], x[3, 10])
    np.testing.assert_array_equal(vm.memory[65 * 5 + 64], nl)
    np.testing.assert_array_equal(vm.frame_indices, [0, 7])  # F = 8 // 4 = 2
    want_pos = GRID8 + [64] + [455 + g for g in GRID8] + [455 + 64]
    np.testing.assert_array_equal(vm.decayed_positions, want_pos)
    # Each decayed token is the memory entry its position names.
    np.testing.assert_array_equal(vm.decayed, vm.memory[np.asarray(vm.decayed_positions)])


def test_golden_t130_default_rule():
    x = _tokens(130, h=2)
    vm = build_video_memory(x, jnp.zeros(2), MemoryConfig())
    frames = [(i * 129) // 31 for i in range(32)]
    np.testing.assert_array_equal(vm.frame_indices, frames)
    assert vm.memory.shape == (130 * 65, 2) and vm.decayed.shape == (544, 2)
    want = np.concatenate([[t * 65 + g for g in GRID8] + [t * 65 + 64] for t in frames])
    np.testing.assert_array_equal(vm.decayed_positions, want)
    assert int(vm.decayed_positions[-1]) == 129 * 65 + 64


def test_repetition_to_min_frames_in_build():
    x = _tokens(5, p2=16, h=2)
    cfg = MemoryConfig(pool_size=4, min_frames=16)
    vm = build_video_memory(x, jnp.zeros(2), cfg)
    assert vm.memory.shape == (16 * 17, 2)
    src = [(i * 4) // 15 for i in range(16)]  # linspace(0, 4, 16) truncated
    for i, s in enumerate(src):
        np.testing.assert_array_equal(vm.memory[i * 17 : i * 17 + 16], x[s])


def test_uniform_spatial_general_p_uses_grid():
    idx = spatial_keep_indices(2, 5, 5, 0.25, "uniform")
    np.testing.assert_array_equal(idx[1], [0, 2, 4, 10, 12, 14, 20, 22, 24])  # ceil(5/2)^2 = 9


# ------------------------------------------------------------------ random modes


def test_random_spatial_reproducible_and_independent():
    cfg = MemoryConfig(min_frames=0, spatial_mode="random")
    x = _tokens(16)
    a = build_video_memory(x, jnp.zeros(4), cfg, rng=jax.random.key(0))
    b = build_video_memory(x, jnp.zeros(4), cfg, rng=jax.random.key(0))
    c = build_video_memory(x, jnp.zeros(4), cfg, rng=jax.random.key(1))
    np.testing.assert_array_equal(a.decayed_positions, b.decayed_positions)
    assert not np.array_equal(a.token_indices, c.token_indices)
    tok = np.asarray(a.token_indices)
    assert tok.shape == (4, 16) and np.all(np.diff(tok, axis=1) > 0) and tok.min() >= 0 and tok.max() < 64
    assert len({tuple(r) for r in tok}) == 4  # an independent subset per frame
    np.testing.assert_array_equal(a.decayed, a.memory[np.asarray(a.decayed_positions)])
    with pytest.raises(ValueError, match="RNG key"):
        build_video_memory(x, jnp.zeros(4), cfg)


def test_random_temporal():
    cfg = MemoryConfig(min_frames=0, temporal_mode="random")
    a = temporal_frame_indices(100, cfg, key=jax.random.key(0))
    b = temporal_frame_indices(100, cfg, key=jax.random.key(3))
    assert a.shape == (25,) and np.all(np.diff(np.asarray(a)) > 0) and not np.array_equal(a, b)


# ------------------------------------------------------------------ data-dependent modes


def _orthonormal(n, d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, n)))
    return q.T.astype(np.float32)  # n orthonormal rows


def test_keyframe_picks_planted_scene_changes():
    t, d = 48, 64  # F = 12
    basis = _orthonormal(13, d, 0)
    planted = np.sort(np.random.default_rng(1).choice(t, 12, replace=False))
    emb = np.tile(basis[0], (t, 1))
    emb[planted] = basis[1:]  # each planted frame unlike every neighbour
    x = jnp.asarray(np.repeat(emb[:, None, :], 16, axis=1))  # identical tokens: frame mean = emb
    vm = build_video_memory(x, jnp.zeros(d), MemoryConfig(pool_size=4, min_frames=0, temporal_mode="keyframe"))
    np.testing.assert_array_equal(vm.frame_indices, planted)


def test_local_avg_cosine_by_hand():
    # Frames a, a, b, a with a ⟂ b, window 3: neighbours' mean similarity 1, 1/2, 0, 0.
    a, b = np.eye(2, dtype=np.float32)
    got = local_avg_cosine(jnp.asarray(np.stack([a, a, b, a])), 3)
    np.testing.assert_allclose(got, [1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_question_picks_planted_frames():
    t, d = 40, 32  # F = 10
    basis = _orthonormal(3, d, 2)
    rng = np.random.default_rng(3)
    planted = np.sort(rng.choice(t, 10, replace=False))
    emb = np.tile(basis[1], (t, 1)) + 0.1 * rng.standard_normal((t, d)).astype(np.float32)
    emb[planted] = basis[0] + 0.1 * rng.standard_normal((10, d))
    q = basis[0] + 0.2 * basis[2] * np.array([[1.0], [-1.0]], np.float32)  # mean is basis[0]
    x = jnp.asarray(np.repeat(emb[:, None, :], 16, axis=1), jnp.float32)
    cfg = MemoryConfig(pool_size=4, min_frames=0, temporal_mode="question")
    vm = build_video_memory(x, jnp.zeros(d), cfg, question_emb=jnp.asarray(q))
    np.testing.assert_array_equal(vm.frame_indices, planted)
    with pytest.raises(ValueError, match="question"):
        build_video_memory(x, jnp.zeros(d), cfg)


def test_stage1_keeps_every_frame():
    cfg = MemoryConfig(min_frames=0, temporal_forgetting=False)
    vm = build_video_memory(_tokens(6), jnp.zeros(4), cfg)
    np.testing.assert_array_equal(vm.frame_indices, np.arange(6))
    assert vm.decayed.shape == (6 * 17, 4)


def test_jit_matches_eager():
    cfg = dataclasses.replace(MemoryConfig(min_frames=0), spatial_mode="random", temporal_mode="keyframe")
    x, nl = _tokens(12), jnp.ones(4)
    f = jax.jit(lambda x, nl, key: build_video_memory(x, nl, cfg, rng=key))
    a, b = f(x, nl, jax.random.key(5)), build_video_memory(x, nl, cfg, rng=jax.random.key(5))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="frame_tokens"):
        build_video_memory(jnp.zeros((4, 10, 2)), jnp.zeros(2), MemoryConfig())
    with pytest.raises(ValueError, match="newline"):
        build_video_memory(jnp.zeros((4, 64, 2)), jnp.zeros(3), MemoryConfig())
