"""Training records (design §4.2): read, validate, resolve paths, split into <= 5 QA pairs.

Layout (LLaVA-Video-178K / VideoMarathon; LLaVA-OneVision images use `image`, a str or a list)::

    {"id": "...", "video": "<relative>.mp4", "data_source": "panda",
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}

File formats (decided here, see docs/data.md):
  * JSON Lines (`.jsonl`): streamed line by line; blank lines are skipped.
  * JSON (`.json`): a top-level list, streamed element by element with `json.JSONDecoder.raw_decode`
    over a sliding buffer, so a multi-GB LLaVA-Video-178K file never sits in memory at once. A
    syntax error inside a JSON list cannot be resynchronised: it is reported once (with its line)
    and the rest of that file is lost, so convert big files to JSON Lines (`write_jsonl`).

Bad data never raises out of the iterators: `iter_records` yields a `DataError` (path "file:line")
in place of the record, and the caller decides to skip and count (`load_records` does that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError

IMAGE_TOKEN = "<image>"
MAX_QA_PAIRS = 5  # design §4.2: up to 5 QA pairs of one video per record
_KNOWN_KEYS = frozenset({"id", "video", "image", "data_source", "conversations"})
_JSON_CHUNK = 1 << 20  # characters read per step when streaming a JSON list
_JSON_MAX_ELEMENT = 64 << 20  # one record larger than this is treated as corrupt


@dataclasses.dataclass(frozen=True)
class Turn:
    """One message: role "human" (rendered as ChatML `user`) or "gpt" (`assistant`)."""

    role: Literal["human", "gpt"]
    value: str


@dataclasses.dataclass(frozen=True)
class Record:
    """A validated training record.

    Attributes:
      id: the record's id (split records get "#k" suffixes).
      conversations: alternating human/gpt turns, starting with human, even length.
      video: path relative to `videos/<data_source>/`, or None.
      data_source: e.g. "panda", "ego4d" (required with `video`), or None.
      images: image paths (LLaVA-OneVision `image`), () when none.
      extra: every other field of the raw record (e.g. the synthetic needle metadata), unchanged.
      origin: "file:line" it was read from ("" when built in memory).
    """

    id: str
    conversations: tuple[Turn, ...]
    video: str | None = None
    data_source: str | None = None
    images: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    origin: str = ""

    @property
    def kind(self) -> Literal["video", "image", "multi_image", "text"]:
        if self.video is not None:
            return "video"
        return {0: "text", 1: "image"}.get(len(self.images), "multi_image")

    @property
    def num_visuals(self) -> int:
        """Number of `<image>` placeholders the conversation must hold (a video counts once)."""
        return 1 if self.video is not None else len(self.images)

    @property
    def num_qa_pairs(self) -> int:
        return len(self.conversations) // 2

    def to_json(self) -> dict[str, Any]:
        """The raw-record dict (inverse of `parse_record`, minus the dropped leading turn)."""
        out: dict[str, Any] = {"id": self.id}
        if self.video is not None:
            out["video"] = self.video
        if self.images:
            out["image"] = self.images[0] if len(self.images) == 1 else list(self.images)
        if self.data_source is not None:
            out["data_source"] = self.data_source
        out["conversations"] = [{"from": t.role, "value": t.value} for t in self.conversations]
        out.update(self.extra)
        return out


def parse_record(raw: Any, where: str) -> Record:
    """Validates one raw record (a dict from JSON) into a `Record`.

    Rules (design §4): a leading non-human turn is dropped; turns then alternate human/gpt and end
    with gpt; `<image>` appears only in human turns, and exactly `num_visuals` times (a video
    or an image record without it is MISSING_IMAGE_TOKEN, a wrong count IMAGE_COUNT_MISMATCH).
    Raises DataError(where, reason, detail).
    """
    if not isinstance(raw, dict):
        raise DataError(where, errors.BAD_RECORD, f"a record must be a JSON object, got {type(raw).__name__}")
    convs = raw.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(where, errors.BAD_CONVERSATION, "'conversations' must be a non-empty list")
    turns = []
    for i, c in enumerate(convs):
        if not isinstance(c, dict) or not isinstance(c.get("from"), str) or not isinstance(c.get("value"), str):
            raise DataError(where, errors.BAD_CONVERSATION, f"turn {i} needs string 'from' and 'value'")
        turns.append(Turn(c["from"], c["value"]))
    if turns[0].role != "human":  # the release drops one leading non-human turn (preprocess_qwen)
        turns = turns[1:]
    if not turns or len(turns) % 2:
        raise DataError(
            where,
            errors.BAD_CONVERSATION,
            f"{len(turns)} turns after dropping a leading non-human turn; need human/gpt pairs",
        )
    for i, t in enumerate(turns):
        want = "human" if i % 2 == 0 else "gpt"
        if t.role != want:
            raise DataError(
                where,
                errors.BAD_CONVERSATION,
                f"turn {i} is {t.role!r}, expected {want!r} (turns must alternate)",
            )
        if t.role == "gpt" and IMAGE_TOKEN in t.value:
            raise DataError(where, errors.BAD_CONVERSATION, f"turn {i}: {IMAGE_TOKEN} in a gpt turn")

    video = raw.get("video")
    if video is not None and (not isinstance(video, str) or not video):
        raise DataError(where, errors.BAD_RECORD, f"'video' must be a non-empty string, got {video!r}")
    data_source = raw.get("data_source")
    if data_source is not None and (not isinstance(data_source, str) or not data_source):
        raise DataError(
            where,
            errors.BAD_RECORD,
            f"'data_source' must be a non-empty string, got {data_source!r}",
        )
    if video is not None and data_source is None:
        raise DataError(
            where,
            errors.BAD_RECORD,
            "a video record needs 'data_source' (videos/<data_source>/<video>)",
        )
    image = raw.get("image")
    images: tuple[str, ...]
    if image is None:
        images = ()
    elif isinstance(image, str) and image:
        images = (image,)
    elif isinstance(image, list) and image and all(isinstance(p, str) and p for p in image):
        images = tuple(image)
    else:
        raise DataError(
            where,
            errors.BAD_RECORD,
            f"'image' must be a path or a non-empty list of paths, got {image!r}",
        )
    if video is not None and images:
        raise DataError(where, errors.BAD_RECORD, "a record has either 'video' or 'image', not both")

    rec_id = raw.get("id", "")
    record = Record(
        id=str(rec_id),
        conversations=tuple(turns),
        video=video,
        data_source=data_source,
        images=images,
        extra={k: v for k, v in raw.items() if k not in _KNOWN_KEYS},
        origin=where,
    )
    count = sum(t.value.count(IMAGE_TOKEN) for t in turns)
    if count != record.num_visuals:
        if count == 0:
            raise DataError(
                where,
                errors.MISSING_IMAGE_TOKEN,
                f"{record.kind} record has no {IMAGE_TOKEN} in its conversation",
            )
        raise DataError(
            where,
            errors.IMAGE_COUNT_MISMATCH,
            f"{count} {IMAGE_TOKEN} placeholders for {record.num_visuals} visual inputs",
        )
    return record


def split_qa_pairs(record: Record, max_pairs: int = MAX_QA_PAIRS) -> list[Record]:
    """Splits a record with more than `max_pairs` QA pairs into consecutive chunks (design §4).

    Splitting (not truncating) keeps every answer as supervision. Each chunk of a video or
    single-image record starts with `<image>\\n` in its first question (the release puts the
    placeholder first, `preprocess_multimodal`) and gets id "<id>#<k>". Multi-image records are
    returned whole: their placeholders belong to particular turns and cannot be moved.
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    if record.num_qa_pairs <= max_pairs or record.kind == "multi_image":
        return [record]
    out = []
    turns = [
        Turn(t.role, t.value.replace(IMAGE_TOKEN, "").strip()) if IMAGE_TOKEN in t.value else t
        for t in record.conversations
    ]
    for k, start in enumerate(range(0, len(turns), 2 * max_pairs)):
        chunk = turns[start : start + 2 * max_pairs]
        if record.num_visuals:
            chunk[0] = Turn("human", f"{IMAGE_TOKEN}\n{chunk[0].value}")
        out.append(dataclasses.replace(record, id=f"{record.id}#{k}", conversations=tuple(chunk)))
    return out


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def _resolve_under(root: Path, parts: tuple[str, ...], where: str) -> Path:
    """root/part0/part1..., refusing absolute parts and `..` that leave `root` (checked lexically,
    so a symlinked data directory still works)."""
    rels = []
    for part in parts:
        rel = part.replace("\\", "/")
        if posixpath.isabs(rel) or (len(rel) > 1 and rel[1] == ":"):
            raise DataError(
                where,
                errors.PATH_ESCAPES_ROOT,
                f"absolute path {part!r} not allowed under {root}",
            )
        rels.append(rel)
    norm = posixpath.normpath("/".join(rels))
    if norm == ".." or norm.startswith("../") or norm in ("", "."):
        raise DataError(where, errors.PATH_ESCAPES_ROOT, f"{'/'.join(parts)!r} escapes {root}")
    return Path(root, *norm.split("/"))


