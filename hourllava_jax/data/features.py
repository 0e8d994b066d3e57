"""Per-video pre-extracted features without pickle (design §3.3 "Pre-extraction", design §4.2 feature paths).

The release stores one ``torch.save`` pickle per video: ``vid_feat float32[N, 64, 1152]`` (SigLIP,
bilinear-pooled to 8x8) and ``duration`` (seconds, 2 decimals). Here a *feature store* holds them
in ArrayRecord shards, one record per video::

    record = MAGIC | uint32 little-endian header length | header JSON | raw C-order array bytes
    header = {"key", "duration", "shape": [N, P, C], "dtype": "float32" | "bfloat16"}

(a JSON header plus raw bytes: no pickle, no TensorFlow, readable from any language). Layout::

    <store>/shards/<writer>-<session>.array_record   finished shards (written as .tmp, renamed)
    <store>/index/<writer>.jsonl                      one line per stored video:
        {"key", "shard", "pos", "num_frames", "duration", "shape", "dtype"}
    <store>/failed/<writer>.jsonl                     videos that could not be extracted (reason)

Keys are ``<data_source>/<video path without extension>`` (``feature_key``), the same names the
release uses under ``features/``. One writer per process (``writer="p00003"``) so processes never
share a file. Resumable: a shard's index lines are appended only after the shard is closed and
renamed, so a crash loses at most the unfinished shard, whose videos are redone on the next run
(``FeatureWriter.done`` holds every key already in any writer's index).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.records import Record

log = logging.getLogger(__name__)

# Not (yet) in errors.py: a stored feature blob that does not decode.
CORRUPT_FEATURES = errors.CORRUPT_FEATURES
MAGIC = b"HLVF1\n"
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
_HEADER_LEN = struct.Struct("<I")
_MAX_HEADER = 1 << 16


@dataclasses.dataclass(frozen=True)
class VideoFeatures:
    """One video: ``features`` float[N, P, C] (P = pooled tokens per frame, 64 in the release),
    ``duration`` in seconds (the video's, not N)."""

    key: str
    features: np.ndarray
    duration: float

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


def feature_key(record: Record) -> str:
    """``<data_source>/<video without extension>`` of a video record (design §4.2 feature path)."""
    if record.video is None:
        raise ValueError(f"{record.origin}: record {record.id!r} has no video")
    stem = os.path.splitext(record.video.replace("\\", "/"))[0]
    return f"{record.data_source}/{stem}"


# ---------------------------------------------------------------------------------------------
# One record <-> bytes
# ---------------------------------------------------------------------------------------------


def encode_features(key: str, features: np.ndarray, duration: float, dtype: str = "float32") -> bytes:
    """float[N, P, C] + duration -> one store record (module docstring). ``dtype``: float32 (the
    release's), bfloat16 (half the disk, ~3 significant digits) or float16."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    x = np.asarray(features)
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"{key}: features must be float[N >= 1, P, C], got {x.shape}")
    if not np.isfinite(np.asarray(x, np.float32)).all():
        raise ValueError(f"{key}: features hold NaN/inf")
    x = np.ascontiguousarray(x.astype(DTYPES[dtype]))
    header = json.dumps(
        {"key": key, "duration": round(float(duration), 2), "shape": list(x.shape), "dtype": dtype}
    ).encode()
    return MAGIC + _HEADER_LEN.pack(len(header)) + header + x.tobytes()


def decode_features(blob: bytes, where: str = "") -> VideoFeatures:
    """Inverse of ``encode_features``; features come back in the stored dtype (read-only view).
    Raises DataError(CORRUPT_FEATURES) on any inconsistency (bad magic, header, size)."""
    m, h = len(MAGIC), _HEADER_LEN.size
    if len(blob) < m + h or blob[:m] != MAGIC:
        raise DataError(where, CORRUPT_FEATURES, "not a feature record (bad magic)")
    (n,) = _HEADER_LEN.unpack_from(blob, m)
    if n > _MAX_HEADER or m + h + n > len(blob):
        raise DataError(where, CORRUPT_FEATURES, f"header length {n} out of range")
    try:
        header = json.loads(blob[m + h : m + h + n])
        shape = tuple(int(d) for d in header["shape"])
        dtype = DTYPES[header["dtype"]]
        duration = float(header["duration"])
        key = str(header["key"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(where, CORRUPT_FEATURES, f"bad header ({e})") from e
    body = memoryview(blob)[m + h + n :]
    if len(shape) != 3 or int(np.prod(shape)) * dtype.itemsize != len(body):
        raise DataError(where, CORRUPT_FEATURES, f"{len(body)} bytes do not hold {dtype.name}{list(shape)}")
    return VideoFeatures(key, np.frombuffer(body, dtype).reshape(shape), duration)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _read_index(store: Path) -> Iterator[dict[str, Any]]:
    """Entries of every ``index/*.jsonl``; a torn last line (a crash mid-append) is ignored."""
    for path in sorted((store / "index").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    entry["key"], entry["shard"], entry["pos"]  # noqa: B018 - validate
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: unreadable index line ignored (its video will be redone)", path, lineno)
                    continue
                yield entry


def read_failed(store: str | Path) -> dict[str, dict[str, str]]:
    """key -> {"reason", "detail"} of every video a writer recorded as failed."""
    out = {}
    for path in sorted((Path(store) / "failed").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
                out[e["key"]] = {"reason": e["reason"], "detail": e.get("detail", "")}
            except (ValueError, KeyError, TypeError):
                continue
    return out


class FeatureWriter:
    """Appends videos to a store as this process's writer (module docstring). Use as a context
    manager, or call ``close()``: unfinished shards are only committed by ``close``/``flush``.

    Args:
      store: the store directory (created).
      writer: this writer's name, unique among concurrent processes (e.g. ``p00003``).
      shard_size: videos per shard (also the most work a crash can lose).
      dtype: stored dtype, "float32" (release) or "bfloat16" / "float16".
      compression: ArrayRecord chunk compression: "uncompressed" (default: zstd, ArrayRecord's
        default, made reads 3.3x slower on feature-like data for 8 % less disk), "snappy",
        "zstd:<level>" or "brotli:<level>".
    """

    def __init__(self, store: str | Path, *, writer: str = "p00000", shard_size: int = 64, dtype: str = "float32",
                 compression: str = "uncompressed"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not writer or "/" in writer or "-" in writer:
            raise ValueError(f"writer name must be non-empty without '/' or '-', got {writer!r}")
        self.store = Path(store)
        self.writer = writer
        self.shard_size = shard_size
        self.dtype = dtype
        self._options = f"group_size:1,{compression}"  # one video per chunk: random access reads one record
        for sub in ("shards", "index", "failed"):
            (self.store / sub).mkdir(parents=True, exist_ok=True)
        for stale in (self.store / "shards").glob(f"{writer}-*.tmp"):  # a crashed session of this writer
            stale.unlink()
        self.done: set[str] = {e["key"] for e in _read_index(self.store)}
        self.failed: dict[str, dict[str, str]] = read_failed(self.store)
        sessions = [int(p.stem.split("-")[1]) for p in (self.store / "shards").glob(f"{writer}-*.array_record")]
        self._next_session = max(sessions, default=-1) + 1
        self._ar: ArrayRecordWriter | None = None
        self._shard = ""
        self._pending: list[dict[str, Any]] = []

    def __contains__(self, key: str) -> bool:
        return key in self.done or any(p["key"] == key for p in self._pending)

    def add(self, key: str, features: np.ndarray, duration: float) -> bool:
        """Stores float[N, P, C] for ``key``; False (and nothing written) if it is already stored."""
        if key in self:
            return False
        blob = encode_features(key, features, duration, self.dtype)
        if self._ar is None:
            self._shard = f"{self.writer}-{self._next_session:05d}.array_record"
            self._next_session += 1
            self._ar = ArrayRecordWriter(str(self.store / "shards" / (self._shard + ".tmp")), self._options)
        self._ar.write(blob)
        shape = list(np.shape(features))
        self._pending.append({"key": key, "shard": self._shard, "pos": len(self._pending), "num_frames": shape[0],
                              "duration": round(float(duration), 2), "shape": shape, "dtype": self.dtype})
        if len(self._pending) >= self.shard_size:
            self.flush()
        return True

    def add_failed(self, key: str, reason: str, detail: str = "") -> None:
        """Records that ``key`` could not be extracted (so a rerun can skip or retry it)."""
        entry = {"key": key, "reason": reason, "detail": detail}
        self.failed[key] = {"reason": reason, "detail": detail}
        with open(self.store / "failed" / f"{self.writer}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def flush(self) -> None:
        """Commits the open shard: close, rename from .tmp, then append its index lines."""
        if self._ar is None:
            return
        self._ar.close()
        tmp = self.store / "shards" / (self._shard + ".tmp")
        os.replace(tmp, tmp.with_suffix(""))
        index = self.store / "index" / f"{self.writer}.jsonl"
        torn = False
        if index.is_file() and index.stat().st_size:
            with open(index, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with open(index, "a", encoding="utf-8") as f:
            # after a torn last line (crash mid-append) start a fresh line, or ours would be lost too
            f.write("\n" * bool(torn) + "".join(json.dumps(e) + "\n" for e in self._pending))
            f.flush()
            os.fsync(f.fileno())
        self.done.update(e["key"] for e in self._pending)
        self._ar, self._pending = None, []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class FeatureStore:
    """Random access to a store: ``store.get(key) -> VideoFeatures``; also a grain
    ``RandomAccessDataSource`` over its keys in sorted order (``store[i]``).

    Shard readers open lazily and are dropped when the object is pickled (grain ships data
    sources to worker processes), so each process opens its own.
    """

    def __init__(self, store: str | Path):
        self.store = Path(store)
        if not (self.store / "index").is_dir():
            raise DataError(self.store, errors.MISSING_FILE, "not a feature store (no index/ directory)")
        self._index: dict[str, dict[str, Any]] = {}
        for e in _read_index(self.store):
            self._index.setdefault(e["key"], e)  # a video stored twice (rerun with another layout): first wins
        self._keys = sorted(self._index)
        self._readers: dict[str, ArrayRecordReader] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"store": str(self.store), "index": self._index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store = Path(state["store"])
        self._index = state["index"]
        self._keys = sorted(self._index)
        self._readers, self._lock = {}, threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._keys)

    def meta(self, key: str) -> dict[str, Any]:
        """Index entry of ``key`` (num_frames, duration, shape, dtype) without reading features."""
        if key not in self._index:
            raise DataError(f"{self.store}:{key}", errors.MISSING_FILE, "no features stored for this video")
        return self._index[key]

    def get(self, key: str) -> VideoFeatures:
        """Features of ``key``; DataError MISSING_FILE (not stored / shard gone) or CORRUPT_FEATURES."""
        e = self.meta(key)
        where = f"{self.store}/shards/{e['shard']}:{e['pos']}"
        with self._lock:
            reader = self._readers.get(e["shard"])
            if reader is None:
                path = self.store / "shards" / e["shard"]
                if not path.is_file():
                    raise DataError(where, errors.MISSING_FILE, "feature shard does not exist")
                try:
                    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
                except Exception as err:  # noqa: BLE001 - array_record raises plain RuntimeError/ValueError
                    raise DataError(where, CORRUPT_FEATURES, f"shard does not open ({err})") from err
                self._readers[e["shard"]] = reader
            try:
                (blob,) = reader.read([int(e["pos"])])
            except Exception as err:  # noqa: BLE001
                raise DataError(where, CORRUPT_FEATURES, f"record does not read ({err})") from err
        out = decode_features(blob, where)
        if out.key != key:
            raise DataError(where, CORRUPT_FEATURES, f"record holds {out.key!r}, index says {key!r}")
        return out

    def __getitem__(self, i: int) -> VideoFeatures:
        return self.get(self._keys[i])

    def close(self) -> None:
        with self._lock:
            for r in self._readers.values():
                r.close()
            self._readers.clear()


# ---------------------------------------------------------------------------------------------
# The release's .pt files
# ---------------------------------------------------------------------------------------------


def pt_feature_files(root: str | Path) -> list[tuple[str, Path]]:
    """(key, path) of every ``*.pt`` under ``root`` (the release's ``features/`` tree), sorted;
    key = relative path without extension (``<data_source>/<video stem>``)."""
    root = Path(root)
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p) for p in root.rglob("*.pt"))


def load_pt_features(path: str | Path) -> tuple[np.ndarray, float]:
    """One release feature file -> (float32[N, P, C], duration). Loaded with
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. DataError on bad input."""
    import torch  # the package's only torch import: converting the release's files needs it

    path = Path(path)
    if not path.is_file():
        raise DataError(path, errors.MISSING_FILE, "feature file does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(path, CORRUPT_FEATURES, f"torch.load(weights_only=True) failed ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or "vid_feat" not in obj or "duration" not in obj:
        raise DataError(path, CORRUPT_FEATURES, "expected a dict with 'vid_feat' and 'duration'")
    feat, duration = obj["vid_feat"], obj["duration"]
    if not isinstance(feat, torch.Tensor) or feat.ndim != 3:
        raise DataError(path, CORRUPT_FEATURES, f"'vid_feat' must be a float tensor [N, P, C], got {getattr(feat, 'shape', type(feat))}")
    duration = float(duration.item() if isinstance(duration, torch.Tensor) else duration)
    return feat.detach().to(torch.float32).numpy(), duration


def convert_pt_features(
    files: Iterable[tuple[str, Path]], store: str | Path, *, writer: str = "p00000", dtype: str = "float32",
    shard_size: int = 64,
) -> dict[str, int]:
    """Converts release ``.pt`` files into a store, resumably (stored keys are skipped).

    Returns counts: {"converted", "skipped_done", <DataError reasons>...}. Bad files are
    recorded under ``failed/`` and logged once each, never raised.
    """
    counts: dict[str, int] = {"converted": 0, "skipped_done": 0}
    with FeatureWriter(store, writer=writer, dtype=dtype, shard_size=shard_size) as w:
        for key, path in files:
            if key in w:
                counts["skipped_done"] += 1
                continue
            try:
                feat, duration = load_pt_features(path)
                w.add(key, feat, duration)
            except (DataError, ValueError) as e:
                reason = e.reason if isinstance(e, DataError) else CORRUPT_FEATURES
                log.warning("skipping %s: %s", path, e)
                w.add_failed(key, reason, str(e))
                counts[reason] = counts.get(reason, 0) + 1
                continue
            counts["converted"] += 1
    return counts


__all__ = [
    "CORRUPT_FEATURES", "DTYPES", "FeatureStore", "FeatureWriter", "VideoFeatures", "convert_pt_features",
    "decode_features", "encode_features", "feature_key", "load_pt_features", "pt_feature_files", "read_failed",
]
