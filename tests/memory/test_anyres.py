"""anyres_max_9 model-side grid, image memories and their positions (design §1.4); golden values by hand.
The image-side geometry (crops, pinpoints) is tested in tests/data/test_anyres.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hourllava_jax.data.anyres import anyres_grid_shape
from hourllava_jax.memory.image_grid import base_position_ids, torch_linspace_f32
from hourllava_jax.memory.reference import anyres_grid_features, build_anyres_memory, build_multi_image_memory


# ------------------------------------------------------------------ model-side grid


def test_grid_assembly_and_unpad():
    # 800x600 -> 3 x 2 crops of g=4: grid 8 x 12; aspect 1.33 < 1.5 so columns are cut:
    # new_w = int(800 * 8/600) = 10, pad (12 - 10) // 2 = 1 -> columns 1..10; no resize (s < 1.1).
    g, c = 4, 2
    crops = np.zeros((6, g * g, c), np.float32)
    for n in range(6):
        crops[n, :, 0] = n  # crop id
        crops[n, :, 1] = np.arange(g * g)  # token id inside the crop
    grid = np.asarray(anyres_grid_features(jnp.asarray(crops), (3, 2), (800, 600)))
    assert grid.shape == (8, 10, 2)
    # Row 5, column 0 of the unpadded grid = crop row 1, global column 1 -> crop 3, token (1, 1).
    np.testing.assert_array_equal(grid[5, 0], [3, 1 * g + 1])
    np.testing.assert_array_equal(grid[0, 9], [2, 2])  # global column 10 -> crop 2, token (0, 2)


def test_grid_downscale(torch_fp32):
    # 4000x3000 -> 6 x 5 crops of g=2: grid 10 x 12; new_h = int(3000*12/4000) = 9, pad 0 -> 10 rows
    # kept; s = sqrt(120 / 36) = 1.826 > 1.1 -> resized to (int(10 // s), int(12 // s)) = (5, 6).
    x = np.random.default_rng(0).standard_normal((30, 4, 3)).astype(np.float32)
    grid = anyres_grid_features(jnp.asarray(x), (6, 5), (4000, 3000), max_crops=9)
    assert grid.shape == (5, 6, 3)
    full = x.reshape(5, 6, 2, 2, 3).transpose(0, 2, 1, 3, 4).reshape(10, 12, 3)
    want = torch_fp32.nn.functional.interpolate(torch_fp32.from_numpy(full).permute(2, 0, 1)[None], [5, 6], mode="bilinear")
    np.testing.assert_allclose(grid, want[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_torch_linspace_bit_exact(torch_fp32):
    for end in range(0, 200):
        np.testing.assert_array_equal(torch_linspace_f32(end, 27), torch_fp32.linspace(0, end, 27).numpy())


# ------------------------------------------------------------------ positions


def test_base_positions_by_hand():
    # h=4, w=5, g=3: rows round([0, 1.5, 3]) = [0, 2, 3] (half to even), cols round([0, 2, 4]).
    np.testing.assert_array_equal(base_position_ids(4, 5, 3), [[0, 2, 4], [10, 12, 14], [15, 17, 19]])


def test_anyres_memory_uniform_by_hand():
    h, w, g, d = 4, 5, 3, 2
    rng = np.random.default_rng(0)
    base, grid, nl = rng.standard_normal((g, g, d)), rng.standard_normal((h, w, d)), np.array([7.0, 7.0])
    m = build_anyres_memory(jnp.asarray(base), jnp.asarray(grid), jnp.asarray(nl), mode="uniform")
    want_mem = [0, 2, 4, 10, 12, 14, 15, 17, 19] + [i for r in range(4) for i in [*range(5 * r, 5 * r + 5), 20]]
    np.testing.assert_array_equal(m.memory_positions, want_mem)
    # base [::2, ::2] -> (0,0), (0,2), (2,0), (2,2); grid rows 0, 2 x cols 0, 2, 4 + newlines.
    np.testing.assert_array_equal(m.query_positions, [0, 4, 15, 19, 0, 2, 4, 20, 10, 12, 14, 20])
    np.testing.assert_allclose(m.query[4:8], [grid[0, 0], grid[0, 2], grid[0, 4], nl])
    np.testing.assert_allclose(m.query[:2], [base[0, 0], base[0, 2]])
    np.testing.assert_allclose(m.memory[9 + 6 + 5], nl)  # end of grid row 1


def _release_newlines(ids, w, h):
    """Transcription of the release's add_grid_image_newline on position ids (NL = h*w)."""
    out, start = [], 0
    for pos in range(w, h * w, w):  # row starts 1..h-1
        hit = np.nonzero(ids >= pos)[0]
        if len(hit) == 0:
            continue
        ins = hit[0]
        if ins == start:
            continue
        out += list(ids[start:ins]) + [h * w]
        start = ins
    return out + list(ids[start:]) + [h * w]