def video_path(root: str | Path, record: Record) -> Path:
    """`<root>/videos/<data_source>/<video>` (design §4). DataError PATH_ESCAPES_ROOT if it leaves root/videos."""
    return video_file(Path(root) / "videos", record)


def video_file(videos_dir: str | Path, record: Record) -> Path:
    """`<videos_dir>/<data_source>/<video>`. DataError PATH_ESCAPES_ROOT if it leaves videos_dir."""
    if record.video is None:
        raise ValueError(f"{record.origin}: record {record.id!r} has no video")
    return _resolve_under(Path(videos_dir), (record.data_source, record.video), record.origin)


def feature_path(root: str | Path, record: Record, ext: str = "safetensors") -> Path:
    """`<root>/features/<data_source>/<video without extension>.<ext>` (design §4)."""
    if record.video is None:
        raise ValueError(f"{record.origin}: record {record.id!r} has no video")
    stem, _ = posixpath.splitext(record.video.replace("\\", "/"))
    return _resolve_under(
        Path(root) / "features",
        (record.data_source, f"{stem}.{ext.lstrip('.')}"),
        record.origin,
    )


def image_paths(root: str | Path, record: Record) -> list[Path]:
    """`<root>/images/<image>` for each image of an image record (LLaVA-OneVision layout)."""
    return [_resolve_under(Path(root) / "images", (p,), record.origin) for p in record.images]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yields (line number from 1, parsed value or DataError MALFORMED_JSON) per non-blank line."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                yield lineno + 1, DataError(
                    f"{path}:{lineno + 1}",
                    errors.MALFORMED_JSON,
                    f"not UTF-8 ({e.reason}); rest of file skipped",
                )
                return
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, DataError(
                    f"{path}:{lineno}",
                    errors.MALFORMED_JSON,
                    f"column {e.colno}: {e.msg}",
                )


