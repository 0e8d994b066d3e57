"""Benchmark: 1-FPS frame sampling of a 720p 30 fps video, this project vs the release's way vs decord.

Claim checked: ``hourllava_jax.data.video.decode_video`` (GOP-aware seek-or-stream, frame
threading, RGB + PIL resize of the selected frames only) is >= 2x faster than decoding every
frame to RGB and picking (the release's approach) on a long-GOP file, with identical frames.

Three inputs, generated once into a cache (x264 ``ultrafast`` speed settings, low bit rate,
simple moving content, so generation takes a minute or two per file on 2 cores):
  long_gop_250       x264's default GOP (keyint 250) and default frame types: 3 B-frames,
                     B-pyramid (as typical web / camera H.264; half the frames are then
                     non-reference B-frames that nothing else needs)
  gop_1s             the same with a 1-s GOP (keyint 30)
  long_gop_250_no_b  keyint 250 with ``ultrafast``'s own frame types: no B-frames, every frame
                     a reference (the worst case: every frame must be decoded)
Methods, each producing uint8[T, 384, 384, 3] for the same design §3.2 indices:
  ours         decode_video(path) (threads: FFmpeg default)
  decode_all   PyAV, every frame decoded and converted to RGB, the selected ones PIL-resized
  decord       decord.VideoReader(num_threads=1, as the release).get_batch(indices) + PIL resize

    python benchmarks/decode.py                 # 10-minute videos (generation takes minutes)
    python benchmarks/decode.py --minutes 2     # a quick run
Prints a table and writes benchmarks/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hourllava_jax.data.preprocess import resize_rgb
from hourllava_jax.data.video import decode_video, probe_video, should_seek

WIDTH, HEIGHT, FPS = 1280, 720, 30


def generate(path: Path, minutes: float, keyint: int | None, bframes: bool = True) -> Path:
    """Writes a 720p30 H.264 clip of moving texture (``keyint=None``: x264's default, 250;
    ``bframes``: x264's default 3 B-frames with B-pyramid, else ultrafast's none)."""
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.mp4")
    rng = np.random.default_rng(0)
    # Smooth texture + a little noise, panned a few pixels per frame: cheap to make, not trivial
    # to encode, and every frame differs (so a wrong frame shows up in the comparison).
    yy, xx = np.mgrid[0:HEIGHT * 2, 0:WIDTH * 2]
    luma = (96 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 6, xx.shape)).clip(16, 235).astype(np.uint8)
    chroma_u = (128 + 40 * np.sin(xx[::2, ::2] / 51.0)).astype(np.uint8)
    chroma_v = (128 + 40 * np.cos(yy[::2, ::2] / 41.0)).astype(np.uint8)
    n = int(round(minutes * 60 * FPS))
    options = {"preset": "ultrafast", "crf": "30"}
    if bframes:  # ultrafast alone turns B-frames off; x264's default structure puts them back
        options["x264-params"] = "bframes=3:b-pyramid=normal"
    if keyint is not None:
        options.update({"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0"})
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        for i in range(n):
            dx, dy = (3 * i) % WIDTH, (i // 2) % HEIGHT
            y = luma[dy:dy + HEIGHT, dx:dx + WIDTH]
            u = chroma_u[dy // 2:dy // 2 + HEIGHT // 2, dx // 2:dx // 2 + WIDTH // 2]
            v = chroma_v[dy // 2:dy // 2 + HEIGHT // 2, dx // 2:dx // 2 + WIDTH // 2]
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, u.reshape(-1, WIDTH), v.reshape(-1, WIDTH)]), format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.rename(path)
    return path


def run_ours(path: Path, indices: np.ndarray) -> np.ndarray:
    return decode_video(path, indices=indices).frames


def run_decode_all(path: Path, indices: np.ndarray) -> np.ndarray:
    """The release's approach with PyAV: every frame decoded and converted, selected ones kept."""
    want = {int(i) for i in indices}
    kept = {}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            rgb = frame.to_ndarray(format="rgb24")
            if i in want:
                kept[i] = resize_rgb(rgb)
    return np.stack([kept[int(i)] for i in indices])


