"""The number each benchmark's paper leads with, computed from result records.

| benchmark | headline | beside it |
|---|---|---|
| Video-MME (`videomme`, `videomme_sub`) | overall accuracy | short / medium / long |
| LongVideoBench | overall accuracy | per duration group (8-15s, 15-60s, 180-600s, 900-3600s) |
| MLVU (dev, multiple choice) | **M-avg**: the mean of the seven task accuracies | per task |
| LVBench | overall accuracy | per question type (multi-label) |
| TempCompass (multi-choice) | overall accuracy | per temporal dimension |
| needle | accuracy | per depth |

M-avg weighs every task equally whatever its size (MLVU's tasks range from ~100 to ~400
questions), so it differs from the micro accuracy; lmms-eval's ``mlvu_aggregate_results_dev``
computes the same mean. A task with no result is left out of the mean and the headline says
how many tasks it covers (lmms-eval would count it as 0%: a partial run is never comparable).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Headline:
    """metric: its name in the paper; group_by: the category key shown beside it (None: none);
    order: the paper's group order (others follow, sorted); macro: the headline is the mean of
    the per-group accuracies (MLVU's M-avg) instead of correct / results."""

    metric: str
    group_by: str | None = None
    order: tuple[str, ...] = ()
    macro: bool = False


_VIDEOMME = Headline("overall accuracy", "duration", ("short", "medium", "long"))
HEADLINES: dict[str, Headline] = {
    "videomme": _VIDEOMME,
    "videomme_sub": _VIDEOMME,
    "longvideobench": Headline("overall accuracy", "length", ("8-15s", "15-60s", "180-600s", "900-3600s")),
    "mlvu": Headline("M-avg", "task", ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning"),
                     macro=True),
    "lvbench": Headline("overall accuracy", "task", ("entity recognition", "event understanding", "key information retrieval",
                                                     "temporal grounding", "reasoning", "summarization")),
    "tempcompass": Headline("overall accuracy", "dimension", ("action", "speed", "direction", "order", "attribute_change")),
    "needle": Headline("accuracy", "depth"),
}
DEFAULT = Headline("accuracy")


def _values(record: Record, key: str) -> list[str]:
    v = (record.get("categories") or {}).get(key)
    return [] if v is None else [str(x) for x in v] if isinstance(v, list) else [str(v)]


def compute(records: Sequence[Record], benchmark: str,
            correct: Callable[[Record], bool] = lambda r: bool(r.get("correct"))) -> dict[str, Any]:
    """The headline of `benchmark` over `records` with ``correct(record)`` deciding each one.

    Returns {"metric", "value" (float | None), "n", "group_by", "groups": {group: {"n",
    "n_correct", "accuracy"}} (paper order first), "n_groups", "n_groups_expected"}.
    """
    spec = HEADLINES.get(benchmark, DEFAULT)
    n = len(records)
    hits = [bool(correct(r)) for r in records]
    groups: dict[str, list[int]] = {}
    if spec.group_by is not None:
        for r, hit in zip(records, hits):
            for g in _values(r, spec.group_by):
                cell = groups.setdefault(g, [0, 0])
                cell[0] += 1
                cell[1] += hit
    names = [g for g in spec.order if g in groups] + sorted(g for g in groups if g not in spec.order)
    table = {g: {"n": groups[g][0], "n_correct": groups[g][1], "accuracy": groups[g][1] / groups[g][0]} for g in names}
    if spec.macro:
        value = sum(c["accuracy"] for c in table.values()) / len(table) if table else None
    else:
        value = sum(hits) / n if n else None
    return {"metric": spec.metric, "value": value, "n": n, "group_by": spec.group_by, "groups": table,
            "n_groups": len(table), "n_groups_expected": len(spec.order) or None}
