"""Records (design §4.2): parsing, validation, bad lines named by file and line, paths, QA splitting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hourllava_jax.data import errors, records
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.records import Turn


def _video(**over):
    raw = {
        "id": "v1",
        "video": "clips/a.mp4",
        "data_source": "panda",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat happens?"},
            {"from": "gpt", "value": "A cat jumps."},
        ],
    }
    raw.update(over)
    return raw


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_data_error_message_and_fields():
    e = DataError("a/b.mp4", errors.CORRUPT_VIDEO, "moov atom not found")
    assert str(e) == "a/b.mp4: corrupt_video: moov atom not found"
    assert (e.path, e.reason, e.detail) == ("a/b.mp4", "corrupt_video", "moov atom not found")
    assert isinstance(e, ValueError)
    assert errors.DECODE_TIMEOUT in errors.REASONS


def test_parse_video_record_keeps_extra_fields():
    rec = records.parse_record(_video(duration=12.5, qa=[1]), "f.jsonl:3")
    assert rec.kind == "video" and rec.num_visuals == 1 and rec.num_qa_pairs == 1
    assert rec.conversations == (Turn("human", "<image>\nWhat happens?"), Turn("gpt", "A cat jumps."))
    assert rec.extra == {"duration": 12.5, "qa": [1]}
    assert rec.origin == "f.jsonl:3"
    assert records.parse_record(rec.to_json(), "x").to_json() == rec.to_json()


def test_leading_non_human_turn_is_dropped():
    raw = _video(conversations=[{"from": "gpt", "value": "hello"}] + _video()["conversations"])
    rec = records.parse_record(raw, "w")
    assert [t.role for t in rec.conversations] == ["human", "gpt"]
    assert rec.conversations[0].value == "<image>\nWhat happens?"


@pytest.mark.parametrize(
    "convs",
    [
        [{"from": "human", "value": "<image>\nQ"}, {"from": "human", "value": "Q2"}],
        [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}, {"from": "human", "value": "Q2"}],
        [{"from": "human", "value": "<image>\nQ"}, {"from": "system", "value": "A"}],
        [{"from": "gpt", "value": "x"}],
        [],
    ],
)
def test_bad_conversations_are_rejected(convs):
    with pytest.raises(DataError) as ei:
        records.parse_record(_video(conversations=convs), "f.jsonl:7")
    assert ei.value.reason == errors.BAD_CONVERSATION
    assert str(ei.value).startswith("f.jsonl:7: bad_conversation: ")


def test_missing_image_token_and_count_mismatch():
    no_tok = _video(conversations=[{"from": "human", "value": "What happens?"}, {"from": "gpt", "value": "A"}])
    with pytest.raises(DataError) as ei:
        records.parse_record(no_tok, "w")
    assert ei.value.reason == errors.MISSING_IMAGE_TOKEN
    two = {"id": "i", "image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image> vs"}, {"from": "gpt", "value": "A"}]}
    with pytest.raises(DataError) as ei:
        records.parse_record(two, "w")
    assert ei.value.reason == errors.IMAGE_COUNT_MISMATCH
    text_with_tok = {"id": "t", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "A"}]}
    with pytest.raises(DataError) as ei:
        records.parse_record(text_with_tok, "w")
    assert ei.value.reason == errors.IMAGE_COUNT_MISMATCH
    in_gpt = _video(conversations=[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "<image>"}])
    with pytest.raises(DataError) as ei:
        records.parse_record(in_gpt, "w")
    assert ei.value.reason == errors.BAD_CONVERSATION


def test_image_records_str_and_list():
    one = records.parse_record({"id": "1", "image": "x/a.jpg", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}, "w")
    assert one.kind == "image" and one.images == ("x/a.jpg",)
    two = records.parse_record(
        {"id": "2", "image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image> and <image>?"}, {"from": "gpt", "value": "A"}]}, "w"
    )
    assert two.kind == "multi_image" and two.num_visuals == 2
    text = records.parse_record({"id": "3", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}, "w")
    assert text.kind == "text" and text.num_visuals == 0
    assert records.image_paths("/data", one) == [Path("/data/images/x/a.jpg")]


def test_bad_fields():
    for over, reason in [
        ({"video": 3}, errors.BAD_RECORD),
        ({"data_source": None}, errors.BAD_RECORD),
        ({"image": "a.jpg"}, errors.BAD_RECORD),  # video and image together
        ({"conversations": "nope"}, errors.BAD_CONVERSATION),
    ]:
        with pytest.raises(DataError) as ei:
            records.parse_record(_video(**over), "w")
        assert ei.value.reason == reason, over
    with pytest.raises(DataError) as ei:
        records.parse_record([1, 2], "w")
    assert ei.value.reason == errors.BAD_RECORD


def test_video_and_feature_paths():
    rec = records.parse_record(_video(video="sub/dir/clip.v2.mp4", data_source="ego4d"), "w")
    assert records.video_path("/root", rec) == Path("/root/videos/ego4d/sub/dir/clip.v2.mp4")
    assert records.feature_path("/root", rec) == Path("/root/features/ego4d/sub/dir/clip.v2.safetensors")
    assert records.feature_path("/root", rec, ext=".npz") == Path("/root/features/ego4d/sub/dir/clip.v2.npz")
    inner = records.parse_record(_video(video="a/../b.mp4"), "w")  # stays inside: allowed
    assert records.video_path("/root", inner) == Path("/root/videos/panda/b.mp4")


@pytest.mark.parametrize(
    "video,source",
    [("../../etc/passwd", "panda"), ("/etc/passwd", "panda"), ("../x.mp4", ".."), ("a.mp4", "../.."), ("C:\\x.mp4", "panda")],
)
def test_paths_escaping_the_root_are_rejected(video, source):
    rec = records.parse_record(_video(video=video, data_source=source), "f.jsonl:2")
    with pytest.raises(DataError) as ei:
        records.video_path("/root", rec)
    assert ei.value.reason == errors.PATH_ESCAPES_ROOT
    assert str(ei.value).startswith("f.jsonl:2: path_escapes_root")


def test_jsonl_malformed_lines_are_named_and_skippable(tmp_path):
    good = json.dumps(_video())
    path = _write_lines(
        tmp_path / "data.jsonl",
        [good, "", '{"id": "broken", ', json.dumps(_video(conversations=[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}])), good, "[1]"],
    )
    items = list(records.iter_records(path))
    assert [type(i).__name__ for i in items] == ["Record", "DataError", "DataError", "Record", "DataError"]
    assert items[0].origin == f"{path}:1" and items[3].origin == f"{path}:5"
    assert items[1].path == f"{path}:3" and items[1].reason == errors.MALFORMED_JSON
    assert str(items[1]).startswith(f"{path}:3: malformed_json: ")
    assert items[2].path == f"{path}:4" and items[2].reason == errors.MISSING_IMAGE_TOKEN
    assert items[4].path == f"{path}:6" and items[4].reason == errors.BAD_RECORD
    skipped = Counter()
    assert len(records.load_records(path, skipped)) == 2
    assert skipped == Counter({errors.MALFORMED_JSON: 1, errors.MISSING_IMAGE_TOKEN: 1, errors.BAD_RECORD: 1})
    with pytest.raises(DataError, match=":3: malformed_json"):
        records.load_records(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError) as ei:
        list(records.iter_records(tmp_path / "nope.jsonl"))
    assert ei.value.reason == errors.MISSING_FILE
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(DataError, match="unknown record file type"):
        list(records.iter_records(tmp_path / "a.csv"))


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_json_list_streams_across_chunk_boundaries(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(records, "_JSON_CHUNK", chunk)
    raws = [_video(id=f"v{i}", extra_number=1234567 + i) for i in range(4)]
    text = "[\n" + ",\n".join(json.dumps(r, indent=1) for r in raws) + "\n]\n"
    path = tmp_path / "data.json"
    path.write_text(text)
    got = list(records.iter_records(path))
    assert [r.id for r in got] == ["v0", "v1", "v2", "v3"]
    assert [r.extra["extra_number"] for r in got] == [1234567, 1234568, 1234569, 1234570]
    # Each element's line is where its "{" is: "[" on line 1, then json.dumps(indent=1) blocks.
    starts, line = [], 2
    for r in raws:
        starts.append(line)
        line += json.dumps(r, indent=1).count("\n") + 1
    assert [r.origin for r in got] == [f"{path}:{s}" for s in starts]
    # Scalars cut by a chunk end are not mis-read (123 must not come out as 1 and 23).
    path.write_text("[1, 23, 456789, 7]")
    assert [v for _, v in records.iter_json_list(path)] == [1, 23, 456789, 7]


def test_json_list_syntax_error_names_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_JSON_CHUNK", 16)
    path = tmp_path / "bad.json"
    path.write_text("[\n" + json.dumps(_video()) + ",\n" + '{"id": 1,, }' + "\n]")
    items = list(records.iter_records(path))
    assert isinstance(items[0], records.Record)
    assert isinstance(items[1], DataError) and items[1].path == f"{path}:3" and items[1].reason == errors.MALFORMED_JSON
    assert len(items) == 2
    path.write_text('{"id": 1}')
    (err,) = list(records.iter_records(path))
    assert err.reason == errors.MALFORMED_JSON and "JSON list" in err.detail
    path.write_text("[\n" + json.dumps(_video()) + ',\n{"id": "x",\n "conversations": [\n  {"from": human}]}\n]')
    items = list(records.iter_records(path))  # the error's own line (5: `human`), not the element's (3)
    assert isinstance(items[0], records.Record) and items[1].path == f"{path}:5"
    path.write_text("[" + json.dumps(_video()))
    items = list(records.iter_records(path))
    assert isinstance(items[0], records.Record) and items[1].detail == "unterminated list"


def test_split_qa_pairs_into_chunks_of_five():
    convs = [{"from": "human", "value": "Q0 <image>"}, {"from": "gpt", "value": "A0"}]
    for i in range(1, 12):
        convs += [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": f"A{i}"}]
    rec = records.parse_record(_video(conversations=convs), "w")
    parts = records.split_qa_pairs(rec)
    assert [p.id for p in parts] == ["v1#0", "v1#1", "v1#2"]
    assert [p.num_qa_pairs for p in parts] == [5, 5, 2]
    assert [p.conversations[0].value for p in parts] == ["<image>\nQ0", "<image>\nQ5", "<image>\nQ10"]
    assert parts[1].conversations[1:3] == (Turn("gpt", "A5"), Turn("human", "Q6"))
    for p in parts:  # every chunk is itself a valid record
        assert records.parse_record(p.to_json(), "w").num_qa_pairs == p.num_qa_pairs
    assert records.split_qa_pairs(rec, 12) == [rec]


def test_iter_records_splits_by_default(tmp_path):
    convs = []
    for i in range(7):
        convs += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + f"Q{i}"}, {"from": "gpt", "value": f"A{i}"}]
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(_video(conversations=convs))])
    assert [r.num_qa_pairs for r in records.load_records(path)] == [5, 2]
    assert [r.num_qa_pairs for r in records.load_records(path, max_qa_pairs=None)] == [7]


def test_write_jsonl_roundtrip(tmp_path):
    rec = records.parse_record(_video(duration=3.0), "w")
    path = records.write_jsonl([rec, _video(id="raw")], tmp_path / "out" / "r.jsonl")
    got = records.load_records(path)
    assert [r.id for r in got] == ["v1", "raw"] and got[0].extra == {"duration": 3.0}
    assert not list((tmp_path / "out").glob("*.tmp"))
