"""Synthetic long videos with timed events, VideoMarathon-style QA over six topics, and needles.

Everything is a pure function of the seed: a video's content comes from
`np.random.default_rng([seed, index])`, so the same seed gives identical records and identical
decoded frames, and video i does not depend on how many videos are made.

A video (`VideoSpec`) is a background colour that changes once (scene), plus a sequence of
non-overlapping shape events (colour, shape, quadrant, optional motion), drawn at `size`²
pixels and `fps` frames per second, encoded as H.264 mp4 (PyAV/libx264, one keyframe per
second so seeking per second stays cheap, design §8.4). The needle task adds one frame holding a
large cross of a needle colour at relative depth d of a haystack of L seconds; event colours in
needle videos never use needle colours, so that frame is the only evidence of the answer.

Layout written under `out_dir` (design §4): `videos/<data_source>/<name>.mp4` and one JSON Lines
record file; records carry extra fields (`duration`, `qa`, `needle`) for evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from hourllava_jax.data.chat import time_instruction
from hourllava_jax.data.records import IMAGE_TOKEN, MAX_QA_PAIRS, Record, Turn, write_jsonl

# Saturated colours survive 4:2:0 chroma subsampling of small frames.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 70, 235),
    "yellow": (240, 225, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
}
NEEDLE_COLOURS = ("red", "green", "blue", "yellow")
HAYSTACK_COLOURS = tuple(c for c in COLOURS if c not in NEEDLE_COLOURS)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (100, 100, 100),
    "navy": (15, 25, 85),
    "brown": (90, 55, 25),
    "purple": (70, 20, 80),
}
SHAPES = ("square", "circle", "triangle", "diamond")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
DIRECTIONS = ("left", "right", "up", "down")
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
NEEDLE_QUESTION = "What colour was the flash?"
LETTERS = "ABCD"
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclasses.dataclass(frozen=True)
class Event:
    """A shape visible on frames [start, end), centred in `position`'s quadrant, moving by a
    fifth of the frame in `direction` over its lifetime (None: static)."""

    colour: str
    shape: str
    start: int
    end: int
    position: str
    direction: str | None = None


@dataclasses.dataclass(frozen=True)
class Needle:
    """The needle: a cross of `colour` on the single frame `frame` (a whole second when fps=1)."""

    frame: int
    colour: str
    depth: float  # requested relative position in [0, 1]


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render a video; frames are `uint8[size, size, 3]`, `n_frames` at `fps`."""

    name: str
    fps: int
    n_frames: int
    size: int
    backgrounds: tuple[tuple[int, str], ...]  # (first frame, colour name), sorted, first at 0
    events: tuple[Event, ...]  # sorted by start, non-overlapping
    needle: Needle | None = None

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps


# ---------------------------------------------------------------------------------------------
# Sampling the content
# ---------------------------------------------------------------------------------------------


