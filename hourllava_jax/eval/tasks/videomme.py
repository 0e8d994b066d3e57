"""Video-MME (2,700 questions, 900 videos; short < 2 min, medium 4-15 min, long 30-60 min).

Expected layout under `root` (the Hugging Face `lmms-lab/Video-MME` release, unzipped)::

    root/
      videomme/test-00000-of-00001.parquet   # official annotations (read with pyarrow), or
      videomme.json | videomme.jsonl         # the same rows exported as JSON (list / one per line)
      data/<videoID>.mp4                     # videos (.MP4 / .mkv also found, as some are)
      subtitle/<videoID>.srt                 # subtitles (only some videos have them)

One row per question, fields as published: `video_id` ("001"), `duration`
("short"|"medium"|"long"), `domain`, `sub_category`, `videoID` (YouTube id, the file name),
`question_id` ("001-1"), `task_type`, `question`, `options` (["A. ...", "B. ...", "C. ...",
"D. ..."]), `answer` ("C").

Two variants: `load(root)` -> benchmark "videomme" (no subtitles), `load(root, subtitles=True)`
-> "videomme_sub" with the parsed SRT lines on each item (prompt.py keeps the lines that cover
the sampled frames, as lmms-eval does). Categories: `duration`, `domain`, `sub_category`, `task`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hourllava_jax.eval.items import (
    BAD_ANSWER,
    BAD_RECORD,
    BAD_SUBTITLES,
    EvalItem,
    LETTERS,
    MALFORMED_JSON,
    MISSING_FILE,
    Problem,
    Subtitle,
    resolve_video,
)
from hourllava_jax.eval.tasks._common import Collector, answer_letter, checked_options, read_json, read_jsonl

DURATIONS = ("short", "medium", "long")
_FIELDS = {"videoID": str, "question_id": str, "question": str, "options": list, "answer": str, "duration": str}


def _rows(root: Path, out: Collector) -> list[tuple[str, Any]]:
    parquet = root / "videomme" / "test-00000-of-00001.parquet"
    if parquet.is_file():
        try:
            import pyarrow.parquet as pq  # optional: only the official parquet needs it
        except ImportError:
            out.problem(str(parquet), MISSING_FILE, "pyarrow is not installed; export the rows to videomme.json")
            return []
        try:
            rows = pq.read_table(parquet).to_pylist()
        except Exception as e:  # any pyarrow failure = an unreadable annotation file
            out.problem(str(parquet), MALFORMED_JSON, f"unreadable parquet: {e}")
            return []
        return [(f"{parquet.name}[{i}]", r) for i, r in enumerate(rows)]
    if (root / "videomme.jsonl").is_file():
        return read_jsonl(root / "videomme.jsonl", out)
    data = read_json(root / "videomme.json", out, top=list, shape="a list of rows")
    if data is None:
        return []
    return [(f"videomme.json[{i}]", r) for i, r in enumerate(data)]


_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")


def _seconds(m: re.Match) -> float:
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def parse_srt(text: str) -> tuple[Subtitle, ...]:
    """SubRip text -> subtitle lines (float seconds). Raises ValueError if no cue parses.

    Tolerant of the index line missing, CRLF line ends, "." instead of "," before the
    milliseconds, and of HTML-ish tags (<i>, <font>), which are removed.
    """
    subs = []
    for block in re.split(r"\r?\n\s*\r?\n", text.strip()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        for k, line in enumerate(lines):
            if "-->" in line:
                times = list(_TIME.finditer(line))
                if len(times) != 2:
                    break
                body = re.sub(r"<[^>]+>", "", " ".join(lines[k + 1 :])).strip()
                if body:
                    subs.append(Subtitle(_seconds(times[0]), _seconds(times[1]), body))
                break
    if not subs and text.strip():
        raise ValueError("no SubRip cue could be parsed")
    return tuple(subs)


def _video(root: Path, video_id: str) -> str:
    # A few Video-MME files ship as .MP4 or .mkv; the runner reports the .mp4 path if none exists.
    for ext in (".mp4", ".MP4", ".mkv"):
        if (root / "data" / f"{video_id}{ext}").is_file():
            return resolve_video(root, f"data/{video_id}{ext}")
    return resolve_video(root, f"data/{video_id}.mp4")


def load(root: str | Path, subtitles: bool = False) -> tuple[list[EvalItem], list[Problem]]:
    """Reads Video-MME under `root`. Returns (items, problems); never raises on bad input."""
    root = Path(root)
    out = Collector("videomme_sub" if subtitles else "videomme")
    for where, row in _rows(root, out):
        options = checked_options(row, _FIELDS, "options", where, out)
        if options is None:
            continue
        answer = answer_letter(row["answer"], len(options))
        if answer is None:
            out.problem(where, BAD_ANSWER, f"answer {row['answer']!r} is not one of {LETTERS[:len(options)]}")
            continue
        if row["duration"] not in DURATIONS:
            out.problem(where, BAD_RECORD, f"duration {row['duration']!r} not in {DURATIONS}")
            continue
        subs: tuple[Subtitle, ...] = ()
        srt = root / "subtitle" / f"{row['videoID']}.srt"
        if subtitles and srt.is_file():
            try:
                subs = parse_srt(srt.read_text(encoding="utf-8", errors="replace"))
            except ValueError as e:
                # The question stays answerable without subtitles; the report counts the problem.
                out.problem(str(srt), BAD_SUBTITLES, str(e))
        cats = {"duration": row["duration"], "task": str(row.get("task_type", "")),
                "domain": str(row.get("domain", "")), "sub_category": str(row.get("sub_category", ""))}
        out.add(where, EvalItem(
            benchmark=out.benchmark, id=row["question_id"],
            video=_video(root, row["videoID"]),
            question=row["question"].strip(), options=options, answer=answer,
            categories={k: v for k, v in cats.items() if v}, video_id=row["videoID"], subtitles=subs))
    return out.result()
