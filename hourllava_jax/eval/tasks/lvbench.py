"""LVBench (1,549 questions on 103 videos of about 68 min on average).

Expected layout under `root` (the THUDM/LVBench release)::

    root/
      video_info.meta.jsonl   (or data/video_info.meta.jsonl)   # one video per line
      videos/<key>.mp4

A line, as published: {`key` (YouTube id), `type` (video type, e.g. "documentary"),
`video_info`: {`duration_minutes`, ...}, `qa`: [{`uid`, `question` (the question followed by
"\\n(A) ...\\n(B) ...\\n(C) ...\\n(D) ..."), `answer` ("C"), `question_type` (a list, e.g.
["entity recognition", "key information retrieval"]), `time_reference`}]}.

Categories: `task` = the question_type list (a question counts in each of its types, as in the
paper's per-type table), `video_type` = `type`.
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
from hourllava_jax.eval.tasks._common import Collector, answer_letter, number, options_from_split, read_jsonl, require

BENCHMARK = "lvbench"
_OPTION = re.compile(r"\n\s*\(([A-Z])\)\s*")


def split_question(text: str) -> tuple[str, tuple[str, ...]] | str:
    """"Q?\\n(A) x\\n(B) y" -> ("Q?", ("x", "y")), or an error string.

    The letters must run A, B, C, ... in order, so a "(B)" inside an option's text that is not
    at a line start is left alone."""
    parts = _OPTION.split("\n" + text.strip() if text.lstrip().startswith("(A)") else text)
    return options_from_split(parts, "(X)")


def load(root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Reads LVBench under `root`. Returns (items, problems); never raises on bad input."""
    root = Path(root)
    out = Collector(BENCHMARK)
    meta = root / "video_info.meta.jsonl"
    if not meta.is_file() and (root / "data" / "video_info.meta.jsonl").is_file():
        meta = root / "data" / "video_info.meta.jsonl"
    for where, video in read_jsonl(meta, out):
        err = require(video, {"key": str, "qa": list})
        if err:
            out.problem(where, BAD_RECORD, err)
            continue
        info = video.get("video_info") if isinstance(video.get("video_info"), dict) else {}
        minutes = number(info.get("duration_minutes"))
        duration = None if minutes is None else minutes * 60
        for j, qa in enumerate(video["qa"]):
            qwhere = f"{where} qa[{j}]"
            err = require(qa, {"uid": (str, int), "question": str, "answer": str})
            if err:
                out.problem(qwhere, BAD_RECORD, err)
                continue
            split = split_question(qa["question"])
            if isinstance(split, str):
                out.problem(qwhere, BAD_OPTIONS, split)
                continue
            question, options = split
            answer = answer_letter(qa["answer"], len(options))
            if answer is None:
                out.problem(qwhere, BAD_ANSWER, f"answer {qa['answer']!r} is not one of {LETTERS[:len(options)]}")
                continue
            qtype = qa.get("question_type")
            tasks = [t for t in qtype if isinstance(t, str)] if isinstance(qtype, list) else (
                [qtype] if isinstance(qtype, str) else [])
            cats: dict[str, str | list[str]] = {"task": tasks} if tasks else {}
            if isinstance(video.get("type"), str):
                cats["video_type"] = video["type"]
            out.add(qwhere, EvalItem(
                benchmark=BENCHMARK, id=str(qa["uid"]), video=resolve_video(root, f"videos/{video['key']}.mp4"),
                question=question, options=options, answer=answer, categories=cats,
                video_id=video["key"], duration=duration))
    return out.result()
