"""Which frames of a video the model sees (design §3.2, "Frame rules"). Pure numpy, no decoding.

Four rules:

* ``sample_indices``: the release's rule for constant-frame-rate (CFR) raw video. One frame per
  ``stride = round(native_fps / fps)`` frames (1 FPS by default); if that gives fewer than
  ``min_frames`` (128), ``linspace(0, N-1, min(N, 128))`` cast to int instead.
* ``sample_indices_by_time``: the same intent for variable-frame-rate (VFR) files, where frame
  count / fps does not measure time (design §8.4: decord reads a 140 s VFR file as 280 s). One frame
  per ``1/fps`` seconds of presentation time: for target time ``t_k = k / fps`` (k = 0, 1, ...,
  up to the last frame's time) the first frame whose timestamp is ``>= t_k``. Short videos use
  ``min(N, 128)`` targets spread uniformly over ``[t_first, t_last]``, each taking the nearest
  frame. A frame that covers several targets (a sparse stretch, a gap) is selected once per
  target, so T stays one per second (or min(N, 128)) and every frame stands for equal time.
* ``extraction_indices``: which frames pre-extraction stores (the release's extraction
  script): ``k = max(int(N / native_fps), 128)`` frames at ``linspace(0, N-1, k)`` cast to int,
  or all N frames when N < 128.
* ``feature_indices``: pre-extracted features, ``T = min(N, int(duration))`` rows at
  ``linspace(0, N-1, T)`` (N: the stored rows).

``is_constant_rate`` decides between the first two; on a CFR file ``sample_indices_by_time``
agrees with ``sample_indices`` whenever ``native_fps / fps`` is an integer, but not for 29.97 fps
(stride 30 drifts 0.1 % from wall time), which is why CFR files keep the release's index rule.

Optional ``max_frames`` (not in the release, which has no upper bound): when more frames than
that are selected, keep ``max_frames`` of them, uniformly by position
(``idx[linspace(0, len(idx)-1, max_frames).astype(int)]``), so they stay on the 1-FPS grid.

Integer casts truncate like numpy ``astype(int)`` / torch ``.long()`` (values are >= 0).
"""

from __future__ import annotations

import numpy as np

DEFAULT_MIN_FRAMES = 128  # design §3.2: short videos are sampled to 128 frames (or all of them)
# Half a microsecond: timestamps are exact rationals turned into floats; this absorbs the rounding
# so that a frame at exactly k seconds counts as ">= k seconds".
_TIME_EPS = 5e-7


def _cap(idx: np.ndarray, max_frames: int | None) -> np.ndarray:
    """Uniformly keeps at most ``max_frames`` entries of ``idx`` (int64[T] -> int64[<=max_frames])."""
    if max_frames is None or len(idx) <= max_frames:
        return idx
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return idx[np.linspace(0, len(idx) - 1, max_frames).astype(np.int64)]


def sample_stride(native_fps: float, fps: float = 1.0) -> int:
    """``round(native_fps / fps)`` with Python's round (as the release), at least 1 (design §3)."""
    if not native_fps > 0 or not fps > 0:
        raise ValueError(f"native_fps and fps must be > 0, got {native_fps}, {fps}")
    return max(1, round(native_fps / fps))


def sample_indices(
    num_frames: int,
    native_fps: float,
    *,
    fps: float = 1.0,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int | None = None,
) -> np.ndarray:
    """design §3.2 raw-video rule for a constant-rate video of ``num_frames`` frames.

    Returns int64[T], strictly increasing frame indices in ``[0, num_frames)``.
    Example: 200 s at 30 fps (N = 6000) -> ``0, 30, ..., 5970`` (T = 200); 60 s at 30 fps
    (N = 1800, 60 < 128) -> ``linspace(0, 1799, 128).astype(int)``.
    """
    if num_frames <= 0:
        return np.zeros((0,), np.int64)
    idx = np.arange(0, num_frames, sample_stride(native_fps, fps), dtype=np.int64)
    if len(idx) < min_frames:
        idx = np.linspace(0, num_frames - 1, min(num_frames, min_frames)).astype(np.int64)
    return _cap(idx, max_frames)


