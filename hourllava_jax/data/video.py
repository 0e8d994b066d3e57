"""Video decoding with PyAV: only the frames design §3.2 selects, frame-accurate, RGB, 384x384.

``decode_video(path)`` does, in order:

1. **Probe** (``probe_video``): demux every packet of the first video stream without decoding
   (cheap: no pixels). Packet timestamps sorted = the display-order frame list, so frame ``i``
   is the ``i``-th smallest pts (the release's decord index; one shown frame per packet, true of
   H.264/HEVC/VP9/AV1 in mp4/mkv/webm). Keyframe flags give the GOP layout.
2. **Select** (``frames.py``): constant-rate files use the release's stride/linspace rule on
   frame indices; variable-rate files (timestamps off an even grid) select by presentation time.
3. **Decode**, GOP-aware (``should_seek``): with keyframes at least as dense as the sampling
   step, for each GOP holding selected frames seek to its keyframe and decode up to the last
   selected one; otherwise (long GOPs) every frame up to a selected one is needed as a
   reference, so the stream is cut into runs of whole GOPs (``_segments``, one per core) and
   each run is decoded sequentially from its keyframe by its own single-threaded decoder, the
   runs in parallel threads (PyAV releases the GIL while decoding), since frame threading inside
   one decoder does not keep every core busy and independent runs do (docs/video.md). Either way the decoder
   is drained right after the last packet needed (a frame-threaded decoder otherwise holds
   frames back until ``thread_count`` more packets arrive), a frame is identified by its pts,
   never by counting, and a seek that lands wrong (a broken index, open-GOP leading pictures)
   falls back to one decoder reading from the start, so the result is always the frame a
   decode-everything pass would give. For a single decoder frame threading is on (``thread_type="AUTO"``;
   PyAV's default slice threading does nothing for one-slice x264 streams, design §8.4). For
   H.264/HEVC, packets that are not selected are decoded with ``skip_frame="NONREF"``:
   non-reference frames are never used by another frame, so skipping them changes no output.
4. **Convert** only the selected frames: YUV -> RGB at native size by libswscale (bit-identical
   to decord, the release's reader), then ``preprocess.resize_rgb`` (PIL bicubic straight to
   ``size`` x ``size``, design §1.1) in a helper thread, overlapping the decoder (PIL releases
   the GIL). Normalisation is a separate call (``preprocess.normalize``).

Timeouts: elapsed time is checked before every packet (probe and decode) and before every
conversion; past ``timeout_s`` a ``DataError(DECODE_TIMEOUT)`` is raised. A single native call
(one packet's demux or decode, one frame's conversion) cannot be interrupted from Python, so
the overshoot is bounded by one such call (milliseconds, at most ~1 s for a huge 8K keyframe).
Blocking *I/O* on network paths is bounded by PyAV's ``timeout=`` (passed through); a hard
guarantee for hostile input needs a worker process that can be killed (grain workers).

Bad input raises ``DataError`` naming the file: missing file, not a video (no container / no
video stream), unsupported codec, corrupt or truncated data, zero frames.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.frames import (
    DEFAULT_MIN_FRAMES,
    is_constant_rate,
    sample_indices,
    sample_indices_by_time,
)
from hourllava_jax.data.preprocess import SIGLIP_SIZE, resize_rgb

# Decoders whose skip_frame="NONREF" is exact (drops only frames nothing else references).
_NONREF_SKIP_CODECS = frozenset({"h264", "hevc"})
_MAX_IN_FLIGHT = 8  # native-size RGB frames waiting for the resize thread (8 x 2.7 MB at 720p)
# Container signatures: a file that starts like a video container but will not open is corrupt
# (e.g. truncated before the mp4 index), anything else is not a video at all.
_MAGIC = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),  # ISO BMFF / QuickTime
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (0, b"RIFF"), (0, b"OggS"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)
DEFAULT_TIMEOUT_S = 600.0  # a 1 h 1080p file decodes in minutes on 2 cores; hangs do not end
_clock = time.monotonic  # module-level so a test can drive the deadline


@dataclasses.dataclass(frozen=True)
class VideoIndex:
    """What demuxing (no decoding) tells about a video stream; N = frames.

    Attributes:
      pts: int64[N] frame timestamps in stream time-base units, display order.
      decode_pos: int64[N] position of each frame's packet in decode order.
      keyframe: bool[N] in decode order: packet ``j`` starts a GOP.
      time_base: seconds per pts unit.
      timestamps: float64[N] seconds since the first frame.
      duration: seconds, first frame to the end of the last one.
      native_fps: the stream's average rate (decord's ``get_avg_fps``); for VFR, N / duration.
      constant_rate: frames lie on an even time grid (else VFR: select by time, design §3 intent).
    """

    path: str
    codec: str
    width: int
    height: int
    pts: np.ndarray
    decode_pos: np.ndarray
    keyframe: np.ndarray
    time_base: Fraction
    timestamps: np.ndarray
    duration: float
    native_fps: float
    constant_rate: bool

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def select(self, *, fps: float = 1.0, min_frames: int = DEFAULT_MIN_FRAMES, max_frames: int | None = None) -> np.ndarray:
        """design §3.2 frame indices (int64[T]) for this video; see ``frames.py``."""
        if self.constant_rate:
            return sample_indices(self.num_frames, self.native_fps, fps=fps, min_frames=min_frames, max_frames=max_frames)
        return sample_indices_by_time(self.timestamps, fps=fps, min_frames=min_frames, max_frames=max_frames)


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """Selected frames of one video.

    Attributes:
      frames: uint8[T, size, size, 3] RGB (native H x W when decoded with ``size=None``).
      indices: int64[T] display-order frame indices (may repeat on VFR files, see frames.py).
      timestamps: float64[T] seconds since the first frame.
      duration: seconds; native_fps: stream rate; num_frames: N frames in the stream.
    """

    path: str
    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    duration: float
    native_fps: float
    num_frames: int
    constant_rate: bool


class _Deadline:
    def __init__(self, path: str, timeout_s: float | None):
        self.path, self.timeout_s = path, timeout_s
        self.end = None if timeout_s is None else _clock() + timeout_s

    def check(self, what: str) -> None:
        if self.end is not None and _clock() > self.end:
            raise DataError(self.path, errors.DECODE_TIMEOUT, f"{what} exceeded {self.timeout_s:.1f} s")


def _looks_like_container(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[off:off + len(m)] == m for off, m in _MAGIC)


def _open(path: Path, timeout_s: float | None):
    """Opens ``path`` and returns (container, first video stream), mapping failures to DataError."""
    if not path.exists():
        raise DataError(path, errors.MISSING_FILE, "no such file")
    if not path.is_file():
        raise DataError(path, errors.NOT_A_VIDEO, "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, errors.NOT_A_VIDEO, "empty file")
    try:
        container = av.open(str(path), timeout=timeout_s)
    except av.error.ExitError as e:  # PyAV's I/O interrupt callback fired: the open stalled
        raise DataError(path, errors.DECODE_TIMEOUT, f"opening exceeded {timeout_s} s ({e})") from e
    except av.error.FFmpegError as e:
        reason = errors.CORRUPT_VIDEO if _looks_like_container(path) else errors.NOT_A_VIDEO
        raise DataError(path, reason, f"cannot open as a container ({e})") from e
    if not container.streams.video:
        container.close()
        raise DataError(path, errors.NOT_A_VIDEO, "no video stream")
    stream = container.streams.video[0]
    try:
        name = stream.codec_context.name
        av.codec.Codec(name, "r")
    except Exception as e:  # noqa: BLE001 - PyAV signals an unknown codec in several ways
        tag = getattr(stream, "codec_tag", "?")
        container.close()
        raise DataError(path, errors.UNSUPPORTED_CODEC, f"no decoder for the video stream (codec tag {tag!r}): {e}") from e
    if name == "none":
        container.close()
        raise DataError(path, errors.UNSUPPORTED_CODEC, "unknown video codec")
    return container, stream


def _declared_length(stream) -> tuple[int, float]:
    """(frame count, seconds) the container header claims for ``stream``; 0 where unknown."""
    frames = int(stream.frames or 0)
    seconds = 0.0
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:  # Matroska written by FFmpeg: a per-track "HH:MM:SS.nnnnnnnnn" tag
        tag = stream.metadata.get("DURATION") or stream.metadata.get("duration") or ""
        try:
            h, m, sec = tag.split(":")
            seconds = int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            seconds = 0.0
    return frames, seconds


def probe_video(path: str | Path, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> VideoIndex:
    """Demuxes (does not decode) the first video stream of ``path``: see ``VideoIndex``."""
    path = Path(path)
    deadline = _Deadline(str(path), timeout_s)
    container, stream = _open(path, timeout_s)
    pts, key, dur = [], [], []
    declared_frames, declared_seconds = _declared_length(stream)
    n_discard = 0
    try:
        for i, packet in enumerate(container.demux(stream)):
            if i % 256 == 0:
                deadline.check("probing")
            if packet.size == 0:  # end-of-stream marker
                continue
            if packet.is_discard:  # edit-list preroll: decoded for reference, never shown
                n_discard += 1
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                raise DataError(path, errors.CORRUPT_VIDEO, f"packet {i} has no timestamp")
            pts.append(ts)
            key.append(bool(packet.is_keyframe))
            dur.append(packet.duration or 0)
        codec, width, height = stream.codec_context.name, stream.width, stream.height
        time_base = stream.time_base
        avg = stream.average_rate or stream.guessed_rate
    except av.error.ExitError as e:
        raise DataError(path, errors.DECODE_TIMEOUT, f"a read stalled past {timeout_s} s ({e})") from e
    except av.error.FFmpegError as e:
        raise DataError(path, errors.CORRUPT_VIDEO, f"demuxing failed ({e})") from e
    finally:
        container.close()
    if not pts:
        raise DataError(path, errors.NO_FRAMES, "the video stream has no frames")
    # Truncation: the header promises more than the data holds (an mp4 whose sample table
    # outlives the cut, a Matroska file cut short). One frame of slack for rounding.
    if declared_frames and len(pts) + n_discard < declared_frames - 1:
        raise DataError(path, errors.CORRUPT_VIDEO,
                        f"truncated: header declares {declared_frames} frames, found {len(pts) + n_discard}")
    if time_base is None:
        raise DataError(path, errors.CORRUPT_VIDEO, "the video stream has no time base")
    dec_pts = np.asarray(pts, np.int64)
    order = np.argsort(dec_pts, kind="stable")
    if len(np.unique(dec_pts)) != len(dec_pts):
        raise DataError(path, errors.CORRUPT_VIDEO, "duplicate frame timestamps")
    sorted_pts = dec_pts[order]
    tb = Fraction(time_base)
    seconds = (sorted_pts - sorted_pts[0]).astype(np.float64) * float(tb)
    n = len(sorted_pts)
    diffs = np.diff(seconds)
    period = float(np.median(diffs)) if n > 1 else (float(dur[order[-1]] * tb) or (1 / float(avg) if avg else 1.0))
    last = float(dur[order[-1]] * tb) or period
    duration = float(seconds[-1]) + last
    if declared_seconds and duration < declared_seconds - max(1.0, 2 * period):
        raise DataError(path, errors.CORRUPT_VIDEO,
                        f"truncated: header declares {declared_seconds:.2f} s, frames end at {duration:.2f} s")
    constant = is_constant_rate(seconds, tick=float(tb))
    if constant and avg:
        native_fps = float(avg)
    else:
        native_fps = n / duration
    return VideoIndex(
        path=str(path), codec=codec, width=width, height=height,
        pts=sorted_pts, decode_pos=order.astype(np.int64), keyframe=np.asarray(key, bool),
        time_base=tb, timestamps=seconds, duration=duration, native_fps=native_fps, constant_rate=constant,
    )


def _gop_start(index: VideoIndex) -> np.ndarray:
    """int64[N]: decode position of the keyframe that starts each display frame's GOP.

    Frames before any keyframe (a stream that does not open on one) map to 0.
    """
    key_pos = np.flatnonzero(index.keyframe)
    if len(key_pos) == 0:
        return np.zeros(index.num_frames, np.int64)
    k = np.searchsorted(key_pos, index.decode_pos, side="right") - 1
    return np.where(k >= 0, key_pos[np.maximum(k, 0)], 0)


def should_seek(index: VideoIndex, indices: np.ndarray) -> bool:
    """Seek per selected frame iff keyframes are at least as dense as the sampling step."""
    if len(indices) < 2:
        return True
    n_key = max(1, int(index.keyframe.sum()))
    mean_gop = index.num_frames / n_key
    step = index.num_frames / len(np.unique(indices))
    return mean_gop <= step


class _SeekMiss(Exception):
    """A seek landed past the frames it was meant for; the caller decodes sequentially instead."""


class _Decoder:
    """Feeds packets to the decoder and keeps the wanted frames, converted (shared by both modes)."""

    def __init__(self, container, stream, index: VideoIndex, want_pts: np.ndarray, size: int | None,
                 deadline: _Deadline, resizer: ThreadPoolExecutor | None = None):
        self.container, self.stream, self.cc = container, stream, stream.codec_context
        self.skip_nonref = self.cc.name in _NONREF_SKIP_CODECS
        self.want = set(want_pts.tolist())
        self.size, self.deadline = size, deadline
        self.pos_of_pts = dict(zip(index.pts.tolist(), index.decode_pos.tolist()))
        self.pts_at_pos = np.empty_like(index.pts)  # decode position -> pts (where to seek)
        self.pts_at_pos[index.decode_pos] = index.pts
        self.got: dict[int, np.ndarray | Future] = {}
        self.resizer = resizer if size is not None else None
        self._in_flight: collections.deque[Future] = collections.deque()

    def _keep(self, frames) -> None:
        for frame in frames:
            if frame.pts in self.want and frame.pts not in self.got:
                self.deadline.check("converting")
                rgb = frame.to_ndarray(format="rgb24")
                if self.resizer is None:
                    self.got[frame.pts] = resize_rgb(rgb, self.size)
                    continue
                # PIL's bicubic resize of a 720p frame costs about as much as decoding the ~30
                # frames between two selected ones; it releases the GIL, so it overlaps the
                # decoder in a thread. At most _MAX_IN_FLIGHT native-size frames wait (memory).
                while len(self._in_flight) >= _MAX_IN_FLIGHT:
                    self._in_flight.popleft().result()
                fut = self.resizer.submit(resize_rgb, rgb, self.size)
                self._in_flight.append(fut)
                self.got[frame.pts] = fut

    def frames(self) -> dict[int, np.ndarray]:
        """pts -> uint8[size, size, 3] of every kept frame (waits for pending resizes)."""
        return {pts: (f.result() if isinstance(f, Future) else f) for pts, f in self.got.items()}

    def run(self, wanted: set[int], last_pos: int) -> None:
        """Demuxes from the current position until every pts in ``wanted`` was sent, then drains.

        Draining (sending end-of-stream) makes a frame-threaded decoder hand over its last
        frames at once instead of after ``thread_count`` more packets. Stops early, leaving
        frames missing, once past decode position ``last_pos`` (a seek that landed too late).
        """
        pending = set(wanted)
        for packet in self.container.demux(self.stream):
            self.deadline.check("decoding")
            if packet.size == 0:
                if packet.pts is None and packet.dts is None:  # PyAV's end-of-stream marker:
                    self._keep(packet.decode())  # its decode() drains the decoder
                    return
                continue  # an empty placeholder (AVI drop frame): not a frame, as in the probe
            pts = packet.pts
            if self.skip_nonref:
                self.cc.skip_frame = "DEFAULT" if pts in self.want else "NONREF"
            self._keep(packet.decode())
            pending.discard(pts)
            if not pending or self.pos_of_pts.get(pts, -1) > last_pos:
                break
        self._keep(self.cc.decode(None))


def _decode_sequential(dec: _Decoder, index: VideoIndex, want_pts: np.ndarray) -> None:
    """One pass from the first frame to the last wanted one (long GOPs: every frame is a reference)."""
    dec.run(set(want_pts.tolist()), int(index.decode_pos.max()))


def _seek_to_keyframe(dec: _Decoder, pos: int) -> None:
    """Positions the demuxer on the keyframe at decode position ``pos``."""
    dec.container.seek(int(dec.pts_at_pos[pos]), stream=dec.stream, backward=True, any_frame=False)


def _decode_from_keyframe(dec: _Decoder, index: VideoIndex, want_pts: np.ndarray) -> None:
    """One pass from the keyframe opening the GOP of the first wanted frame (a segment)."""
    display = np.searchsorted(index.pts, want_pts)
    g = int(_gop_start(index)[display].min())
    if g > 0:
        _seek_to_keyframe(dec, g)
    group = set(want_pts.tolist())
    dec.run(group, int(index.decode_pos[display].max()))
    if not group <= dec.got.keys():
        raise _SeekMiss(g)


def _segments(index: VideoIndex, want_pts: np.ndarray, n: int) -> list[np.ndarray]:
    """``want_pts`` cut into at most ``n`` runs of whole GOPs with about equal decode spans.

    Each run starts at a keyframe, so the runs decode independently (one decoder each, in
    parallel): a GOP is never split, as its frames depend on its keyframe.
    """
    display = np.searchsorted(index.pts, want_pts)
    gop = _gop_start(index)[display]
    starts = np.unique(gop)
    if n <= 1 or len(starts) < 2:
        return [want_pts]
    first, last = int(starts[0]), int(index.decode_pos[display].max())
    targets = first + (last - first) * np.arange(1, n) / n
    cuts = np.unique(starts[np.minimum(np.searchsorted(starts, targets), len(starts) - 1)])
    cuts = cuts[cuts > first]
    bounds = np.concatenate([[first], cuts, [np.iinfo(np.int64).max]])
    runs = [want_pts[(gop >= lo) & (gop < hi)] for lo, hi in zip(bounds[:-1], bounds[1:])]
    return [r for r in runs if len(r)]


def _decode_by_seeking(dec: _Decoder, index: VideoIndex, want_pts: np.ndarray) -> None:
    """Per GOP holding wanted frames: seek to its keyframe, decode up to the last wanted frame."""
    display_of_pts = np.searchsorted(index.pts, want_pts)
    gop = _gop_start(index)[display_of_pts]
    pos = index.decode_pos[display_of_pts]
    for g in np.unique(gop).tolist():
        in_gop = gop == g
        group = set(want_pts[in_gop].tolist())
        if group <= dec.got.keys():
            continue
        if g > 0 or dec.got:
            _seek_to_keyframe(dec, g)
        dec.run(group, int(pos[in_gop].max()))
        if not group <= dec.got.keys():
            raise _SeekMiss(g)


def decode_video(
    path: str | Path,
    *,
    fps: float = 1.0,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int | None = None,
    size: int | None = SIGLIP_SIZE,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    threads: int = 0,
    indices: np.ndarray | None = None,
    segments: int | None = None,
) -> DecodedVideo:
    """Decodes the design §3.2 frames of ``path`` (module docstring for the method).

    Args:
      fps / min_frames / max_frames: the sampling rule (1 FPS, at least 128, no cap by default).
      size: output side (PIL bicubic, design §1.1); None keeps native resolution.
      timeout_s: wall-clock budget for probe + decode (DataError DECODE_TIMEOUT past it).
      threads: decoder threads (0 = FFmpeg's choice, one per core).
      indices: decode these display-order frame indices instead of the sampling rule.
      segments: independent decoders run in parallel over runs of whole GOPs (default: as
        many as ``threads``, i.e. cores); 1 = one frame-threaded decoder.
    Returns a ``DecodedVideo`` with ``frames`` uint8[T, size, size, 3].
    """
    path = Path(path)
    deadline = _Deadline(str(path), timeout_s)
    index = probe_video(path, timeout_s=timeout_s)
    if indices is None:
        indices = index.select(fps=fps, min_frames=min_frames, max_frames=max_frames)
    indices = np.asarray(indices, np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= index.num_frames):
        raise ValueError(f"{path}: frame indices out of range [0, {index.num_frames})")
    want_pts = np.unique(index.pts[indices])
    workers = max(1, (threads or os.cpu_count() or 1) if segments is None else segments)
    runs = _segments(index, want_pts, workers) if len(want_pts) > 1 else [want_pts]
    # Strategies in order of preference; a seek that lands wrong falls through to the next, and
    # one decoder reading the file from its start is always last (what decode-everything gives).
    if should_seek(index, indices):
        # Dense keyframes: one frame-threaded decoder hopping between GOPs was faster than
        # parallel single-threaded ones (short runs; each GOP starts with a costly keyframe).
        plans = [(_decode_by_seeking, [want_pts]), (_decode_sequential, [want_pts])]
    elif len(runs) > 1:
        plans = [(_decode_from_keyframe, runs), (_decode_sequential, [want_pts])]
    else:
        plans = [(_decode_sequential, [want_pts])]
    resizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resize") if size is not None and len(indices) > 1 else None

    def decode_run(strategy, run: np.ndarray, decoder_threads: int) -> dict[int, np.ndarray | Future]:
        container, stream = _open(path, timeout_s)
        try:
            stream.codec_context.thread_type = "AUTO"
            stream.codec_context.thread_count = decoder_threads
            dec = _Decoder(container, stream, index, want_pts, size, deadline, resizer)
            strategy(dec, index, run)
            return dec.frames()
        finally:
            container.close()

    got: dict[int, np.ndarray] = {}
    try:
        for strategy, plan_runs in plans:
            try:
                if len(plan_runs) == 1:  # one decoder: frame threading over all cores
                    got = decode_run(strategy, plan_runs[0], threads)
                else:  # one single-threaded decoder per run, runs in parallel (PyAV releases the GIL)
                    with ThreadPoolExecutor(max_workers=len(plan_runs), thread_name_prefix="decode") as pool:
                        parts = list(pool.map(lambda r, st=strategy: decode_run(st, r, 1), plan_runs))
                    got = {pts: f for part in parts for pts, f in part.items()}
                break
            except _SeekMiss:
                continue  # seeking is unreliable on this file: fall back to the next strategy
            except av.error.ExitError as e:
                raise DataError(path, errors.DECODE_TIMEOUT, f"a read stalled past {timeout_s} s ({e})") from e
            except av.error.FFmpegError as e:
                raise DataError(path, errors.CORRUPT_VIDEO, f"decoding failed ({e})") from e
    finally:
        if resizer is not None:
            resizer.shutdown(wait=True, cancel_futures=True)
    missing = [int(p) for p in want_pts if int(p) not in got]
    if missing:
        i = int(np.searchsorted(index.pts, missing[0]))
        raise DataError(path, errors.CORRUPT_VIDEO,
                        f"{len(missing)} selected frames did not decode (first: frame {i}, pts {missing[0]}); truncated?")
    if len(indices):
        frames = np.stack([got[int(p)] for p in index.pts[indices]])
    else:
        h, w = (size, size) if size else (index.height, index.width)
        frames = np.zeros((0, h, w, 3), np.uint8)
    return DecodedVideo(
        path=str(path), frames=frames, indices=indices, timestamps=index.timestamps[indices],
        duration=index.duration, native_fps=index.native_fps, num_frames=index.num_frames,
        constant_rate=index.constant_rate,
    )


__all__ = ["DEFAULT_TIMEOUT_S", "DecodedVideo", "VideoIndex", "decode_video", "probe_video", "should_seek"]