def run_decord(path: Path, indices: np.ndarray) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    frames = vr.get_batch(list(map(int, indices))).asnumpy()
    return np.stack([resize_rgb(f) for f in frames])


METHODS = {"ours": run_ours, "decode_all": run_decode_all, "decord": run_decord}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="video length (shrink for a quick run)")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("HOURLLAVA_BENCH_CACHE", "/tmp/hourllava_bench")))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "decode.json")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=1, help="runs per method, interleaved; the fastest is kept "
                    "(the machine is shared: the minimum is the least disturbed run)")
    args = ap.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]

    rows = []
    load_before = os.getloadavg()
    for variant, keyint, bframes in (("long_gop_250", None, True), ("gop_1s", FPS, True),
                                     ("long_gop_250_no_b", None, False)):
        path = args.cache_dir / f"720p30_{args.minutes:g}min_{variant.removesuffix('_no_b')}{'_b3' if bframes else ''}.mp4"
        t0 = time.perf_counter()
        existed = path.exists()
        generate(path, args.minutes, keyint, bframes)
        gen_s = time.perf_counter() - t0
        index = probe_video(path)
        indices = index.select()  # design §3.2: 1 FPS (stride 30)
        seconds = index.duration
        n_key = int(index.keyframe.sum())
        print(f"{path.name}: {index.num_frames} frames, {seconds:.1f} s, {n_key} keyframes, "
              f"{len(indices)} sampled, mode={'seek' if should_seek(index, indices) else 'sequential'}"
              + ("" if existed else f", generated in {gen_s:.0f} s"))
        ref = None
        best: dict[str, tuple[float, float, np.ndarray]] = {}
        for _ in range(args.repeats):
            for name in methods:
                t0, c0 = time.perf_counter(), time.process_time()
                frames = METHODS[name](path, indices)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu, frames)
        for name in methods:
            wall, cpu, frames = best[name]
            if ref is None:
                ref = frames
            diff = int(np.abs(frames.astype(np.int16) - ref.astype(np.int16)).max())
            rows.append(dict(variant=variant, method=name, wall_s=round(wall, 3), cpu_s=round(cpu, 3), frames=len(indices),
                             frames_per_s=round(len(indices) / wall, 2), x_realtime=round(seconds / wall, 2),
                             max_abs_diff_vs_first=diff))
            print(f"  {name:<11} {wall:8.2f} s (cpu {cpu:7.2f} s)  {len(indices) / wall:8.1f} frames/s  {seconds / wall:7.2f}x real time  max|diff|={diff}")
    for r in rows:
        base = next((b for b in rows if b["variant"] == r["variant"] and b["method"] == "decode_all"), None)
        r["speedup_vs_decode_all"] = round(base["wall_s"] / r["wall_s"], 2) if base else None

    print(f"\n{'variant':<19}{'method':<12}{'wall s':>9}{'cpu s':>9}{'frames/s':>10}{'x RT':>8}{'vs all':>8}{'max|d|':>8}")
    for r in rows:
        print(f"{r['variant']:<19}{r['method']:<12}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{r['frames_per_s']:>10.1f}"
              f"{r['x_realtime']:>8.2f}{r['speedup_vs_decode_all'] or 0:>8.2f}{r['max_abs_diff_vs_first']:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(
        benchmark="decode", video=f"{WIDTH}x{HEIGHT} {FPS} fps H.264 (x264 ultrafast crf 30; 3 B-frames + B-pyramid except *_no_b), {args.minutes:g} min",
        sampling="design §3.2 1 FPS, PIL bicubic to 384x384", repeats=args.repeats, machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
        loadavg_before=load_before, loadavg_after=os.getloadavg()), av=av.__version__,
        note="cpu_s is process CPU time (all threads); wall_s depends on what else runs on the machine",
        results=rows,
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
