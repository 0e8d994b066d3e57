"""Query building and LLM splice (design §2.4) against a literal transcription of the pseudo-code."""

from __future__ import annotations

import numpy as np
import pytest

from hourllava_jax.config.tokens import IGNORE_INDEX
from hourllava_jax.model.splice import build_query, splice_llm_inputs

IMG = -200


def _reference(ids, labels, decayed_pos, n_valid, max_len):
    """Per sample, in Python lists, exactly as design §2.4 writes it."""
    segments, blocks, cur = [], [], []
    for t, tok in enumerate(ids):
        if tok == IMG:
            segments.append(cur)
            blocks.append(len(segments) - 1)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    q_src, q_pos, maxp = [], [], -1
    for i, seg in enumerate(segments):
        kept = [t for t in seg if labels is None or labels[t] == IGNORE_INDEX]
        q_src += [("t", t) for t in kept]
        q_pos += [maxp + 1 + j for j in range(len(kept))]
        if q_pos:
            maxp = max(q_pos)
        if i < len(segments) - 1:
            dp = decayed_pos[i][: n_valid[i]]
            q_src += [("d", i, j) for j in range(len(dp))]
            q_pos += [int(p) + maxp + 1 for p in dp]
            maxp = max(q_pos)
    llm_src, llm_lab = [], []
    k = 0
    for t, tok in enumerate(ids):
        if tok == IMG:
            llm_src += [("v", k, j) for j in range(n_valid[k])]
            llm_lab += [IGNORE_INDEX] * n_valid[k]
            k += 1
        else:
            llm_src.append(("t", t))
            llm_lab.append(IGNORE_INDEX if labels is None else labels[t])
    return q_src, q_pos, llm_src[:max_len], llm_lab[:max_len]


def _case(rng, with_labels):
    b, length, k_max, n_max, h = 3, 14, 2, 5, 4
    ids = rng.integers(1, 50, (b, length))
    valid = np.zeros((b, length), bool)
    labels = np.where(rng.random((b, length)) < 0.5, IGNORE_INDEX, rng.integers(1, 50, (b, length)))
    n_ph = [2, 1, 0]
    lens = [14, 10, 7]
    dpos = np.sort(rng.integers(0, 300, (b, k_max, n_max)), axis=-1)
    n_valid = rng.integers(1, n_max + 1, (b, k_max))
    for i in range(b):
        valid[i, : lens[i]] = True
        ph = rng.choice(np.arange(1, lens[i]), n_ph[i], replace=False)
        ids[i, ph] = IMG
        labels[i, ph] = IGNORE_INDEX
        labels[i, lens[i]:] = IGNORE_INDEX
        n_valid[i, n_ph[i]:] = 0
    dvalid = np.arange(n_max)[None, None] < n_valid[..., None]
    return ids, valid, (labels if with_labels else None), dpos, dvalid, n_valid, lens


@pytest.mark.parametrize("with_labels", [True, False])
def test_query_and_splice_match_pseudocode(rng, with_labels):
    ids, valid, labels, dpos, dvalid, n_valid, lens = _case(rng, with_labels)
    b, length = ids.shape
    h = 4
    temb = rng.standard_normal((b, length, h)).astype(np.float32)
    demb = rng.standard_normal(dpos.shape + (h,)).astype(np.float32)
    q = build_query(temb, ids, valid, labels, demb, dpos, dvalid, IMG)
    out_len = 16
    vis = rng.standard_normal(dpos.shape + (h,)).astype(np.float32)
    llm = splice_llm_inputs(temb, ids, valid, labels, vis, dvalid, IMG, out_len)
    for i in range(b):
        lab_i = None if labels is None else labels[i, : lens[i]]
        q_src, q_pos, l_src, l_lab = _reference(list(ids[i, : lens[i]]), lab_i, dpos[i], n_valid[i], out_len)
        nq = int(np.asarray(q.valid[i]).sum())
        assert nq == len(q_src)
        np.testing.assert_array_equal(np.asarray(q.positions[i, :nq]), q_pos)
        want = np.stack([temb[i, s[1]] if s[0] == "t" else demb[i, s[1], s[2]] for s in q_src]) if q_src else np.zeros((0, h))
        np.testing.assert_array_equal(np.asarray(q.embeds[i, :nq]), want)
        for s_idx, s in enumerate(q_src):  # decayed_slot points back at each decayed token
            if s[0] == "d":
                assert int(q.decayed_slot[i, s[1], s[2]]) == s_idx
        nl = int(np.asarray(llm.valid[i]).sum())
        assert nl == len(l_src)
        want = np.stack([temb[i, s[1]] if s[0] == "t" else vis[i, s[1], s[2]] for s in l_src])
        np.testing.assert_array_equal(np.asarray(llm.embeds[i, :nl]), want)
        np.testing.assert_array_equal(np.asarray(llm.labels[i, :nl]), l_lab)
        assert (np.asarray(llm.labels[i, nl:]) == IGNORE_INDEX).all()


def test_decayed_tokens_sit_n0_ahead_of_their_memory_entry():
    """With one video placeholder after n0 kept prefix tokens, every decayed token's query position
    is its memory id + n0 (design §2.4 consequence)."""
    n0 = 8
    ids = np.array([[5] * n0 + [IMG] + [7, 7, 7]])
    labels = np.array([[IGNORE_INDEX] * (n0 + 1) + [7, 7, IGNORE_INDEX]])
    dpos = np.array([[[0, 2, 65, 67, 129]]])
    q = build_query(np.ones((1, 12, 2), np.float32), ids, np.ones_like(ids, bool), labels,
                    np.ones((1, 1, 5, 2), np.float32), dpos, np.ones((1, 1, 5), bool), IMG)
    np.testing.assert_array_equal(np.asarray(q.positions[0, n0 : n0 + 5]), dpos[0, 0] + n0)
    # The one kept text token after the block continues from the largest id.
    assert int(q.positions[0, n0 + 5]) == 129 + n0 + 1
    assert int(np.asarray(q.valid).sum()) == n0 + 5 + 1