def iter_json_list(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Streams the elements of a top-level JSON list: yields (line where it starts, value).

    A syntax error yields one DataError (MALFORMED_JSON, "file:line" of the error) and ends the
    file: after a syntax error inside a list nothing can be trusted to resynchronise on.
    """
    path = Path(path)
    dec = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf, pos, line, eof = "", 0, 1, False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = f.read(_JSON_CHUNK)
            if not chunk:
                eof = True
                return False
            buf, pos = buf[pos:] + chunk, 0  # drop consumed text: memory stays ~one element
            return True

        def skip_ws() -> bool:  # advances past whitespace; False at end of input
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not fill():
                    return pos < len(buf)

        def fail(detail: str, at: int | None = None) -> DataError:
            return DataError(f"{path}:{line if at is None else at}", errors.MALFORMED_JSON, detail)

        try:
            if not skip_ws() or buf[pos] != "[":
                yield line, fail("a .json record file must hold a JSON list (use .jsonl for one record per line)")
                return
            pos += 1
            first = True
            while True:
                if not skip_ws():
                    yield line, fail("unterminated list")
                    return
                if buf[pos] == "]":
                    return
                if not first:
                    if buf[pos] != ",":
                        yield line, fail(f"expected ',' or ']', got {buf[pos]!r}")
                        return
                    pos += 1
                    if not skip_ws():
                        yield line, fail("unterminated list")
                        return
                first = False
                while True:  # decode one element, reading more text if it was cut by the chunk end
                    try:
                        value, end = dec.raw_decode(buf, pos)
                        if end < len(buf) or eof or not fill():  # a scalar cut at the chunk end
                            break
                    except json.JSONDecodeError as e:
                        if len(buf) - pos > _JSON_MAX_ELEMENT or not fill():
                            at = line + buf.count("\n", pos, e.pos)  # the line of the error itself
                            yield at, fail(f"column {e.colno}: {e.msg}", at)
                            return
                start_line = line
                line += buf.count("\n", pos, end)
                pos = end
                yield start_line, value
        except UnicodeDecodeError as e:
            yield line, fail(f"not UTF-8 ({e.reason})")


def iter_records(path: str | Path, max_qa_pairs: int | None = MAX_QA_PAIRS) -> Iterator[Record | DataError]:
    """Streams validated records of a `.json` or `.jsonl` file; bad ones come out as DataError.

    Each DataError's path is "file:line", so a log names the exact line. Records with more than
    `max_qa_pairs` QA pairs are split (`split_qa_pairs`); None keeps them whole.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, errors.MISSING_FILE, "record file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        items = iter_jsonl(path)
    elif suffix == ".json":
        items = iter_json_list(path)
    else:
        raise DataError(
            path,
            errors.BAD_RECORD,
            f"unknown record file type {suffix!r} (want .json or .jsonl)",
        )
    for lineno, value in items:
        if isinstance(value, DataError):
            yield value
            continue
        try:
            rec = parse_record(value, f"{path}:{lineno}")
        except DataError as e:
            yield e
            continue
        yield from (split_qa_pairs(rec, max_qa_pairs) if max_qa_pairs else [rec])


def load_records(
    path: str | Path, skipped: Counter | None = None, max_qa_pairs: int | None = MAX_QA_PAIRS
) -> list[Record]:
    """All good records of a file. With `skipped`, bad ones are counted by reason and dropped;
    without it the first bad one is raised."""
    out = []
    for item in iter_records(path, max_qa_pairs):
        if isinstance(item, DataError):
            if skipped is None:
                raise item
            skipped[item.reason] += 1
        else:
            out.append(item)
    return out


def write_jsonl(records: list[Record] | list[dict], path: str | Path) -> Path:
    """Writes records (Record or raw dicts) as JSON Lines, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json() if isinstance(r, Record) else r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
