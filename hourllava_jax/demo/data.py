"""The demo's data on disk: needle mp4 datasets, the questions in the evaluation's form, and the
small tokenizer.

Train and held-out sets are separate ``make_needle_dataset`` calls with different seeds, so no
held-out video (haystack, needle colour or placement) is ever seen in training. Every question is
asked exactly as the evaluation runner asks a needle-benchmark item (``eval/prompt.py``: the
question, the four colours as options A-D in a fixed order, the answer instruction) and answered
with the continuation the runner scores (``"A. red"``), so training and evaluation read the same
text. The held-out split is also written as a needle-benchmark root (``needle.json``,
``eval/tasks/needle.py``) that ``launch/evaluate.py --benchmark needle`` reads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from hourllava_jax.data.records import Record, load_records, video_path
from hourllava_jax.data.synthetic import NEEDLE_COLOURS, NEEDLE_QUESTION, corpus_texts, make_needle_dataset
from hourllava_jax.data.tokenizer import build_tokenizer, load_tokenizer
from hourllava_jax.eval.answerer import continuation
from hourllava_jax.eval.items import LETTERS, EvalItem
from hourllava_jax.eval.prompt import build_prompt

RECORDS = "needle.jsonl"
BENCHMARK_FILE = "needle.json"  # the needle benchmark's annotation file (eval/tasks/needle.py)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One ``make_needle_dataset`` call: every (length, depth, repeat) cell is one video."""

    seed: int
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    repeats: int

    @property
    def num_videos(self) -> int:
        return len(self.lengths) * len(self.depths) * self.repeats


def make_split(root: str | Path, spec: SplitSpec, *, size: int = 64, records_name: str = RECORDS) -> list[Record]:
    """Writes (or reuses, if its records file exists) the mp4 videos and records of one split."""
    root = Path(root)
    if not (root / records_name).is_file():
        make_needle_dataset(root, seed=spec.seed, lengths=spec.lengths, depths=spec.depths, repeats=spec.repeats,
                            size=size, records_name=records_name)
    return load_records(root / records_name)


def needle(record: Record) -> dict:
    """The needle metadata ``make_needle_dataset`` stores: frame, colour, depth, length_seconds, n_frames."""
    return record.extra["needle"]


def eval_item(record: Record, video: str | Path, colour: str | None = None) -> EvalItem:
    """The record's question as a needle-benchmark item: options in ``NEEDLE_COLOURS`` order."""
    n = needle(record)
    colour = colour or n["colour"]
    return EvalItem(benchmark="needle", id=record.id, video=str(video), question=NEEDLE_QUESTION,
                    options=tuple(NEEDLE_COLOURS), answer=LETTERS[NEEDLE_COLOURS.index(colour)],
                    categories={"depth": f"{float(n['depth']):.2f}", "length": str(int(n["length_seconds"]))},
                    video_id=record.id, duration=float(record.extra.get("duration", n["length_seconds"])))


def question_text(item: EvalItem) -> str:
    """The user text the evaluation runner builds for ``item`` (no subtitles: every line kept)."""
    return build_prompt(item)


def answer_text(item: EvalItem) -> str:
    """The continuation the runner scores in log-likelihood mode (``"{letter}. {option}"``)."""
    return continuation(item.answer, item.options[LETTERS.index(item.answer)])


def write_benchmark(root: str | Path, records: Sequence[Record]) -> Path:
    """``root/needle.json`` listing ``records``' videos (paths relative to ``root``)."""
    root = Path(root)
    rows = []
    for r in records:
        it = eval_item(r, video_path(root, r))
        n = needle(r)
        rows.append({"id": r.id, "video": str(Path(it.video).relative_to(root)), "question": it.question,
                     "options": list(it.options), "answer": it.answer, "depth": float(n["depth"]),
                     "length": int(n["length_seconds"]), "duration": it.duration, "needle_frame": int(n["frame"])})
    path = root / BENCHMARK_FILE
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return path


def make_tokenizer(texts: Sequence[str], out_dir: str | Path, vocab_size: int):
    """The project's small BPE (Qwen2 special tokens at 0, 1, 2), trained on ``texts``."""
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file():
        return load_tokenizer(out_dir)
    return build_tokenizer(list(texts), vocab_size, out_dir)


def tokenizer_texts(records: Sequence[Record], questions: Sequence[str]) -> list[str]:
    """Every text the model reads: the records' own texts (time instructions up to an hour,
    colour words) plus the questions and answers in their evaluation form."""
    return corpus_texts(records) + list(questions)
