"""Needle in a video haystack, built from local videos (after LongVA's V-NIAH).

`build` samples each haystack video at `fps` (1 FPS, the model's input rate), loops it to
L seconds, inserts a short needle clip at depth d (fraction of the haystack, 0 = start), and
re-encodes the result with PyAV (H.264, small square frames, 1 s GOP) under `root/videos/`.
The default needles are solid-colour frames with the question "what colour was it", options
red/green/blue/yellow, the right colour cycling over the grid so a constant answerer scores
25%. Every video gets one question; the grid is depths x lengths x needles_per_cell.

Layout under `root` (written by `build`, read by `load`)::

    root/
      needle.json       # list of {id, video, question, options, answer, depth, length, duration}
      videos/<id>.mp4

Categories: `depth` ("0.25") and `length` (seconds, "60"); `write_heatmap` draws accuracy over
depth x length from the result records as a PNG.

    python -m hourllava_jax.eval.tasks.needle --videos a.mp4 b.mp4 --out DIR \\
        --depths 0 0.25 0.5 0.75 1 --lengths 60 300 900
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hourllava_jax.eval.items import (
    BAD_ANSWER,
    CORRUPT_VIDEO,
    EvalItem,
    LETTERS,
    MISSING_FILE,
    NO_FRAMES,
    Problem,
    resolve_video,
)
from hourllava_jax.eval.tasks._common import Collector, answer_letter, checked_options, number, read_json

BENCHMARK = "needle"
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
QUESTION = "A frame of one solid colour is hidden somewhere in the video. What colour is it?"


def encode_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 1) -> int:
    """Writes uint8[H, W, 3] RGB frames (H, W even) as H.264 at `fps`. Returns the frame count."""
    import av  # lazy: only building needles (and test fixtures) encodes video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), mode="w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                # 1 s GOP keeps per-second seeking cheap (design §8.4); no B-frames keeps pts == order.
                stream.codec_context.gop_size = max(1, fps)
                stream.codec_context.options = {"bf": "0", "preset": "ultrafast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n


def sample_frames(path: str | Path, fps: int, size: int, max_frames: int) -> list[np.ndarray]:
    """Up to `max_frames` frames at `fps` (by presentation time), resized to uint8[size, size, 3]."""
    import av

    frames: list[np.ndarray] = []
    next_t = 0.0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = frame.time if frame.time is not None else next_t
            if t + 1e-6 < next_t:
                continue
            frames.append(frame.to_ndarray(width=size, height=size, format="rgb24"))
            next_t += 1.0 / fps
            if len(frames) >= max_frames:
                break
    return frames


def build(haystacks: Sequence[str | Path], root: str | Path, depths: Sequence[float], lengths: Sequence[int],
          needles_per_cell: int = 1, needle_seconds: int = 1, size: int = 64, fps: int = 1,
          ) -> tuple[list[EvalItem], list[Problem]]:
    """Writes the needle benchmark under `root` (see module docs) and returns `load(root)`.

    Args:
      haystacks: local source videos, used in turn (list[str | Path]); unreadable ones are
        recorded as problems and skipped.
      depths: needle positions as fractions of the haystack, each in [0, 1].
      lengths: haystack lengths in seconds (ints >= 1).
      needles_per_cell: questions per (depth, length) cell.
      needle_seconds: needle clip length in seconds; size: frame side (even); fps: frame rate.
    """
    root = Path(root)
    out = Collector(BENCHMARK)
    sources: list[list[np.ndarray]] = []
    for h in haystacks:
        try:
            frames = sample_frames(h, fps, size, max(lengths) * fps)
        except Exception as e:  # any decoder error: this haystack is unusable, the rest are fine
            reason = MISSING_FILE if not Path(h).exists() else CORRUPT_VIDEO
            out.problem(str(h), reason, f"{type(e).__name__}: {e}")
            continue
        if frames:
            sources.append(frames)
        else:
            out.problem(str(h), NO_FRAMES, "no frame decoded")
    rows: list[dict[str, Any]] = []
    names = list(COLORS)
    for length in lengths:
        for depth in depths:
            for k in range(needles_per_cell):
                if not sources:
                    break
                n = len(rows)
                src = sources[n % len(sources)]
                hay = [src[i % len(src)] for i in range(length * fps)]
                color = names[n % len(names)]
                needle = [np.full((size, size, 3), COLORS[color], np.uint8)] * (needle_seconds * fps)
                at = round(depth * len(hay))
                vid = f"d{depth:.2f}_L{length}_{k}"
                encode_video(root / "videos" / f"{vid}.mp4", hay[:at] + needle + hay[at:], fps)
                rows.append({"id": vid, "video": f"videos/{vid}.mp4", "question": QUESTION, "options": names,
                             "answer": LETTERS[names.index(color)], "depth": depth, "length": length,
                             "duration": (len(hay) + len(needle)) / fps})
    root.mkdir(parents=True, exist_ok=True)
    (root / "needle.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    items, problems = load(root)
    return items, out.problems + problems


_FIELDS = {"id": str, "video": str, "question": str, "options": list, "answer": str,
           "depth": (int, float), "length": (int, float)}


def load(root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Reads root/needle.json. Returns (items, problems); never raises on bad input."""
    root = Path(root)
    out = Collector(BENCHMARK)
    data = read_json(root / "needle.json", out, top=list)
    for i, row in enumerate(data or []):
        where = f"needle.json[{i}]"
        options = checked_options(row, _FIELDS, "options", where, out)
        if options is None:
            continue
        answer = answer_letter(row["answer"], len(options))
        if answer is None:
            out.problem(where, BAD_ANSWER, f"answer {row['answer']!r} is not a valid letter")
            continue
        out.add(where, EvalItem(
            benchmark=BENCHMARK, id=row["id"], video=resolve_video(root, row["video"]), question=row["question"],
            options=options, answer=answer, video_id=row["id"], duration=number(row.get("duration")),
            categories={"depth": f"{float(row['depth']):.2f}", "length": str(int(row["length"]))}))
    return out.result()