def sample_indices_by_time(
    timestamps: np.ndarray,
    *,
    fps: float = 1.0,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int | None = None,
) -> np.ndarray:
    """1-FPS sampling by presentation time, for variable-frame-rate video (module docstring).

    Args:
      timestamps: float[N] seconds, the frames' presentation times in display order
        (non-decreasing; an offset start is fine, times are taken relative to ``timestamps[0]``).
    Returns int64[T], non-decreasing frame indices (repeats where a frame lasts several targets).
    """
    ts = np.asarray(timestamps, np.float64)
    n = len(ts)
    if n == 0:
        return np.zeros((0,), np.int64)
    if np.any(np.diff(ts) < 0):
        raise ValueError("timestamps must be in display order (non-decreasing)")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rel = ts - ts[0]
    span = rel[-1]
    targets = np.arange(0, int(np.floor(span * fps + _TIME_EPS)) + 1, dtype=np.float64) / fps
    # First frame at or after each target time.
    idx = np.searchsorted(rel, targets - _TIME_EPS, side="left")
    if len(idx) < min_frames:
        # Short video: min(N, 128) frames spread uniformly in *time* (the release spreads them
        # uniformly in index, which is the same thing at a constant rate), nearest frame each.
        targets = np.linspace(0.0, span, min(n, min_frames))
        right = np.clip(np.searchsorted(rel, targets, side="left"), 0, n - 1)
        left = np.clip(right - 1, 0, n - 1)
        nearer_left = np.abs(rel[left] - targets) <= np.abs(rel[right] - targets)
        idx = np.where(nearer_left, left, right)
    return _cap(idx.astype(np.int64), max_frames)


def is_constant_rate(timestamps: np.ndarray, tick: float = 0.0) -> bool:
    """True when frame times lie on an even grid (up to the container's timestamp rounding).

    Args:
      timestamps: float[N] seconds in display order.
      tick: the stream's time-base in seconds (timestamps are multiples of it; a webm's 1 ms
        tick makes a 29.97 fps grid jitter by up to 1 ms).
    A real VFR file drifts off the grid by whole frame periods; the tolerance is a quarter of
    the mean frame period or one tick and a half, whichever is larger.
    """
    ts = np.asarray(timestamps, np.float64)
    if len(ts) < 3:
        return True
    period = (ts[-1] - ts[0]) / (len(ts) - 1)
    grid = ts[0] + period * np.arange(len(ts))
    return bool(np.max(np.abs(ts - grid)) <= max(0.25 * period, 1.5 * tick))


def extraction_indices(num_frames: int, native_fps: float, min_frames: int = DEFAULT_MIN_FRAMES) -> np.ndarray:
    """The release's pre-extraction frames: int64[k] indices into the N = ``num_frames`` frames.

    ``k = max(int(N / native_fps), min_frames)`` at ``linspace(0, N-1, k)`` cast to int; all N
    frames (``arange(N)``) when ``N < min_frames``. The last frame is always included (linspace
    ends on N-1 exactly), so the release's "append the last frame if missing" never adds one.
    For ``native_fps >= 1`` the indices strictly increase (k <= N); a rate below 1 FPS gives
    k > N and repeated indices, as the release's ``linspace`` does.

    Examples: 1799 frames at 25 fps (71.96 s) -> 128 indices; 3601 at 25 fps -> 144; 3601 at
    29.97 fps (120.15 s) -> 128; 50 frames -> 0..49.
    """
    if num_frames <= 0:
        return np.zeros((0,), np.int64)
    if not native_fps > 0:
        raise ValueError(f"native_fps must be > 0, got {native_fps}")
    if num_frames < min_frames:
        return np.arange(num_frames, dtype=np.int64)
    k = max(int(num_frames / native_fps), min_frames, 1)
    return np.linspace(0, num_frames - 1, k, dtype=int).astype(np.int64)


def feature_indices(num_features: int, duration: float) -> np.ndarray:
    """design §3.2 pre-extracted feature rule: ``linspace(0, N-1, T).astype(int)``, ``T = min(N, int(duration))``.

    Returns int64[T]. Deviation: a clip shorter than one second gets ``T = 1`` (the release's
    formula gives zero frames there, which would fail downstream).
    """
    if num_features <= 0:
        return np.zeros((0,), np.int64)
    t = max(1, min(num_features, int(duration)))
    return np.linspace(0, num_features - 1, t).astype(np.int64)


__all__ = [
    "DEFAULT_MIN_FRAMES",
    "extraction_indices",
    "feature_indices",
    "is_constant_rate",
    "sample_indices",
    "sample_indices_by_time",
    "sample_stride",
]
