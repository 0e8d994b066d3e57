"""Sharded, resumable runs: 1 shard == 2 shards; kills lose and duplicate nothing; bad input is
recorded per item."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hourllava_jax.eval import tasks, report, runner, sharding
from hourllava_jax.eval.items import ANSWERER_ERROR, BAD_RECORD, EvalItem, MISSING_VIDEO, Prediction

REPO = Path(__file__).resolve().parents[2]


def _run(items, answerer, out: Path, n_shards: int, **kw) -> None:
    for s, shard in enumerate(sharding.plan_shards(items, n_shards)):
        runner.run_shard(shard, answerer, runner.shard_path(out, items[0].benchmark, s, n_shards), progress=False, **kw)


def _report(out: Path, bench: str) -> dict:
    rep = report.merge(out, [bench])[bench]
    rep.pop("read")  # file/line counts differ by construction between shardings
    return rep


def _lines(out: Path, bench: str) -> list[dict]:
    return [rec for p in sorted(runner.results_dir(out, bench).glob("*.jsonl")) for rec in runner.read_results(p)[0]]


@pytest.fixture
def many_items(tmp_path: Path, make_video) -> list[EvalItem]:
    """6 videos x 2 questions, one video missing."""
    out = []
    for v in range(6):
        path = tmp_path / "vids" / f"v{v}.mp4"
        if v != 4:
            make_video(path, n_frames=2 + v)
        for q in range(2):
            out.append(EvalItem("toy", f"v{v}-q{q}", str(path), f"question {q}?", ("cat", "dog", "cow"),
                                   "ABC"[(v + q) % 3], {"task": f"t{q}"}, video_id=f"v{v}", duration=2.0 + v))
    return out


def test_one_and_two_shards_give_the_same_report(tmp_path: Path, videomme_root: Path, fake_answerer):
    items, problems = tasks.load("videomme", videomme_root)
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        report.write_manifest(out, "videomme", items, problems)
        _run(items, fake_answerer(fail_ids=("301-1",)), out, n)
    one, two = _report(tmp_path / "out1", "videomme"), _report(tmp_path / "out2", "videomme")
    assert one == two
    assert len(list((tmp_path / "out2" / "results" / "videomme").glob("*.jsonl"))) == 2
    assert one["n_results"] == 4 and one["n_missing"] == 0 and one["complete"]
    assert one["errors_by_reason"] == {ANSWERER_ERROR: 1, MISSING_VIDEO: 1}
    assert one["n_load_problems"] == 5 and one["load_problems_by_reason"][BAD_RECORD] == 2
    assert set(one["categories"]["duration"]) == {"short", "medium", "long"}
    assert one["categories"]["duration"]["long"] == {"n": 1, "n_correct": 0, "accuracy": 0.0}
    recs = {r["id"]: r for r in _lines(tmp_path / "out1", "videomme")}
    assert recs["601-1"]["status"] == "error" and "video not found" in recs["601-1"]["reason"]
    assert recs["301-1"]["reason"] == "RuntimeError: model exploded"
    ok = recs["001-1"]
    assert ok["frame_indices"] == [0, 1, 2] and ok["timestamps"] == [0.0, 1.0, 2.0] and ok["raw_output"]
    assert ok["correct"] == (ok["predicted"] == "B")
    md = (tmp_path / "out1" / "report.md").read_text()
    assert "| videomme | 4 |" in md and "**videomme** by duration" in md


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path: Path, many_items, fake_answerer):
    _run(many_items, fake_answerer(), tmp_path / "ref", 2)
    reference = _report(tmp_path / "ref", "toy")

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(many_items, fake_answerer(interrupt_after=3), out, 2)
    assert len(_lines(out, "toy")) == 3
    # A kill in the middle of a write leaves half a line behind.
    shard0 = runner.shard_path(out, "toy", 0, 2)
    with shard0.open("ab") as f:
        f.write(b'{"key": "toy/v9-q0", "status": "o')
    again = fake_answerer()
    _run(many_items, again, out, 2)
    assert again.calls == len(many_items) - 3 - 2  # the missing video's 2 items never reach it
    keys = Counter(r["key"] for r in _lines(out, "toy"))
    assert set(keys) == {x.key for x in many_items} and set(keys.values()) == {1}
    assert runner.read_results(shard0)[1] == 1  # the torn line is skipped, counted
    assert _report(out, "toy") == reference
    # A third run has nothing left to do.
    idle = fake_answerer()
    _run(many_items, idle, out, 2)
    assert idle.calls == 0 and len(_lines(out, "toy")) == len(many_items)


_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from hourllava_jax.eval import runner, sharding
from hourllava_jax.eval.items import EvalItem, Prediction
items = [EvalItem(**d) for d in {items!r}]

class Slow:
    def answer(self, item):
        time.sleep(0.15)
        return Prediction(item.answer, (0,), (0.0,))

for s, shard in enumerate(sharding.plan_shards(items, 1)):
    runner.run_shard(shard, Slow(), runner.shard_path({out!r}, "toy", s, 1), progress=False)
"""