def accuracy_grid(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    """(depth labels, length labels, float[D, L] accuracy; NaN where a cell has no result)."""
    cells: dict[tuple[str, str], list[int]] = {}
    for r in records:
        c = r.get("categories") or {}
        if "depth" in c and "length" in c:
            cell = cells.setdefault((c["depth"], c["length"]), [0, 0])
            cell[0] += 1
            cell[1] += bool(r.get("correct"))
    depths = sorted({d for d, _ in cells}, key=float)
    lengths = sorted({n for _, n in cells}, key=float)
    grid = np.full((len(depths), len(lengths)), np.nan)
    for (d, n), (tot, ok) in cells.items():
        grid[depths.index(d), lengths.index(n)] = ok / tot
    return depths, lengths, grid


def write_heatmap(records: Sequence[dict[str, Any]], path: str | Path) -> np.ndarray:
    """Draws accuracy over depth (rows) x haystack length (columns) to a PNG. Returns the grid."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on eval hosts
    import matplotlib.pyplot as plt

    depths, lengths, grid = accuracy_grid(records)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(lengths)), 1.0 + 0.6 * max(1, len(depths))))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), lengths)
    ax.set_yticks(range(len(depths)), depths)
    ax.set_xlabel("haystack length (s)")
    ax.set_ylabel("needle depth")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return grid


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build a needle-in-a-video-haystack benchmark from local videos.")
    p.add_argument("--videos", nargs="+", required=True, help="haystack source videos")
    p.add_argument("--out", required=True, help="benchmark root to write")
    p.add_argument("--depths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--lengths", nargs="+", type=int, default=[60, 300, 900])
    p.add_argument("--needles-per-cell", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args(argv)
    items, problems = build(a.videos, a.out, a.depths, a.lengths, a.needles_per_cell, size=a.size)
    print(f"{len(items)} needle questions under {a.out}; {len(problems)} problems")
    for pr in problems:
        print(f"  {pr.where}: {pr.reason}: {pr.message}")


if __name__ == "__main__":
    main()
