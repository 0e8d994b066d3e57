"""What every benchmark reader shares: tolerant JSON reading and an item/problem collector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hourllava_jax.eval.items import (
    BAD_OPTIONS,
    BAD_RECORD,
    DUPLICATE_ID,
    EvalItem,
    LETTERS,
    MALFORMED_JSON,
    MISSING_FILE,
    Problem,
    coerce_options,
)


class Collector:
    """Accumulates the items and problems of one benchmark load.

    `add` rejects duplicate ids (the second one becomes a problem), so results keyed by id can
    never silently overwrite each other.
    """

    def __init__(self, benchmark: str):
        self.benchmark = benchmark
        self.items: list[EvalItem] = []
        self.problems: list[Problem] = []
        self._ids: set[str] = set()

    def problem(self, where: str, reason: str, message: str) -> None:
        self.problems.append(Problem(self.benchmark, where, reason, message))

    def add(self, where: str, item: EvalItem) -> None:
        if item.id in self._ids:
            self.problem(where, DUPLICATE_ID, f"id {item.id!r} seen before; kept the first")
            return
        self._ids.add(item.id)
        self.items.append(item)

    def result(self) -> tuple[list[EvalItem], list[Problem]]:
        return self.items, self.problems


def read_json(path: Path, out: Collector, top: type | None = None, shape: str = "a list") -> Any | None:
    """The parsed file, or None with a recorded problem (missing, not JSON, or, with ``top``, a
    top level that is not of that type: the problem says it must be ``shape``)."""
    if not path.is_file():
        out.problem(str(path), MISSING_FILE, "annotation file not found")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        out.problem(str(path), MALFORMED_JSON, str(e))
        return None
    if top is not None and not isinstance(data, top):
        out.problem(path.name, BAD_RECORD, f"top level must be {shape}")
        return None
    return data


def read_jsonl(path: Path, out: Collector) -> list[tuple[str, Any]]:
    """(where, parsed line) pairs; unparsable lines become problems, blank lines are skipped."""
    if not path.is_file():
        out.problem(str(path), MISSING_FILE, "annotation file not found")
        return []
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                rows.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                out.problem(where, MALFORMED_JSON, str(e))
    return rows


def checked_options(row: Any, fields: dict[str, type | tuple[type, ...]], options_key: str, where: str,
                    out: Collector) -> tuple[str, ...] | None:
    """The row's options if it has every field (right types) and usable options; otherwise None
    with the problem recorded (BAD_RECORD or BAD_OPTIONS) against ``where``."""
    err = require(row, fields)
    if err:
        out.problem(where, BAD_RECORD, err)
        return None
    options = coerce_options(row[options_key])
    if isinstance(options, str):
        out.problem(where, BAD_OPTIONS, options)
        return None
    return options


def require(record: Any, fields: dict[str, type | tuple[type, ...]]) -> str | None:
    """None if `record` is a dict with every field of the right type, else what is wrong."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    for name, tp in fields.items():
        if name not in record:
            return f"missing field {name!r}"
        value = record[name]
        # bool is an int subclass; an answer index of True is a broken record, not 1.
        if not isinstance(value, tp) or (isinstance(value, bool) and bool not in _as_tuple(tp)):
            return f"field {name!r} has type {type(value).__name__}"
        if isinstance(value, str) and not value.strip():
            return f"field {name!r} is empty"
    return None


def _as_tuple(tp: type | tuple[type, ...]) -> tuple[type, ...]:
    return tp if isinstance(tp, tuple) else (tp,)


def answer_letter(answer: Any, n_options: int) -> str | None:
    """A valid letter for `n_options` options from "C" / "(C)" / "C. text", else None."""
    if not isinstance(answer, str):
        return None
    s = answer.strip()
    if len(s) >= 1 and s[0] == "(":
        s = s[1:]
    if s and s[0] in LETTERS[:n_options] and (len(s) == 1 or not s[1].isalnum()):
        return s[0]
    return None


def number(value: Any) -> float | None:
    """A JSON number as float (durations); None for anything else, bools included."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def options_from_split(parts: list[str], marker: str) -> tuple[str, tuple[str, ...]] | str:
    """``re.split`` of "question, then lettered options" text with the letter as the one group
    -> ("question", options), or an error string. Letters must run A, B, C, ... in order."""
    question, rest = parts[0].strip(), parts[1:]
    letters, options = rest[0::2], [o.strip() for o in rest[1::2]]
    if len(options) < 2:
        return f"question has fewer than 2 {marker!r} options"
    if "".join(letters) != LETTERS[: len(letters)]:
        return f"option letters {''.join(letters)!r} are not A, B, C, ... in order"
    if any(not o for o in options):
        return "an option is empty"
    return question, tuple(options)
