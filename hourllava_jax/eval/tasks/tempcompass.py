"""TempCompass, multiple-choice task (1,580 questions on 410 short clips; 5 temporal aspects).

Expected layout under `root` (the llyx97/TempCompass release)::

    root/
      questions/multi-choice.json
      videos/<video_id>.mp4

`multi-choice.json` maps video id -> dimension -> list of questions, as published::

    {"1034419625": {"action": [{"question": "What is the man doing?\\nA. dunking\\nB. dribbling",
                                "answer": "A. dunking"}], "speed": [...], ...}}

Dimensions: action, speed, direction, order, attribute_change. The answer names its letter
("A. dunking"); an answer without one is matched to the option text. The id is
"<video_id>/<dimension>/<index>". Category: `dimension`.
"""

from __future__ import annotations

import re
from pathlib import Path

from hourllava_jax.eval.items import (
    BAD_ANSWER,
    BAD_OPTIONS,
    BAD_RECORD,
    EvalItem,
    LETTERS,
    Problem,
    resolve_video,
)
from hourllava_jax.eval.tasks._common import Collector, answer_letter, options_from_split, read_json, require

BENCHMARK = "tempcompass"
_OPTION = re.compile(r"\n\s*\(?([A-Z])[\.\)]\s*")


def split_question(text: str) -> tuple[str, tuple[str, ...]] | str:
    """"Q?\\nA. x\\nB. y" -> ("Q?", ("x", "y")), or an error string (letters must be A, B, ...)."""
    parts = _OPTION.split(text.strip())
    return options_from_split(parts, "X.")


def load(root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Reads the TempCompass multiple-choice questions under `root`. Returns (items, problems)."""
    root = Path(root)
    out = Collector(BENCHMARK)
    data = read_json(root / "questions" / "multi-choice.json", out, top=dict, shape="a map video id -> dimension -> questions")
    for vid, dims in (data or {}).items():
        if not isinstance(dims, dict):
            out.problem(f"multi-choice.json[{vid}]", BAD_RECORD, "expected dimension -> list of questions")
            continue
        for dim, questions in dims.items():
            if not isinstance(questions, list):
                out.problem(f"multi-choice.json[{vid}][{dim}]", BAD_RECORD, "expected a list of questions")
                continue
            for k, qa in enumerate(questions):
                where = f"multi-choice.json[{vid}][{dim}][{k}]"
                err = require(qa, {"question": str, "answer": str})
                if err:
                    out.problem(where, BAD_RECORD, err)
                    continue
                split = split_question(qa["question"])
                if isinstance(split, str):
                    out.problem(where, BAD_OPTIONS, split)
                    continue
                question, options = split
                answer = answer_letter(qa["answer"], len(options))
                if answer is None:
                    hits = [j for j, o in enumerate(options) if o.lower() == qa["answer"].strip().lower()]
                    answer = LETTERS[hits[0]] if len(hits) == 1 else None
                if answer is None:
                    out.problem(where, BAD_ANSWER, f"answer {qa['answer']!r} names no option")
                    continue
                out.add(where, EvalItem(
                    benchmark=BENCHMARK, id=f"{vid}/{dim}/{k}", video=resolve_video(root, f"videos/{vid}.mp4"),
                    question=question, options=options, answer=answer, categories={"dimension": dim},
                    video_id=str(vid)))
    return out.result()
