"""design §3.2 frame rules, with expected values written out from the formula."""

from __future__ import annotations

import numpy as np
import pytest

from hourllava_jax.data.frames import (
    feature_indices,
    is_constant_rate,
    sample_indices,
    sample_indices_by_time,
    sample_stride,
)


def test_stride_rounds_like_python():
    assert sample_stride(30.0) == 30
    assert sample_stride(30000 / 1001) == 30  # 29.97
    assert sample_stride(25.0) == 25
    assert sample_stride(24000 / 1001) == 24  # 23.976
    assert sample_stride(0.4) == 1  # never 0
    assert sample_stride(60.0, fps=2.0) == 30


@pytest.mark.parametrize(
    "seconds, fps, stride",
    [(200, 30.0, 30), (200, 30000 / 1001, 30), (200, 25.0, 25), (128, 25.0, 25), (3600, 30.0, 30)],
)
def test_long_videos_take_every_stride_th_frame(seconds, fps, stride):
    n = int(round(seconds * fps))
    idx = sample_indices(n, fps)
    expected = list(range(0, n, stride))
    assert idx.tolist() == expected
    assert len(idx) >= 128
    if fps == 30.0 and seconds == 200:
        assert idx[:4].tolist() == [0, 30, 60, 90] and len(idx) == 200


@pytest.mark.parametrize("seconds, fps", [(60, 30.0), (100, 30000 / 1001), (127, 25.0), (13, 10.0)])
def test_short_videos_take_128_uniform_frames(seconds, fps):
    n = int(round(seconds * fps))
    idx = sample_indices(n, fps)
    expected = [int(i * (n - 1) / 127) for i in range(128)]  # linspace(0, N-1, 128) truncated
    # linspace computes i * step, not i * (n-1) / 127: compare with numpy for exactness and with
    # the hand formula to one unit of float rounding.
    assert idx.tolist() == np.linspace(0, n - 1, 128).astype(int).tolist()
    assert np.max(np.abs(idx - np.array(expected))) <= 1
    assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) == 128


def test_fewer_than_128_frames_takes_all():
    assert sample_indices(50, 30.0).tolist() == list(range(50))
    assert sample_indices(0, 30.0).tolist() == []


def test_boundary_128_seconds():
    # 128 s at 30 fps -> exactly 128 strided frames, so the strided rule stands.
    assert sample_indices(3840, 30.0).tolist() == list(range(0, 3840, 30))
    # one frame short of 128 strided ones -> linspace.
    assert len(sample_indices(3810, 30.0)) == 128
    assert sample_indices(3810, 30.0)[-1] == 3809


def test_max_frames_subsamples_the_1fps_grid():
    idx = sample_indices(30 * 1000, 30.0, max_frames=100)
    assert len(idx) == 100
    assert np.all(idx % 30 == 0) and idx[0] == 0 and idx[-1] == 30 * 999
    assert np.all(np.diff(idx) > 0)


@pytest.mark.parametrize("seconds, fps", [(200, 30), (150, 25), (300, 10), (129, 24)])
def test_by_time_equals_index_rule_on_integer_fps_cfr(seconds, fps):
    n = seconds * fps + 7  # a ragged tail, as real files have
    ts = np.arange(n) / fps
    assert is_constant_rate(ts)
    assert sample_indices_by_time(ts).tolist() == sample_indices(n, float(fps)).tolist()


def test_by_time_on_variable_rate():
    # 140 s: 70 s at 10 fps, then 70 s at 30 fps (the design §8.4 case decord reads as 280 s).
    ts = np.concatenate([np.arange(700) / 10, 70 + np.arange(2100) / 30])
    assert not is_constant_rate(ts)
    idx = sample_indices_by_time(ts)
    # Second k < 70 is frame 10k; second k >= 70 is frame 700 + 30 (k - 70).
    expected = [10 * k for k in range(70)] + [700 + 30 * (k - 70) for k in range(70, 140)]
    assert idx.tolist() == expected
    # The index rule with the first segment's fps (what decord would do) is wrong here:
    assert len(sample_indices(len(ts), 10.0)) == 280


def test_by_time_first_frame_at_or_after_each_second():
    ts = np.array([0.0, 0.4, 0.95, 1.3, 2.0, 2.1, 4.5, 5.0])  # jittery, a gap at 3-4 s
    idx = sample_indices_by_time(ts, min_frames=0)
    # t=0 ->0; t=1 ->1.3 (3); t=2 ->2.0 (4); t=3 ->4.5 (6); t=4 ->4.5 (6 again); t=5 ->5.0 (7)
    assert idx.tolist() == [0, 3, 4, 6, 6, 7]


def test_by_time_short_vfr_is_uniform_in_time():
    ts = np.concatenate([np.arange(20) / 2, 10 + np.arange(300) / 30])  # 20 s, 320 frames
    idx = sample_indices_by_time(ts)
    assert len(idx) == 128 and idx[0] == 0 and idx[-1] == 319
    targets = np.linspace(0, ts[-1], 128)
    chosen = ts[idx]
    # Every target time got its nearest frame; in the sparse first 10 s (2 fps) several of the
    # 128 targets (one per 0.157 s) share a frame, which is then repeated.
    assert np.all(np.diff(idx) >= 0) and len(np.unique(idx)) < 128
    for t in targets:
        assert np.min(np.abs(chosen - t)) <= np.min(np.abs(ts - t)) + 1e-12


def test_by_time_offset_start_and_ms_ticks():
    ts = 12.345 + np.round(np.arange(6000) * 1001 / 30) / 1000  # 29.97 fps in a 1 ms time base
    assert is_constant_rate(ts, tick=1e-3)
    idx = sample_indices_by_time(ts)
    assert idx[0] == 0 and len(idx) == int((ts[-1] - ts[0])) + 1


def test_feature_rule():
    assert feature_indices(600, 600.0).tolist() == list(range(600))
    assert feature_indices(600, 300.5).tolist() == np.linspace(0, 599, 300).astype(int).tolist()
    assert feature_indices(128, 1000.0).tolist() == list(range(128))
    assert feature_indices(128, 0.4).tolist() == [0]
    assert feature_indices(0, 10.0).tolist() == []
