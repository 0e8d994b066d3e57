"""The contracts of evaluation: a question in (`EvalItem`), an answer out (`Prediction`).

Every benchmark loader turns its own annotation format into `EvalItem`s; every answerer (the
model pipeline in `hourllava_jax.infer`, or a fake in the tests) turns an item into a
`Prediction`. Nothing here imports JAX: the readers, scoring and reports run anywhere.

Bad input never raises out of a loader: it becomes a `Problem` (benchmark, where, reason code,
message) that is counted in the report.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Problem reason codes (stable strings: they end up in reports).
MALFORMED_JSON = "malformed_json"
MISSING_FILE = "missing_file"
BAD_RECORD = "bad_record"
BAD_OPTIONS = "bad_options"
BAD_ANSWER = "bad_answer"
DUPLICATE_ID = "duplicate_id"
BAD_SUBTITLES = "bad_subtitles"
MISSING_VIDEO = "missing_video"
CORRUPT_VIDEO = "corrupt_video"
NO_FRAMES = "no_frames"
ANSWERER_ERROR = "answerer_error"


@dataclasses.dataclass(frozen=True)
class Subtitle:
    """One subtitle line: `start`/`end` in seconds (float) and its `text`."""

    start: float
    end: float
    text: str


@dataclasses.dataclass(frozen=True)
class EvalItem:
    """One multiple-choice question about one video.

    Attributes:
      benchmark: benchmark name, e.g. "videomme" (str); `key` = "benchmark/id" is global.
      id: question id, unique within the benchmark (str).
      video: absolute path of the video file (str).
      question: question text without the options (str).
      options: option texts without their "A." prefixes (tuple[str, ...]), at least 2.
      answer: correct letter, "A".."Z" (str), or None when the split has no labels.
      categories: report breakdowns, name -> value or list of values (a question may have
        several task labels, LVBench), e.g. {"duration": "long", "task": "OCR"}.
      video_id: the video's key; questions sharing it are answered with one encoding (str).
      duration: video length in seconds if the annotation says so (float | None).
      subtitles: subtitle lines when the benchmark variant uses them (tuple[Subtitle, ...]).
    """

    benchmark: str
    id: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: str | None
    categories: Mapping[str, str | list[str]] = dataclasses.field(default_factory=dict)
    video_id: str = ""
    duration: float | None = None
    subtitles: tuple[Subtitle, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.id}"

    @property
    def letters(self) -> str:
        """The valid option letters, "ABCD" for four options."""
        return LETTERS[: len(self.options)]

    @property
    def group(self) -> str:
        """Sharding/caching group: the video (falls back to the path)."""
        return self.video_id or self.video


@dataclasses.dataclass(frozen=True)
class Problem:
    """A rejected annotation item or an item that could not be answered.

    `where` names the file and entry ("lvb_val.json[17]"), `reason` is one of the codes above,
    `message` says what exactly was wrong.
    """

    benchmark: str
    where: str
    reason: str
    message: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What an answerer returns for one item.

    Attributes:
      text: raw generated text ("" in log-likelihood mode) (str).
      frame_indices: indices of the decoded frames fed to the model (tuple[int, ...]).
      timestamps: their presentation times in seconds (tuple[float, ...]).
      option_loglikelihoods: log p(option | video, question) per option, in option order, for
        log-likelihood scoring (tuple[float, ...] | None).
    """

    text: str
    frame_indices: tuple[int, ...] = ()
    timestamps: tuple[float, ...] = ()
    option_loglikelihoods: tuple[float, ...] | None = None


@runtime_checkable
class Answerer(Protocol):
    """Anything that answers items. The runner calls `answer` (generation mode) or, in
    log-likelihood mode, `option_loglikelihoods`, which returns a `Prediction` with
    `option_loglikelihoods` set (a bare list of floats is accepted too).

    Items of one video arrive consecutively (see `sharding`), so an implementation may cache
    the encoded video keyed by `item.video`; if it has `release_video(video: str)`, the runner
    calls it after the video's last question. An exception is recorded for that item only; a
    string `reason` attribute on it (as `hourllava_jax.data.errors.DataError` has) becomes the
    result's reason code.
    """

    def answer(self, item: EvalItem) -> Prediction: ...


_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[\.\):]\s*")


def strip_option_prefix(text: str, letter: str) -> str:
    """"B. a dog" / "(B) a dog" / "B: a dog" -> "a dog" when the prefix letter is `letter`."""
    m = _PREFIX.match(text)
    if m and m.group(1) == letter:
        return text[m.end() :].strip()
    return text.strip()


def coerce_options(raw: Any) -> tuple[str, ...] | str:
    """Checks a raw option list: returns the texts (letter prefixes removed) or an error string."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return f"options must be a list, got {type(raw).__name__}"
    if not 2 <= len(raw) <= len(LETTERS):
        return f"need 2..26 options, got {len(raw)}"
    out = []
    for i, opt in enumerate(raw):
        if not isinstance(opt, str) or not opt.strip():
            return f"option {i} is not a non-empty string: {opt!r}"
        out.append(strip_option_prefix(opt, LETTERS[i]))
    return tuple(out)


def resolve_video(root: Path, relative: str) -> str:
    """The absolute path of a video named relative to `root` (no existence check here: the
    runner records missing videos per item, so one absent file never hides the others)."""
    return str((root / relative).resolve())