def sample_video_spec(
    rng: np.random.Generator,
    name: str,
    seconds: int,
    fps: int = 1,
    size: int = 64,
    colours: Sequence[str] = tuple(COLOURS),
    max_events: int = 8,
) -> VideoSpec:
    """Random content for a `seconds`-long video: one background change, 2..max_events events."""
    if size % 16 or size < 32:
        raise ValueError(f"size must be a multiple of 16 and >= 32 (H.264 macroblocks), got {size}")
    if seconds < 8:
        raise ValueError(f"seconds must be >= 8 to hold two events, got {seconds}")
    n_frames = seconds * fps
    bg = rng.choice(len(BACKGROUNDS), size=2, replace=False)
    names = list(BACKGROUNDS)
    change = int(rng.integers(seconds // 4, max(seconds // 4 + 1, 3 * seconds // 4))) * fps
    backgrounds = ((0, names[bg[0]]), (change, names[bg[1]]))
    k = int(np.clip(seconds // 10, 2, max_events))
    combos = [(c, s) for c in colours for s in SHAPES]  # (colour, shape) unique: "the red square"
    picks = rng.choice(len(combos), size=k, replace=False)
    slot = seconds // k  # one event per slot keeps them disjoint and spread over the whole video
    events = []
    for j, p in enumerate(picks):
        dur = int(rng.integers(2, max(3, min(8, slot - 1) + 1)))
        start = j * slot + int(rng.integers(0, max(1, slot - dur)))
        direction = None if rng.random() < 0.5 else DIRECTIONS[int(rng.integers(4))]
        colour, shape = combos[p]
        events.append(Event(colour, shape, start * fps, (start + dur) * fps, POSITIONS[int(rng.integers(4))], direction))
    return VideoSpec(name, fps, n_frames, size, backgrounds, tuple(events))


def needle_spec(
    rng: np.random.Generator,
    name: str,
    seconds: int,
    depth: float,
    fps: int = 1,
    size: int = 64,
    distractors: bool = True,
) -> VideoSpec:
    """A haystack of `seconds` (events in non-needle colours) with the needle at `depth`.

    The needle sits on a whole second (frame = round(depth·(seconds-1))·fps), i.e. on a frame
    the 1-FPS sampling rule of design §3.2 keeps.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if seconds < 1:
        raise ValueError(f"a haystack needs at least 1 second, got {seconds}")
    base = sample_video_spec(rng, name, max(seconds, 8), fps, size, HAYSTACK_COLOURS)
    events = base.events if distractors else ()
    if seconds < 8:  # short haystacks: keep only what fits
        events = tuple(e for e in events if e.end <= seconds * fps)
    colour = NEEDLE_COLOURS[int(rng.integers(len(NEEDLE_COLOURS)))]
    frame = int(round(depth * (seconds - 1))) * fps
    return dataclasses.replace(
        base, n_frames=seconds * fps, events=events, needle=Needle(frame, colour, float(depth)),
        backgrounds=tuple(b for b in base.backgrounds if b[0] < seconds * fps),
    )


# ---------------------------------------------------------------------------------------------
# Rendering and encoding
# ---------------------------------------------------------------------------------------------


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.3 * r
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        return ((np.abs(dx) <= r / 3) | (np.abs(dy) <= r / 3)) & (np.abs(dx) <= r) & (np.abs(dy) <= r)
    raise ValueError(f"unknown shape {shape!r}")


def event_centre(spec: VideoSpec, event: Event, frame: int) -> tuple[float, float]:
    """(x, y) pixel centre of `event` on `frame` (quadrant centre plus linear motion)."""
    q = spec.size / 4
    col = 1 if event.position.endswith("right") else 0
    row = 1 if event.position.startswith("bottom") else 0
    x, y = q * (1 + 2 * col), q * (1 + 2 * row)
    if event.direction is not None:
        frac = (frame - event.start) / max(1, event.end - event.start - 1)
        sx, sy = _STEP[event.direction]
        x, y = x + sx * frac * spec.size / 5, y + sy * frac * spec.size / 5
    return x, y


def render_frame(spec: VideoSpec, frame: int) -> np.ndarray:
    """uint8[size, size, 3] RGB of frame `frame`."""
    s = spec.size
    img = np.empty((s, s, 3), np.uint8)
    bg = [name for first, name in spec.backgrounds if first <= frame][-1]
    img[:] = BACKGROUNDS[bg]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    for e in spec.events:
        if e.start <= frame < e.end:
            cx, cy = event_centre(spec, e, frame)
            img[_shape_mask(e.shape, xx - cx, yy - cy, s / 8)] = COLOURS[e.colour]
    if spec.needle is not None and frame == spec.needle.frame:
        img[_shape_mask("cross", xx - s / 2, yy - s / 2, 0.45 * s)] = COLOURS[spec.needle.colour]
    return img


def iter_frames(spec: VideoSpec) -> Iterator[np.ndarray]:
    for i in range(spec.n_frames):
        yield render_frame(spec, i)


def write_video(spec: VideoSpec, path: str | Path, crf: int = 10) -> Path:
    """Encodes `spec` as H.264 (yuv420p) mp4 at `path` (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width = stream.height = spec.size
        stream.pix_fmt = "yuv420p"
        # Keyframe every second; one thread so the bitstream never depends on the machine.
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(spec.fps), "threads": "1"}
        for frame in iter_frames(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QA:
    """One question/answer pair; `options` set for multiple choice (answer is then a letter)."""

    topic: str
    task: str
    question: str
    answer: str
    options: tuple[str, ...] | None = None

    def meta(self) -> dict[str, Any]:
        options = list(self.options) if self.options else None
        return {"topic": self.topic, "task": self.task, "answer": self.answer, "options": options}


def mmss(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def multiple_choice(
    rng: np.random.Generator, topic: str, task: str, question: str, correct: str, pool: Sequence[str]
) -> QA:
    """MC question: `correct` and up to 3 distractors from `pool`, shuffled, labelled A-D."""
    others = [p for p in dict.fromkeys(pool) if p != correct]
    picks = [others[i] for i in rng.permutation(len(others))[: len(LETTERS) - 1]]
    opts = [correct, *picks]
    opts = [opts[i] for i in rng.permutation(len(opts))]
    body = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(opts))
    return QA(topic, task, f"{question}\n{body}\n{MC_SUFFIX}", LETTERS[opts.index(correct)], tuple(opts))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _describe(e: Event) -> str:
    return f"the {e.colour} {e.shape}"


def make_qas(spec: VideoSpec, rng: np.random.Generator) -> list[QA]:
    """One question per task over the six topics, each randomly multiple-choice or open-ended."""
    ev = list(spec.events)
    fps = spec.fps
    qas: list[QA] = []

    def ask(topic: str, task: str, question: str, answer: str, pool: Sequence[str]) -> None:
        if rng.random() < 0.5:
            qas.append(multiple_choice(rng, topic, task, question, answer, pool))
        else:
            qas.append(QA(topic, task, question, _cap(answer)))

    e = ev[int(rng.integers(len(ev)))]
    mid = (e.start + e.end) // 2 / fps
    ask(
        "temporality",
        "temporal perception",
        f"What colour was the shape visible at {mmss(mid)}?",
        e.colour,
        list(COLOURS),
    )
    a, b = sorted(rng.choice(len(ev), size=2, replace=False))
    ask(
        "temporality",
        "temporal order",
        f"Which appeared first, {_describe(ev[b])} or {_describe(ev[a])}?",
        _describe(ev[a]),
        [_describe(ev[a]), _describe(ev[b])],  # only the two asked about: other events would be ambiguous
    )
    e = ev[int(rng.integers(len(ev)))]
    dur = (e.end - e.start) // fps
    ask(
        "temporality",
        "duration perception",
        f"For how many seconds was {_describe(e)} visible?",
        f"{dur} seconds",
        [f"{d} seconds" for d in range(2, 10)],
    )
    e = ev[int(rng.integers(len(ev)))]
    ask(
        "spatiality",
        "spatial perception",
        f"In which part of the frame did {_describe(e)} appear?",
        e.position,
        POSITIONS,
    )
    colour = ev[int(rng.integers(len(ev)))].colour
    count = sum(x.colour == colour for x in ev)
    ask(
        "object",
        "existence",
        f"How many times did a {colour} shape appear?",
        str(count),
        [str(i) for i in range(1, 6)],
    )
    e = ev[int(rng.integers(len(ev)))]
    ask(
        "object",
        "recognition",
        f"What shape appeared at {mmss((e.start + e.end) // 2 / fps)}?",
        e.shape,
        SHAPES,
    )
    moving = [x for x in ev if x.direction is not None]
    if moving:
        e = moving[int(rng.integers(len(moving)))]
        ask("action", "recognition", f"In which direction did {_describe(e)} move?", e.direction, DIRECTIONS)
    if len(spec.backgrounds) > 1:
        ask(
            "scene",
            "transition",
            "What colour did the background change to?",
            spec.backgrounds[1][1],
            list(BACKGROUNDS),
        )
    order = ", ".join(x.colour for x in ev)
    perms = [", ".join(ev[i].colour for i in rng.permutation(len(ev))) for _ in range(8)]
    ask(
        "event",
        "event sequence",
        "In what order did the colours of the shapes appear?",
        order,
        [order, *perms],
    )
    return qas


def group_records(
    spec: VideoSpec, qas: Sequence[QA], data_source: str, extra: dict[str, Any] | None = None
) -> list[Record]:
    """VideoMarathon records of <= 5 QA pairs each; `<image>\\n` opens each record's first question."""
    out = []
    for k in range(0, len(qas), MAX_QA_PAIRS):
        chunk = qas[k : k + MAX_QA_PAIRS]
        turns: list[Turn] = []
        for j, qa in enumerate(chunk):
            turns += [Turn("human", (f"{IMAGE_TOKEN}\n" if j == 0 else "") + qa.question), Turn("gpt", qa.answer)]
        meta = {"duration": round(spec.seconds, 2), "fps": spec.fps, "qa": [qa.meta() for qa in chunk], **(extra or {})}
        out.append(Record(f"{spec.name}_{k // MAX_QA_PAIRS}", tuple(turns), f"{spec.name}.mp4", data_source, extra=meta))
    return out


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def make_dataset(
    out_dir: str | Path,
    *,
    seed: int,
    num_videos: int,
    min_seconds: int = 20,
    max_seconds: int = 60,
    fps: int = 1,
    size: int = 64,
    data_source: str = "synthetic",
    records_name: str = "synthetic.jsonl",
) -> tuple[Path, list[Record]]:
    """Writes `num_videos` event videos and their QA records; returns (records path, records)."""
    out_dir = Path(out_dir)
    records = []
    for i in range(num_videos):
        rng = np.random.default_rng([seed, i])
        seconds = int(rng.integers(min_seconds, max_seconds + 1))
        spec = sample_video_spec(rng, f"s{seed}_v{i:05d}", seconds, fps, size)
        write_video(spec, out_dir / "videos" / data_source / f"{spec.name}.mp4")
        records += group_records(spec, make_qas(spec, rng), data_source)
    return write_jsonl(records, out_dir / records_name), records


def make_needle_dataset(
    out_dir: str | Path,
    *,
    seed: int,
    lengths: Sequence[int] = (16, 32, 64),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    repeats: int = 1,
    fps: int = 1,
    size: int = 64,
    distractors: bool = True,
    data_source: str = "needle",
    records_name: str = "needle.jsonl",
) -> tuple[Path, list[Record]]:
    """Needle-in-a-haystack videos for every (length L seconds, depth d, repeat) cell.

    Each record asks `NEEDLE_QUESTION` (multiple choice over `NEEDLE_COLOURS`, answer a letter)
    and stores `needle = {frame, time, depth, actual_depth, length_seconds, n_frames, colour}`
    so accuracy can be broken down by depth and length. Use a different `seed` for the
    evaluation set than for training.
    """
    out_dir = Path(out_dir)
    records = []
    for li, length in enumerate(lengths):
        for di, depth in enumerate(depths):
            for r in range(repeats):
                rng = np.random.default_rng([seed, li, di, r])
                spec = needle_spec(rng, f"n{seed}_L{length}_d{di}_r{r}", int(length), float(depth), fps, size, distractors)
                write_video(spec, out_dir / "videos" / data_source / f"{spec.name}.mp4")
                n = spec.needle
                qa = multiple_choice(rng, "needle", "needle in a haystack", NEEDLE_QUESTION, n.colour, NEEDLE_COLOURS)
                meta = {
                    "needle": {
                        "frame": n.frame,
                        "time": n.frame / fps,
                        "depth": n.depth,
                        "actual_depth": n.frame / max(1, spec.n_frames - 1),
                        "length_seconds": int(length),
                        "n_frames": spec.n_frames,
                        "colour": n.colour,
                    }
                }
                records += group_records(spec, [qa], data_source, meta)
    return write_jsonl(records, out_dir / records_name), records


def corpus_texts(records: Sequence[Record], max_seconds: int = 3600) -> list[str]:
    """Every text a model trained on `records` will read, for `tokenizer.build_tokenizer`.

    Conversation turns, the time instruction (with sample numbers so digits and '.' appear), the
    MC suffix and every colour/shape/position/direction word.
    """
    texts = [t.value.replace(IMAGE_TOKEN, "") for r in records for t in r.conversations]
    texts += [time_instruction(s + 0.5, s) for s in (8, 16, 64, 128, max_seconds)]
    texts += [MC_SUFFIX, NEEDLE_QUESTION]
    texts += [" ".join(words) for words in (COLOURS, BACKGROUNDS, SHAPES, POSITIONS, DIRECTIONS)]
    return texts
