"""Aggregation as published (MLVU M-avg, Video-MME per duration, LongVideoBench per duration
group) and LongVideoBench's lmms-eval parse convention beside the strict score."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hourllava_jax.eval import conventions, headline, report
from hourllava_jax.eval.runner import shard_path


def _rec(bench: str, i: int, cats: dict, correct: bool, *, raw: str | None = None, answer: str = "A",
         status: str = "ok", n_options: int = 4, mode: str = "generate") -> dict:
    return {"key": f"{bench}/{i}", "benchmark": bench, "id": str(i), "categories": cats, "answer": answer,
            "n_options": n_options, "mode": mode, "status": status, "raw_output": raw if raw is not None else answer,
            "parse_failed": False, "correct": correct, "reason_code": None if status == "ok" else "missing_video"}


def _write(out: Path, bench: str, records: list[dict]) -> None:
    path = shard_path(out, bench, 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_mlvu_m_avg_is_the_mean_of_task_accuracies(tmp_path: Path):
    # Unequal task sizes: plotQA 1/4, needle 1/1, count 1/2 -> M-avg (0.25 + 1 + 0.5) / 3, micro 3/7.
    recs = ([_rec("mlvu", i, {"task": "plotQA"}, i == 0) for i in range(4)]
            + [_rec("mlvu", 10, {"task": "needle"}, True)]
            + [_rec("mlvu", 20 + i, {"task": "count"}, i == 0) for i in range(2)])
    _write(tmp_path, "mlvu", recs)
    rep = report.merge(tmp_path)["mlvu"]
    h = rep["headline"]
    assert h["metric"] == "M-avg"
    assert h["value"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)
    assert rep["accuracy"] == pytest.approx(3 / 7) and h["value"] != pytest.approx(rep["accuracy"])
    assert list(h["groups"]) == ["plotQA", "needle", "count"]  # the paper's task order
    assert h["n_groups"] == 3 and h["n_groups_expected"] == 7
    assert rep["lmms_eval"] is None  # MLVU's scorer counts a parse failure as wrong too
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[0].startswith("| benchmark | headline | strict (%)")
    assert md[2].startswith("| mlvu | M-avg | 58.3 (3/7 tasks) | - |")


def test_videomme_overall_and_per_duration():
    recs = ([_rec("videomme", i, {"duration": "long"}, i < 1) for i in range(4)]
            + [_rec("videomme", 10 + i, {"duration": "short"}, True) for i in range(2)]
            + [_rec("videomme", 20, {"duration": "medium"}, False)])
    h = headline.compute(recs, "videomme")
    assert h["metric"] == "overall accuracy" and h["value"] == pytest.approx(3 / 7)
    assert list(h["groups"]) == ["short", "medium", "long"]
    assert [h["groups"][g]["accuracy"] for g in ("short", "medium", "long")] == [1.0, 0.0, 0.25]
    assert headline.compute(recs, "videomme_sub")["groups"] == h["groups"]


def test_longvideobench_groups_and_lmms_eval_convention():
    recs = [
        _rec("longvideobench", 0, {"length": "900-3600s"}, True, raw="B", answer="B"),
        _rec("longvideobench", 1, {"length": "8-15s"}, True, raw="The best answer is C.", answer="C"),
        # Strict parse failure ("A dog" is the article), lmms-eval's first capital A-E: "A", right.
        _rec("longvideobench", 2, {"length": "8-15s"}, False, raw="A dog runs", answer="A"),
        _rec("longvideobench", 3, {"length": "15-60s"}, False, raw="no idea at all", answer="B"),
        _rec("longvideobench", 4, {"length": "15-60s"}, False, status="error", answer="B"),
    ]
    recs[2]["parse_failed"] = recs[3]["parse_failed"] = True
    rep = report.summarize(recs, None, "longvideobench")
    h, c = rep["headline"], rep["lmms_eval"]
    assert list(h["groups"]) == ["8-15s", "15-60s", "900-3600s"]
    assert h["value"] == pytest.approx(2 / 5) and h["groups"]["8-15s"]["accuracy"] == 0.5
    drawn = conventions.seeded_choice("longvideobench/3", 4)
    assert c["n_random"] == 1 and c["value"] == pytest.approx((3 + (drawn == "B")) / 5)
    assert c["groups"]["8-15s"]["accuracy"] == 1.0 and c["groups"]["15-60s"]["n"] == 2
    assert rep["n_parse_failures"] == 2 and rep["parse_failure_rate"] == pytest.approx(2 / 4)


@pytest.mark.parametrize("text,letter,drawn", [
    ("B", "B", False), ("(C)", "C", False), ("The best answer is D.", "D", False), ("D. A book", "D", False),
    ("The answer: E", "E", False),  # E exists for lmms-eval even with 4 options: wrong, not random
    ("Best option: (B) a cat", "B", False), ("A dog", "A", False),
])
def test_longvideobench_parser(text, letter, drawn):
    assert conventions.longvideobench_letter(text, 4, "k") == (letter, drawn)


def test_longvideobench_random_choice_is_seeded_and_uniform():
    # The same key always draws the same letter (any sharding, any resume); over many keys every
    # option is drawn about equally often, so the expected score of a non-answer is 1 / n.
    first = [conventions.longvideobench_letter("I cannot tell", 4, f"lvb/{i}") for i in range(400)]
    again = [conventions.longvideobench_letter("I cannot tell", 4, f"lvb/{i}") for i in range(400)]
    assert first == again and all(d for _, d in first)
    counts = Counter(letter for letter, _ in first)
    assert set(counts) == set("ABCD") and all(70 <= n <= 130 for n in counts.values())
    assert conventions.seeded_choice("lvb/0", 4, seed=1) in "ABCD"
    assert [conventions.seeded_choice(f"k{i}", 5) for i in range(50)].count("E") > 0  # all 5 options


def test_loglikelihood_and_other_benchmarks_keep_the_strict_verdict():
    ll = _rec("longvideobench", 0, {}, True, mode="loglikelihood", raw="")
    assert conventions.lmms_eval_correct(ll) == (True, False)
    assert conventions.lmms_eval_correct(_rec("videomme", 0, {}, False, raw="???")) is None
