"""Benchmark readers on fixture annotations in each published format (see conftest)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hourllava_jax.eval import tasks
from hourllava_jax.eval.items import (
    BAD_ANSWER,
    BAD_OPTIONS,
    BAD_RECORD,
    BAD_SUBTITLES,
    DUPLICATE_ID,
    MALFORMED_JSON,
    MISSING_FILE,
    Problem,
    Subtitle,
)
from hourllava_jax.eval.tasks import needle, videomme


def _reasons(problems: list[Problem]) -> Counter:
    return Counter(p.reason for p in problems)


def test_videomme_items_and_problems(videomme_root: Path):
    items, problems = tasks.load("videomme", videomme_root)
    assert [x.id for x in items] == ["001-1", "001-2", "301-1", "601-1"]
    first = items[0]
    assert first.key == "videomme/001-1"
    assert first.options == ("1", "2", "3", "4")  # "A. " prefixes stripped
    assert first.answer == "B" and first.video_id == "vidShort01"
    assert first.video == str((videomme_root / "data" / "vidShort01.mp4").resolve())
    assert first.categories == {"duration": "short", "task": "Counting Problem", "domain": "Knowledge",
                                "sub_category": "Astronomy"}
    assert [x.categories["duration"] for x in items] == ["short", "short", "medium", "long"]
    assert first.subtitles == ()  # the no-subtitle variant never reads them
    assert _reasons(problems) == {BAD_RECORD: 2, BAD_OPTIONS: 1, BAD_ANSWER: 1, DUPLICATE_ID: 1}
    assert any("missing field 'question'" in p.message for p in problems)
    assert any("'huge'" in p.message for p in problems)


def test_videomme_with_subtitles(videomme_root: Path):
    items, problems = tasks.load("videomme_sub", videomme_root)
    assert {x.benchmark for x in items} == {"videomme_sub"}
    subs = items[0].subtitles
    assert [(s.start, s.end, s.text) for s in subs] == [(0.0, 1.5, "Hello there"), (2.0, 3.0, "second line"),
                                                        (10.0, 11.0, "never sampled")]
    assert items[2].subtitles == ()  # its .srt is garbage: recorded, question kept
    assert _reasons(problems)[BAD_SUBTITLES] == 1


def test_parse_srt_tolerates_variants():
    subs = videomme.parse_srt("00:01:02.5 --> 00:01:03,250\r\nline one\r\nline two\r\n")
    assert subs == (Subtitle(62.5, 63.25, "line one line two"),)


def test_longvideobench(longvideobench_root: Path):
    items, problems = tasks.load("longvideobench", longvideobench_root)
    assert [x.id for x in items] == ["lvbA_0", "lvbB_0"]
    a, b = items
    assert a.options == ("red", "blue", "green", "black", "white") and a.answer == "D"
    assert a.categories == {"length": "8-15s", "category": "S2A", "topic": "NP-News-Programs", "level": "L1-Perception"}
    assert b.categories["length"] == "900-3600s" and b.answer == "A" and b.duration == 3000.0
    assert a.video.endswith("videos/lvbA.mp4")
    assert _reasons(problems) == {BAD_ANSWER: 1, BAD_RECORD: 2}


def test_mlvu(mlvu_root: Path):
    items, problems = tasks.load("mlvu", mlvu_root)
    assert [(x.id, x.answer, x.categories["task"]) for x in items] == [("1_plotQA/0", "C", "plotQA"),
                                                                         ("5_order/0", "B", "order")]
    assert items[0].video.endswith("video/1_plotQA/movie_1.mp4") and items[0].duration == 300.0
    # 4 task files absent, 1 unparsable, 1 answer that is no candidate.
    assert _reasons(problems) == {MISSING_FILE: 4, MALFORMED_JSON: 1, BAD_ANSWER: 1}


def test_lvbench(lvbench_root: Path):
    items, problems = tasks.load("lvbench", lvbench_root)
    assert [x.id for x in items] == ["101", "102", "201"]
    first = items[0]
    assert first.question == "What is shown first?"
    assert first.options == ("a dog", "a cat", "a bird", "a fish") and first.answer == "B"
    assert first.categories == {"task": ["entity recognition", "key information retrieval"], "video_type": "documentary"}
    assert first.duration == 65.5 * 60
    assert items[1].options == ("rain", "(C) confusion", "night", "noise") and items[1].answer == "C"
    assert items[2].video.endswith("videos/keyMissing01.mp4")  # missing video: the runner records it
    assert _reasons(problems) == {MALFORMED_JSON: 1, BAD_OPTIONS: 2, BAD_RECORD: 1}


def test_tempcompass(tempcompass_root: Path):
    items, problems = tasks.load("tempcompass", tempcompass_root)
    got = {x.id: (x.answer, x.options, x.categories["dimension"]) for x in items}
    assert got == {
        "1034419625/action/0": ("A", ("dunking a basketball", "dribbling a basketball", "passing a basketball"), "action"),
        "1034419625/speed/0": ("C", ("slow", "normal", "fast"), "speed"),  # answer given as text
        "1006708363/direction/0": ("D", ("left", "right", "towards", "away"), "direction"),
    }
    assert items[0].question == "What is the man doing in the video?"
    assert _reasons(problems) == {BAD_OPTIONS: 1, BAD_RECORD: 1}


def test_missing_root_is_a_problem_not_a_crash(tmp_path: Path):
    for name in tasks.NAMES:
        items, problems = tasks.load(name, tmp_path / "nothing")
        assert items == [] and problems and {p.reason for p in problems} == {MISSING_FILE}, name


def test_needle_build_load_and_heatmap(tmp_path: Path, make_video):
    src = make_video(tmp_path / "hay.mp4", n_frames=3, value=120)
    items, problems = needle.build([src, tmp_path / "absent.mp4"], tmp_path / "needle", depths=[0.0, 0.5, 1.0],
                                   lengths=[4, 8], size=32)
    assert _reasons(problems) == {MISSING_FILE: 1}
    assert len(items) == 6 and {x.categories["length"] for x in items} == {"4", "8"}
    assert [x.answer for x in items] == ["A", "B", "C", "D", "A", "B"]  # colours cycle
    # The needle frame sits at depth d of the haystack: decode and find the pure colour.
    item = next(x for x in items if x.id == "d0.50_L8_0")
    frames = needle.sample_frames(item.video, 1, 32, 100)
    assert len(frames) == 9
    colour = np.array(needle.COLORS[item.options["ABCD".index(item.answer)]])
    dist = [np.abs(f.astype(int).mean((0, 1)) - colour).max() for f in frames]
    assert int(np.argmin(dist)) == 4 and min(dist) < 20
    rows = json.loads((tmp_path / "needle" / "needle.json").read_text())
    assert rows[0]["depth"] == 0.0 and rows[0]["duration"] == 5.0
    records = [{"categories": x.categories, "correct": x.categories["depth"] != "1.00"} for x in items]
    grid = needle.write_heatmap(records, tmp_path / "heat.png")
    assert grid.shape == (3, 2) and np.array_equal(grid, [[1, 1], [1, 1], [0, 0]])
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_videomme_official_parquet_and_other_extensions(videomme_root: Path, tmp_path: Path, make_video):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rows = json.loads((videomme_root / "videomme.json").read_text())
    root = tmp_path / "parquet_root"
    (root / "videomme").mkdir(parents=True)
    good = [r for r in rows if r.get("question") and len(r["options"]) == 4 and r["answer"] in "ABCD"][:4]
    pq.write_table(pa.Table.from_pylist(good), root / "videomme" / "test-00000-of-00001.parquet")
    make_video(root / "data" / "vidShort01.MP4")
    items, problems = videomme.load(root)
    assert [x.id for x in items] == ["001-1", "001-2", "301-1", "601-1"] and problems == []
    assert items[0].video.endswith("data/vidShort01.MP4")
    assert items[2].video.endswith("data/vidMedium1.mp4")  # absent: the runner will report it
    (root / "videomme" / "test-00000-of-00001.parquet").write_bytes(b"PAR1 garbage")
    assert _reasons(videomme.load(root)[1]) == {MALFORMED_JSON: 1}


@pytest.mark.parametrize("name, rel", [("needle", "needle.json"), ("longvideobench", "lvb_val.json")])
def test_wrong_top_level_is_a_recorded_problem(tmp_path, name, rel):
    (tmp_path / rel).write_text('{"not": "a list"}')
    items, problems = tasks.load(name, tmp_path)
    assert items == [] and any("top level must be a list" in p.message for p in problems)