def test_sigkill_and_restart(tmp_path: Path, many_items, fake_answerer):
    out = tmp_path / "killed"
    spec = [{"benchmark": x.benchmark, "id": x.id, "video": x.video, "question": x.question, "options": x.options,
             "answer": x.answer, "categories": dict(x.categories), "video_id": x.video_id} for x in many_items]
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(repo=str(REPO), items=spec, out=str(out)))
    child = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    path = runner.shard_path(out, "toy", 0, 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 4):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    n_before = path.read_bytes().count(b"\n")
    assert 4 <= n_before < len(many_items), child.stderr.read().decode()[-2000:]
    rest = fake_answerer()
    _run(many_items, rest, out, 1)
    keys = Counter(r["key"] for r in _lines(out, "toy"))
    assert set(keys) == {x.key for x in many_items} and set(keys.values()) == {1}


def test_loglikelihood_mode(tmp_path: Path, many_items, fake_answerer):
    out = tmp_path / "ll"
    _run(many_items, fake_answerer(), out, 1, mode="loglikelihood")
    recs = _lines(out, "toy")
    ok = [r for r in recs if r["status"] == "ok"]
    assert len(ok) == 10 and all(r["correct"] and r["rule"] == "argmax" for r in ok)
    assert ok[0]["option_loglikelihoods"] == [-1.0 if i == "ABC".index(ok[0]["answer"]) else -2.0 - i for i in range(3)]

    class WrongLength:
        def option_loglikelihoods(self, item):
            return [0.0]

    rec = runner.answer_item(many_items[0], WrongLength(), "loglikelihood")
    assert rec["status"] == "error" and "expected 3 option log-likelihoods" in rec["reason"]


def test_retry_errors_replaces_failed_results(tmp_path: Path, many_items, fake_answerer):
    out = tmp_path / "retry"
    _run(many_items, fake_answerer(fail_ids=("v0-q0", "v1-q1")), out, 1)
    assert _report(out, "toy")["errors_by_reason"][ANSWERER_ERROR] == 2
    plain = fake_answerer()
    _run(many_items, plain, out, 1)
    assert plain.calls == 0  # errors count as finished unless asked
    _run(many_items, fake_answerer(), out, 1, retry_errors=True)
    rep = report.merge(out, ["toy"])["toy"]
    assert rep["errors_by_reason"] == {MISSING_VIDEO: 1 * 2} and rep["read"]["duplicates"] == 4
    _run(many_items, fake_answerer(), tmp_path / "clean", 1)
    clean = _report(tmp_path / "clean", "toy")
    rep.pop("read")
    assert rep == clean


def test_corrupt_video_is_recorded(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")

    class Decodes:
        def answer(self, item):
            import av

            with av.open(item.video) as c:  # raises on garbage
                next(c.decode(video=0))
            return Prediction("A")

    item = EvalItem("toy", "x", str(bad), "q", ("a", "b"), "A")
    rec = runner.answer_item(item, Decodes())
    assert rec["status"] == "error" and rec["reason_code"] == ANSWERER_ERROR and "Error" in rec["reason"]
    json.dumps(rec)  # always serialisable


def test_malformed_predictions_are_recorded(tmp_path: Path, make_video):
    video = make_video(tmp_path / "v.mp4")
    item = EvalItem("toy", "x", str(video), "q", ("a", "b"), "A")

    class Returns:
        def __init__(self, value):
            self.value = value

        def answer(self, item):
            return self.value

    for value, needle in ((None, "must return a Prediction"), ("A", "must return a Prediction"),
                          (Prediction("A", frame_indices=("x",)), "ValueError"),
                          (Prediction("A", timestamps=(float("nan"),)), None)):
        rec = runner.answer_item(item, Returns(value))
        json.dumps(rec, allow_nan=False)
        if needle is None:  # NaN timestamps are kept as null, the answer still counts
            assert rec["status"] == "ok" and rec["timestamps"] == [None] and rec["correct"]
        else:
            assert rec["status"] == "error" and needle in rec["reason"], rec


def test_exception_reason_codes_are_kept(tmp_path: Path, make_video):
    class Coded(ValueError):  # like hourllava_jax.data.errors.DataError: a string `reason`
        reason = "decode_timeout"

    class Raises:
        def answer(self, item):
            raise Coded("took too long")

    item = EvalItem("toy", "x", str(make_video(tmp_path / "v.mp4")), "q", ("a", "b"), "A")
    rec = runner.answer_item(item, Raises())
    assert (rec["status"], rec["reason_code"], rec["reason"]) == ("error", "decode_timeout", "Coded: took too long")
