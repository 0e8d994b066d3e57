"""Synthetic videos and records: determinism, decodability, frame content, needles, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from hourllava_jax.cli import synth as synth_cli
from hourllava_jax.data import chat, records, synthetic
from hourllava_jax.data.synthetic import COLOURS, Event, Needle, VideoSpec

TOL = 30  # H.264 (crf 10, 4:2:0) keeps flat colours within a few levels; centres are far from edges


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def close(pixel, rgb) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.asarray(rgb)) <= TOL))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path, recs = synthetic.make_dataset(out, seed=3, num_videos=3, min_seconds=12, max_seconds=30)
    npath, needles = synthetic.make_needle_dataset(out, seed=4, lengths=(8, 20), depths=(0.0, 0.5, 1.0))
    return out, path, recs, npath, needles


def test_render_frame_by_hand():
    spec = VideoSpec(
        "x", fps=1, n_frames=6, size=32,
        backgrounds=((0, "black"), (3, "navy")),
        events=(Event("red", "square", 0, 2, "top-left"), Event("green", "circle", 1, 6, "bottom-right", "right")),
        needle=Needle(4, "yellow", 0.8),
    )  # fmt: skip
    f0 = synthetic.render_frame(spec, 0)
    assert f0.shape == (32, 32, 3) and f0.dtype == np.uint8
    # Quadrant centre of top-left is (8, 8), half-size 32/8 = 4: pixels 4..11 are red.
    assert tuple(f0[8, 8]) == COLOURS["red"] and tuple(f0[4, 11]) == COLOURS["red"]
    assert tuple(f0[3, 8]) == synthetic.BACKGROUNDS["black"] and tuple(f0[24, 24]) == synthetic.BACKGROUNDS["black"]
    f2 = synthetic.render_frame(spec, 2)
    assert tuple(f2[8, 8]) == synthetic.BACKGROUNDS["black"]  # the square ended at frame 2
    # The circle moves right by 32/5 = 6.4 px over frames 1..5: centre x = 24 + 6.4 * (f-1)/4.
    assert synthetic.event_centre(spec, spec.events[1], 1) == (24.0, 24.0)
    assert synthetic.event_centre(spec, spec.events[1], 5) == pytest.approx((30.4, 24.0))
    assert tuple(synthetic.render_frame(spec, 3)[1, 1]) == synthetic.BACKGROUNDS["navy"]  # scene change at 3
    f4 = synthetic.render_frame(spec, 4)  # the needle: a yellow cross over the centre
    assert tuple(f4[16, 16]) == COLOURS["yellow"] and tuple(f4[16, 3]) == COLOURS["yellow"]
    assert tuple(f4[3, 3]) == synthetic.BACKGROUNDS["navy"]  # cross corners stay background
    assert tuple(synthetic.render_frame(spec, 5)[16, 16]) != COLOURS["yellow"]


def test_same_seed_same_records_and_frames(small, tmp_path):
    out, path, recs, _, _ = small
    path2, recs2 = synthetic.make_dataset(tmp_path, seed=3, num_videos=3, min_seconds=12, max_seconds=30)
    assert path.read_bytes() == path2.read_bytes()
    for rec in recs[:: max(1, len(recs) // 2)]:
        a = decode(records.video_path(out, rec))
        b = decode(records.video_path(tmp_path, rec))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    _, other = synthetic.make_dataset(tmp_path / "o", seed=4, num_videos=1, min_seconds=12, max_seconds=30)
    assert other[0].to_json() != recs[0].to_json()


def test_videos_decode_to_expected_frames_and_content(small):
    out, path, recs, _, _ = small
    seen = set()
    for rec in recs:
        if rec.video in seen:
            continue
        seen.add(rec.video)
        vpath = records.video_path(out, rec)
        with av.open(str(vpath)) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264" and (s.width, s.height) == (64, 64)
        frames = decode(vpath)
        assert len(frames) == int(rec.extra["duration"] * rec.extra["fps"])
        # Rebuild the spec from the seed and check each static event's colour at its centre.
        i = int(rec.video.split("_v")[1].split(".")[0])
        rng = np.random.default_rng([3, i])
        spec = synthetic.sample_video_spec(rng, rec.video[:-4], int(rng.integers(12, 31)))
        assert spec.n_frames == len(frames)
        for e in spec.events:
            x, y = synthetic.event_centre(spec, e, e.start)
            assert close(frames[e.start][int(y), int(x)], COLOURS[e.colour]), (rec.video, e)


def test_records_are_valid_and_cover_six_topics(small):
    _, path, recs, _, _ = small
    loaded = records.load_records(path)  # the reader accepts every line
    assert [r.id for r in loaded] == [r.id for r in recs]
    topics = Counter()
    for r in loaded:
        assert r.kind == "video" and r.data_source == "synthetic" and 1 <= r.num_qa_pairs <= 5
        assert r.conversations[0].value.startswith("<image>\n")
        for qa, (q, a) in zip(r.extra["qa"], zip(r.conversations[::2], r.conversations[1::2])):
            topics[qa["topic"]] += 1
            assert a.value == qa["answer"]
            if qa["options"]:  # multiple choice: a letter naming one listed option
                assert a.value in "ABCD"[: len(qa["options"])]
                for letter, opt in zip("ABCD", qa["options"]):
                    assert f"\n{letter}. {opt}\n" in q.value
                assert q.value.endswith(synthetic.MC_SUFFIX)
    assert set(topics) == {"temporality", "spatiality", "object", "action", "scene", "event"}


def test_needles(small):
    out, _, _, npath, needles = small
    assert [r.extra["needle"]["length_seconds"] for r in needles] == [8, 8, 8, 20, 20, 20]
    for rec in records.load_records(npath):
        n = rec.extra["needle"]
        assert n["frame"] == round(n["depth"] * (n["length_seconds"] - 1))  # fps 1
        assert n["time"] == n["frame"] and n["n_frames"] == n["length_seconds"]
        q, a = rec.conversations
        assert q.value.startswith(f"<image>\n{synthetic.NEEDLE_QUESTION}\n")
        assert rec.extra["qa"][0]["options"][("ABCD").index(a.value)] == n["colour"]
        frames = decode(records.video_path(out, rec))
        assert len(frames) == n["n_frames"]
        c = 32  # frame centre: the cross covers it only on the needle frame
        assert close(frames[n["frame"]][c, c], COLOURS[n["colour"]])
        for j, f in enumerate(frames):
            if j != n["frame"]:
                assert not close(f[c, c], COLOURS[n["colour"]]), j
    # Haystack events never use a needle colour: the one frame is the only evidence.
    for li in range(2):
        for di in range(3):
            spec = synthetic.needle_spec(np.random.default_rng([4, li, di, 0]), "x", (8, 20)[li], (0.0, 0.5, 1.0)[di])
            assert all(e.colour not in synthetic.NEEDLE_COLOURS for e in spec.events)


def test_needle_on_a_whole_second_at_higher_fps():
    spec = synthetic.needle_spec(np.random.default_rng(0), "x", 10, 0.5, fps=3)
    assert spec.n_frames == 30 and spec.needle.frame == 4 * 3  # second round(0.5 * 9) = 4 (half to even)
    with pytest.raises(ValueError, match="depth"):
        synthetic.needle_spec(np.random.default_rng(0), "x", 10, 1.5)


def test_corpus_tokenizer_fits_tiny_and_keeps_n0(small, tmp_path):
    from hourllava_jax.data.tokenizer import build_tokenizer

    _, _, recs, _, needles = small
    tok = build_tokenizer(synthetic.corpus_texts(recs + needles), 512, tmp_path / "tok")
    assert len(tok) <= 512
    out = chat.tokenize_record(needles[0], tok, seconds=8.0, n_frames=8)
    assert out.input_ids.max() < 512 and out.n_images == 1
    # The weighted scaffold makes the template words single tokens: same n0 as Qwen2.
    assert chat.kept_prefix_length(out) == 8


def test_cli(tmp_path):
    summary = synth_cli.main(["--out", str(tmp_path), "--seed", "1", "--num-videos", "1", "--min-seconds", "10", "--max-seconds", "10",
                        "--needle-lengths", "8", "--needle-depths", "0.5"])  # fmt: skip
    assert summary["needle"]["num_records"] == 1
    recs = records.load_records(tmp_path / "synthetic.jsonl")
    assert {r.extra["duration"] for r in recs} == {10.0}
    assert records.video_path(tmp_path, recs[0]).is_file()
    assert json.loads((tmp_path / "needle.jsonl").read_text())["needle"]["frame"] == 4  # round(0.5 * 7)
