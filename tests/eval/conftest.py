"""Fixtures of the evaluation tests: tiny videos (PyAV, 32x32, 4 frames at 1 FPS) and benchmark
directories written in each benchmark's published annotation format, each with some malformed
entries and one missing video, plus a deterministic fake answerer."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from hourllava_jax.eval.tasks.needle import encode_video
from hourllava_jax.eval.items import LETTERS, EvalItem, Prediction


def write_video(path: Path, n_frames: int = 4, value: int = 90) -> Path:
    frames = [np.full((32, 32, 3), (value + 20 * i) % 256, np.uint8) for i in range(n_frames)]
    encode_video(path, frames, fps=1)
    return path


class FakeAnswerer:
    """Deterministic in the item: right for 2 of 3 items (by crc32 of the key), in rotating
    response styles, wrong otherwise; one unparsable style; raises for ids in `fail_ids`."""

    STYLES = ("{L}", "({L})", "Answer: {L}", "{L}. {T}", "The answer is {L}.", "{T}")

    def __init__(self, fail_ids: tuple[str, ...] = (), interrupt_after: int | None = None):
        self.fail_ids = fail_ids
        self.interrupt_after = interrupt_after
        self.calls = 0

    def answer(self, item: EvalItem) -> Prediction:
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        if item.id in self.fail_ids:
            raise RuntimeError("model exploded")
        h = zlib.crc32(item.key.encode())
        k = LETTERS.index(item.answer)
        if h % 3 == 0:
            k = (k + 1) % len(item.options)
        if h % 7 == 0:
            text = "I cannot tell."
        else:
            text = self.STYLES[h % len(self.STYLES)].format(L=LETTERS[k], T=item.options[k])
        return Prediction(text, frame_indices=(0, 1, 2), timestamps=(0.0, 1.0, 2.0))

    def option_loglikelihoods(self, item: EvalItem) -> Prediction:
        k = LETTERS.index(item.answer)
        ll = tuple(-1.0 if i == k else -2.0 - i for i in range(len(item.options)))
        return Prediction("", (0, 1), (0.0, 1.0), option_loglikelihoods=ll)


@pytest.fixture
def make_video():
    return write_video


@pytest.fixture
def fake_answerer() -> type[FakeAnswerer]:
    return FakeAnswerer


def _opts(*texts: str) -> list[str]:
    return [f"{LETTERS[i]}. {t}" for i, t in enumerate(texts)]


@pytest.fixture
def videomme_root(tmp_path: Path) -> Path:
    """Video-MME rows as in the released parquet, exported to videomme.json."""
    root = tmp_path / "videomme"
    write_video(root / "data" / "vidShort01.mp4", value=10)
    write_video(root / "data" / "vidMedium1.mp4", value=60)
    # vidLong0001.mp4 is deliberately missing.
    row = {"domain": "Knowledge", "sub_category": "Astronomy", "url": "https://www.youtube.com/watch?v=x"}
    rows = [
        {**row, "video_id": "001", "duration": "short", "videoID": "vidShort01", "question_id": "001-1",
         "task_type": "Counting Problem", "question": "How many stars?", "options": _opts("1", "2", "3", "4"), "answer": "B"},
        {**row, "video_id": "001", "duration": "short", "videoID": "vidShort01", "question_id": "001-2",
         "task_type": "OCR Problems", "question": "What is written?", "options": _opts("cat", "dog", "sun", "moon"), "answer": "D"},
        {**row, "video_id": "301", "duration": "medium", "videoID": "vidMedium1", "question_id": "301-1",
         "task_type": "Action Reasoning", "question": "Why does he run?", "options": _opts("late", "rain", "fun", "race"), "answer": "A"},
        {**row, "video_id": "601", "duration": "long", "videoID": "vidLong0001", "question_id": "601-1",
         "task_type": "Temporal Reasoning", "question": "What happens last?", "options": _opts("w", "x", "y", "z"), "answer": "C"},
        # Malformed: no question / one option / answer E / duplicate id / unknown duration.
        {**row, "video_id": "601", "duration": "long", "videoID": "vidLong0001", "question_id": "601-2",
         "task_type": "OCR Problems", "options": _opts("a", "b", "c", "d"), "answer": "A"},
        {**row, "video_id": "601", "duration": "long", "videoID": "vidLong0001", "question_id": "601-3",
         "task_type": "OCR Problems", "question": "q?", "options": _opts("a"), "answer": "A"},
        {**row, "video_id": "601", "duration": "long", "videoID": "vidLong0001", "question_id": "601-4",
         "task_type": "OCR Problems", "question": "q?", "options": _opts("a", "b", "c", "d"), "answer": "E"},
        {**row, "video_id": "001", "duration": "short", "videoID": "vidShort01", "question_id": "001-1",
         "task_type": "OCR Problems", "question": "dup?", "options": _opts("a", "b", "c", "d"), "answer": "A"},
        {**row, "video_id": "002", "duration": "huge", "videoID": "vidShort01", "question_id": "002-1",
         "task_type": "OCR Problems", "question": "q?", "options": _opts("a", "b", "c", "d"), "answer": "A"},
    ]
    (root / "videomme.json").write_text(json.dumps(rows))
    (root / "subtitle").mkdir()
    (root / "subtitle" / "vidShort01.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,500\nHello <i>there</i>\n\n2\n00:00:02,000 --> 00:00:03,000\nsecond line\n\n"
        "3\n00:00:10,000 --> 00:00:11,000\nnever sampled\n")
    (root / "subtitle" / "vidMedium1.srt").write_text("this is not a subtitle file\n")
    return root


@pytest.fixture
def longvideobench_root(tmp_path: Path) -> Path:
    root = tmp_path / "lvb"
    write_video(root / "videos" / "lvbA.mp4")
    write_video(root / "videos" / "lvbB.mp4", n_frames=6)
    base = {"question_wo_referring_query": "", "position": [1], "topic_category": "NP-News-Programs",
            "level": "L1-Perception", "starting_timestamp_for_subtitles": 0, "view_count": 10}
    rows = [
        {**base, "id": "lvbA_0", "video_id": "lvbA", "video_path": "lvbA.mp4", "subtitle_path": "lvbA_en.json",
         "question": "What colour is the car?", "candidates": ["red", "blue", "green", "black", "white"],
         "correct_choice": 3, "duration_group": 15, "duration": 12.5, "question_category": "S2A"},
        {**base, "id": "lvbB_0", "video_id": "lvbB", "video_path": "lvbB.mp4", "subtitle_path": "lvbB_en.json",
         "question": "Who speaks first?", "candidates": ["man", "woman", "child", "dog"],
         "correct_choice": 0, "duration_group": 3600, "duration": 3000.0, "question_category": "E2O"},
        {**base, "id": "lvbB_1", "video_id": "lvbB", "video_path": "lvbB.mp4", "subtitle_path": "lvbB_en.json",
         "question": "bad index", "candidates": ["a", "b"], "correct_choice": 5, "duration_group": 600, "duration": 300.0},
        {**base, "id": "lvbB_2", "video_id": "lvbB", "video_path": "lvbB.mp4", "question": "bool index",
         "candidates": ["a", "b"], "correct_choice": True, "duration_group": 600},
        "not an object",
    ]
    (root / "lvb_val.json").write_text(json.dumps(rows))
    return root


@pytest.fixture
def mlvu_root(tmp_path: Path) -> Path:
    root = tmp_path / "MLVU"
    write_video(root / "video" / "1_plotQA" / "movie_1.mp4")
    write_video(root / "video" / "5_order" / "order_7.mp4")
    (root / "json").mkdir(parents=True)
    (root / "json" / "1_plotQA.json").write_text(json.dumps([
        {"video": "movie_1.mp4", "duration": 300, "question": "Who wins?", "candidates": ["Ann", "Bob", "Cid", "Dee"],
         "answer": "Cid", "question_type": "plotQA"},
        {"video": "movie_1.mp4", "duration": 300, "question": "Answer not a candidate",
         "candidates": ["Ann", "Bob"], "answer": "Zed", "question_type": "plotQA"},
    ]))
    (root / "json" / "5_order.json").write_text(json.dumps([
        {"video": "order_7.mp4", "duration": 900, "question": "Order of actions?",
         "candidates": ["1->2->3", "3->2->1", "2->1->3", "1->3->2"], "answer": "3->2->1", "question_type": "order"},
    ]))
    (root / "json" / "3_ego.json").write_text("{ broken json")
    return root  # the other task files are missing: each one is a recorded problem


@pytest.fixture
def lvbench_root(tmp_path: Path) -> Path:
    root = tmp_path / "LVBench"
    write_video(root / "videos" / "key00000001.mp4")
    line1 = {"key": "key00000001", "type": "documentary", "video_info": {"duration_minutes": 65.5},
             "qa": [
                 {"uid": "101", "question": "What is shown first?\n(A) a dog\n(B) a cat\n(C) a bird\n(D) a fish",
                  "answer": "B", "question_type": ["entity recognition", "key information retrieval"],
                  "time_reference": "00:01-00:05"},
                 {"uid": "102", "question": "Why (really) did it stop?\n(A) rain\n(B) (C) confusion\n(C) night\n(D) noise",
                  "answer": "(C)", "question_type": ["reasoning"], "time_reference": ""},
                 {"uid": "103", "question": "No options here?", "answer": "A", "question_type": ["reasoning"]},
                 {"uid": "104", "question": "Q\n(A) x\n(C) y", "answer": "A", "question_type": ["reasoning"]},
             ]}
    line2 = {"key": "keyMissing01", "type": "sports", "video_info": {"duration_minutes": 90},
             "qa": [{"uid": "201", "question": "Who scored?\n(A) red\n(B) blue\n(C) nobody\n(D) both",
                     "answer": "D", "question_type": ["event understanding"]}]}
    (root / "video_info.meta.jsonl").write_text(
        json.dumps(line1) + "\n" + "{truncated line\n" + json.dumps(line2) + "\n" + json.dumps({"qa": []}) + "\n")
    return root


@pytest.fixture
def tempcompass_root(tmp_path: Path) -> Path:
    root = tmp_path / "TempCompass"
    write_video(root / "videos" / "1034419625.mp4")
    write_video(root / "videos" / "1006708363.mp4")
    mc = {
        "1034419625": {
            "action": [{"question": "What is the man doing in the video?\nA. dunking a basketball\n"
                                    "B. dribbling a basketball\nC. passing a basketball",
                        "answer": "A. dunking a basketball"}],
            "speed": [{"question": "How fast is he?\nA. slow\nB. normal\nC. fast", "answer": "fast"},
                      {"question": "No options", "answer": "A"}],
        },
        "1006708363": {
            "direction": [{"question": "Which way does the car move?\nA. left\nB. right\nC. towards\nD. away",
                           "answer": "D. away"}],
            "order": "not a list",
        },
    }
    (root / "questions").mkdir(parents=True)
    (root / "questions" / "multi-choice.json").write_text(json.dumps(mc))
    return root
