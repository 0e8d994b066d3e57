"""LongVideoBench, validation split (1,337 questions; videos from 8 s to 1 h).

Expected layout under `root` (the Hugging Face `longvideobench/LongVideoBench` release with
`videos.tar` extracted)::

    root/
      lvb_val.json          # list of questions
      videos/<video_path>   # e.g. videos/86CxyhFV9MI.mp4

Fields used, as published: `id`, `video_id`, `video_path`, `question`, `candidates` (4 or 5 option
texts, no letters), `correct_choice` (0-based index), `duration_group` (15 | 60 | 600 | 3600),
`duration` (seconds), `question_category` (e.g. "S2E"), `topic_category`, `level`.

Categories: `length` = the duration group as the paper's bucket ("8-15s", "15-60s",
"180-600s", "900-3600s"), `category` = question_category, `topic`, `level`. Evaluated without
subtitles (the `_v` setting of lmms-eval's longvideobench_val_v, as in the paper's table).
"""

from __future__ import annotations

from pathlib import Path

from hourllava_jax.eval.items import BAD_ANSWER, BAD_RECORD, EvalItem, LETTERS, Problem, resolve_video
from hourllava_jax.eval.tasks._common import Collector, checked_options, number, read_json

BENCHMARK = "longvideobench"
LENGTH_BUCKETS = {15: "8-15s", 60: "15-60s", 600: "180-600s", 3600: "900-3600s"}
_FIELDS = {"id": str, "video_path": str, "question": str, "candidates": list, "correct_choice": int,
           "duration_group": (int, float)}


def load(root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Reads lvb_val.json under `root`. Returns (items, problems); never raises on bad input."""
    root = Path(root)
    out = Collector(BENCHMARK)
    data = read_json(root / "lvb_val.json", out, top=list)
    for i, row in enumerate(data or []):
        where = f"lvb_val.json[{i}]"
        options = checked_options(row, _FIELDS, "candidates", where, out)
        if options is None:
            continue
        choice = row["correct_choice"]
        if not 0 <= choice < len(options):
            out.problem(where, BAD_ANSWER, f"correct_choice {choice} outside 0..{len(options) - 1}")
            continue
        group = int(row["duration_group"])
        if group not in LENGTH_BUCKETS:
            out.problem(where, BAD_RECORD, f"duration_group {group} not in {sorted(LENGTH_BUCKETS)}")
            continue
        cats = {"length": LENGTH_BUCKETS[group]}
        for src, dst in (("question_category", "category"), ("topic_category", "topic"), ("level", "level")):
            if isinstance(row.get(src), str) and row[src]:
                cats[dst] = row[src]
        out.add(where, EvalItem(
            benchmark=BENCHMARK, id=row["id"], video=resolve_video(root / "videos", row["video_path"]),
            question=row["question"].strip(), options=options, answer=LETTERS[choice], categories=cats,
            video_id=str(row.get("video_id") or row["video_path"]),
            duration=number(row.get("duration"))))
    return out.result()