@pytest.mark.parametrize("seed", range(5))
def test_anyres_memory_random_matches_release_newline_rule(seed):
    h, w, g, d = 6, 7, 5, 3
    rng = np.random.default_rng(seed)
    grid = rng.standard_normal((h, w, d)).astype(np.float32)
    base = rng.standard_normal((g * g, d)).astype(np.float32)
    m = build_anyres_memory(jnp.asarray(base), jnp.asarray(grid), jnp.zeros(d), rng=jax.random.key(seed))
    q = np.asarray(m.query_positions)
    kb = 7  # ceil(25 / 4)
    grid_part = q[kb:]
    ids = grid_part[grid_part != h * w]
    assert len(ids) == 11 and np.all(np.diff(ids) > 0)  # ceil(42 / 4) sorted grid tokens
    np.testing.assert_array_equal(grid_part, _release_newlines(ids, w, h))
    assert set(q[:kb]) <= set(base_position_ids(h, w, g).reshape(-1))
    # Every query token is the memory token carrying its position id.
    mem_pos = np.asarray(m.memory_positions)
    for tok, p in zip(np.asarray(m.query)[kb:], grid_part):
        np.testing.assert_array_equal(tok, np.asarray(m.memory)[25 + np.nonzero(mem_pos[25:] == p)[0][0]])


def test_multi_image_by_hand():
    x = jnp.arange(2 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 1)
    m = build_multi_image_memory(x, jnp.array([-1.0]), mode="uniform")  # 2x2 grid: keeps token 0
    np.testing.assert_array_equal(m.memory_positions, [0, 1, 2, 3, 8, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(m.query_positions, [[0, 8], [4, 8]])
    np.testing.assert_array_equal(m.query[..., 0], [[0, -1], [4, -1]])
    r = build_multi_image_memory(jnp.zeros((3, 9, 1)), jnp.zeros(1), rng=jax.random.key(0))
    qp = np.asarray(r.query_positions)
    assert qp.shape == (3, 4) and np.all(qp[:, -1] == 27)
    for n in range(3):
        assert np.all((qp[n, :3] >= 9 * n) & (qp[n, :3] < 9 * n + 9)) and np.all(np.diff(qp[n, :3]) > 0)


def test_release_counts_at_full_size():
    """183 + newline per multi-image block; a 27x27 grid keeps 183 base tokens in random mode."""
    m = build_multi_image_memory(jnp.zeros((2, 729, 1)), jnp.zeros(1), rng=jax.random.key(0))
    assert m.query.shape == (2, 184, 1) and m.memory.shape == (1460, 1) and int(m.memory_positions[-1]) == 1458


def test_errors():
    with pytest.raises(ValueError):
        anyres_grid_features(jnp.zeros((5, 4, 1)), (3, 2), (800, 600))
    with pytest.raises(ValueError, match="RNG key"):
        build_multi_image_memory(jnp.zeros((1, 4, 1)), jnp.zeros(1))


def _release_grid(feat, npw, nph, image_size, max_crops, torch):
    """Transcription of the release's multi_image_resize (crops part), channels-first torch."""
    import math as _m

    g = int(round(feat.shape[1] ** 0.5))
    x = torch.from_numpy(feat).view(nph, npw, g, g, -1).permute(4, 0, 2, 1, 3).contiguous()
    x = x.flatten(1, 2).flatten(2, 3)
    ow, oh = image_size
    ch, cw = x.shape[1:]
    if ow / oh > cw / ch:
        nh = int(oh * (cw / ow))
        pad = (ch - nh) // 2
        x = x[:, pad : ch - pad, :]
    else:
        nw = int(ow * (ch / oh))
        pad = (cw - nw) // 2
        x = x[:, :, pad : cw - pad]
    c, h, w = x.shape
    times = _m.sqrt(h * w / (max_crops * g**2))
    if times > 1.1:
        x = torch.nn.functional.interpolate(x[None], [int(h // times), int(w // times)], mode="bilinear")[0]
    return x.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [(800, 600), (4000, 3000), (300, 1000), (1920, 1080), (640, 4000), (999, 1001)])
def test_grid_matches_release_transcription(size, torch_fp32):
    npw, nph = anyres_grid_shape(size)
    feat = np.random.default_rng(0).standard_normal((npw * nph, 9, 2)).astype(np.float32)
    want = _release_grid(feat, npw, nph, size, 9, torch_fp32)
    got = np.asarray(anyres_grid_features(jnp.asarray(feat), (npw, nph), size))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
