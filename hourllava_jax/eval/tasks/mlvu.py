"""MLVU dev, the seven multiple-choice tasks (2,174 questions; videos 3 min to 2 h).

Expected layout under `root` (the `MLVU/` folder of the Hugging Face `MLVU/MVLU` release)::

    root/
      json/1_plotQA.json  2_needle.json  3_ego.json  4_count.json  5_order.json
           6_anomaly_reco.json  7_topic_reasoning.json
      video/1_plotQA/<video>  video/2_needle/<video>  ...   # one folder per json, same stem

Each json is a list of {`video`, `duration` (seconds), `question`, `candidates` (option texts),
`answer` (the text of the right candidate, not a letter), `question_type`}. MLVU has no question
ids: the id is "<stem>/<index in file>", stable as long as the files are. The open-ended tasks
(8_sub_scene, 9_summary: GPT-judged in the paper) are not read. Category: `task`.
"""

from __future__ import annotations

from pathlib import Path

from hourllava_jax.eval.items import BAD_ANSWER, EvalItem, LETTERS, Problem, resolve_video
from hourllava_jax.eval.tasks._common import Collector, checked_options, number, read_json

BENCHMARK = "mlvu"
TASK_FILES = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")
_FIELDS = {"video": str, "question": str, "candidates": list, "answer": str}


def load(root: str | Path) -> tuple[list[EvalItem], list[Problem]]:
    """Reads the MLVU dev multiple-choice tasks under `root`. Returns (items, problems)."""
    root = Path(root)
    out = Collector(BENCHMARK)
    for stem in TASK_FILES:
        data = read_json(root / "json" / f"{stem}.json", out, top=list)
        for i, row in enumerate(data or []):
            where = f"{stem}.json[{i}]"
            options = checked_options(row, _FIELDS, "candidates", where, out)
            if options is None:
                continue
            matches = [k for k, o in enumerate(row["candidates"]) if o.strip() == row["answer"].strip()]
            if len(matches) != 1:
                out.problem(where, BAD_ANSWER,
                            f"answer {row['answer']!r} matches {len(matches)} candidates, need exactly 1")
                continue
            out.add(where, EvalItem(
                benchmark=BENCHMARK, id=f"{stem}/{i}", video=resolve_video(root / "video" / stem, row["video"]),
                question=row["question"].strip(), options=options, answer=LETTERS[matches[0]],
                categories={"task": str(row.get("question_type") or stem.split("_", 1)[1])},
                video_id=f"{stem}/{row['video']}",
                duration=number(row.get("duration"))))
    return out.result()
