"""Random-access sources of raw training elements for the grain pipeline (``data/pipeline.py``).

An element is a dict with ``record`` (the record's JSON text) and ``origin`` (where it came
from, for error messages), plus, from a TFDS source, the visual payload stored with it:
``features`` float[N, P, C] + ``duration`` (``videomarathon/features``) or ``frames``
uint8[T, S, S, 3] + ``duration`` (``videomarathon/frames``). Elements stay unparsed so that a
malformed one is reported and counted by the pipeline like any other bad sample.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.records import iter_json_list

# Prefix of an element whose ``.json`` list did not parse (the rest is the JSON-encoded message).
BROKEN = "\x00"


def file_identity(path: Path) -> list:
    """[resolved path, size, mtime_ns]: what caches key on to notice a changed file."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class RecordSource:
    """Raw records of ``.jsonl``/``.json`` files as ``{"record": text, "origin": "file:line"}``.

    A ``.json`` file that does not parse as a list is one bad element.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self._items: list[tuple[str, str]] = []
        self._identity = []
        for path in map(Path, paths):
            if not path.is_file():
                raise DataError(path, errors.MISSING_FILE, "record file does not exist")
            self._identity.append(file_identity(path))
            if path.suffix == ".json":
                for line, value in iter_json_list(path):
                    text = BROKEN + json.dumps(value.detail) if isinstance(value, DataError) else json.dumps(value)
                    self._items.append((text, f"{path}:{line}"))
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        self._items.append((line, f"{path}:{lineno}"))

    def __len__(self) -> int:
        return len(self._items)

    def identity(self) -> list:
        """What the metadata cache keys on: each file's path, size and modification time."""
        return self._identity

    def __getitem__(self, i: int) -> dict[str, Any]:
        text, origin = self._items[i]
        return {"record": text, "origin": origin}


class TfdsSource:
    """Wraps ``tfds.data_source("videomarathon/<config>", ...)``: the ``features`` config gives
    elements with ``features`` float[N, P, C], the ``frames`` config elements with ``frames``
    uint8[T, S, S, 3] (already selected by the design §3.2 raw-video rule when the dataset was
    built), both with ``duration``. Any random-access source of such dicts works."""

    def __init__(self, tfds_source):
        self._src = tfds_source

    def __len__(self) -> int:
        return len(self._src)

    def identity(self) -> list:
        return [repr(self._src), len(self._src)]  # names the dataset's files and version

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self._src[i]
        rec = ex["record"]
        out = {"record": rec.decode() if isinstance(rec, bytes) else rec, "origin": f"tfds[{i}]",
               "duration": float(ex["duration"])}
        if "frames" in ex:
            out["frames"] = np.asarray(ex["frames"])
        else:
            out["features"] = np.asarray(ex["features"])
        return out


__all__ = ["BROKEN", "RecordSource", "TfdsSource", "file_identity"]
