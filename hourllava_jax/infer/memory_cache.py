"""Encode once, ask many: the per-video visual features of one model, cached in memory and on disk.

What is cached is everything a question does not change: the 1-FPS frame selection (design §3.2)
and the pooled SigLIP features of those frames, float32[T, p², C] (design §1.2), with the frame
indices, timestamps and duration. The projector, the memory repository gather, forgetting,
MemAug and the LLM run per question (they depend on the question, or are cheap next to the
vision tower). Caching the features *before* the projector (not the projected memory tokens)
keeps entries 3x smaller for Hour-LLaVA-7B (C = 1152 vs H = 3584; the release's pre-extracted
``vid_feat`` has the same layout), makes one entry valid for every checkpoint that shares the
vision tower (stage 3 freezes it), and lets the cached path feed ``HourLlava.llm_inputs``
exactly the arrays the uncached path feeds it, so answers match bit for bit.

Keys (all sha256, hex):

* video: the file's size, mtime and first and last MiB (``quick``), or every byte (``full``);
* model: :func:`vision_fingerprint`: the vision config, pool size and a digest of every
  vision-tower parameter;
* settings: the frame-sampling arguments (fps, min/max frames, image size).

On disk: ``<dir>/<model[:16]>/<entry>.safetensors`` holding ``features``, ``frame_indices``,
``timestamps`` and, in the safetensors header metadata, a JSON record (duration, keys, dtype,
path). No pickle. Writes go to a unique temporary file in the same directory, fsynced, then
``os.replace``d: readers never see a partial entry and concurrent writers of the same entry
both leave a complete one. An unreadable or inconsistent entry is a miss (and is overwritten).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError

FORMAT_VERSION = 1
_MIB = 1 << 20
Source = Literal["computed", "memory", "disk"]


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
    """One video, ready for any question.

    features: float32[T, P, C] pooled SigLIP features (P = p², before the projector);
    frame_indices: int64[T] display-order indices of the sampled frames; timestamps: float64[T]
    seconds; duration: seconds; path: the video file.
    """

    features: np.ndarray
    frame_indices: np.ndarray
    timestamps: np.ndarray
    duration: float
    path: str

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


def video_key(path: str | Path, *, full: bool = False) -> str:
    """sha256 identifying the file's content (``full``) or size + mtime + first/last MiB.

    Raises DataError(MISSING_FILE) naming the file if it does not exist.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(path, errors.MISSING_FILE, "no such file") from None
    if not path.is_file():
        raise DataError(path, errors.NOT_A_VIDEO, "not a regular file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if full:
            h.update(b"full\0")
            while chunk := f.read(8 * _MIB):
                h.update(chunk)
        else:
            h.update(f"quick\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            h.update(f.read(_MIB))
            if st.st_size > 2 * _MIB:
                f.seek(st.st_size - _MIB)
                h.update(f.read(_MIB))
            elif st.st_size > _MIB:
                h.update(f.read())
    return h.hexdigest()


def params_digest(tree: Any) -> str:
    """sha256 over every array leaf (path, dtype, shape, bytes) of a pytree / NNX state."""
    import jax  # the cache itself needs no JAX; only fingerprinting a model does

    h = hashlib.sha256()
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(kp)}|{a.dtype.str}|{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def vision_fingerprint(model: Any) -> str:
    """sha256 of what the cached features depend on: the vision config, the pool size and the
    vision tower's parameters (the LLM, MemAug and projector may differ between checkpoints)."""
    from flax import nnx

    from hourllava_jax.config import to_dict

    cfg = model.cfg
    meta = {"vision": to_dict(cfg.vision), "pool_size": cfg.memory.pool_size, "dtype": str(model.dtype)}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(params_digest(nnx.state(model.vision_tower, nnx.Param)).encode())
    return h.hexdigest()


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()


class MemoryCache:
    """In-memory LRU over an optional on-disk store of :class:`EncodedVideo` entries.

    Args:
      directory: on-disk store (None: memory only).
      max_in_memory: entries kept in RAM (an hour at 1 FPS of a real model is ~1 GB).
      full_hash: hash whole video files instead of size + mtime + first/last MiB.
    ``stats`` counts ``computed`` / ``memory`` / ``disk`` lookups and ``corrupt`` entries skipped.
    """

    def __init__(self, directory: str | Path | None = None, *, max_in_memory: int = 4, full_hash: bool = False):
        if max_in_memory < 0:
            raise ValueError(f"max_in_memory must be >= 0, got {max_in_memory}")
        self.directory = None if directory is None else Path(directory)
        self.max_in_memory = max_in_memory
        self.full_hash = full_hash
        self._lru: collections.OrderedDict[str, EncodedVideo] = collections.OrderedDict()
        self._by_path: dict[str, set[str]] = collections.defaultdict(set)
        self._lock = threading.Lock()
        self.stats: collections.Counter[str] = collections.Counter()

    # -- keys --------------------------------------------------------------------------------

    def entry_key(self, video: str | Path, model_fp: str, settings: Mapping[str, Any]) -> str:
        vk = video_key(video, full=self.full_hash)
        return hashlib.sha256(f"v{FORMAT_VERSION}\0{vk}\0{model_fp}\0{settings_key(settings)}".encode()).hexdigest()

    def entry_path(self, key: str, model_fp: str) -> Path | None:
        return None if self.directory is None else self.directory / model_fp[:16] / f"{key}.safetensors"

    # -- lookups -----------------------------------------------------------------------------

    def get_or_compute(self, video: str | Path, model_fp: str, settings: Mapping[str, Any],
                       compute: Callable[[], EncodedVideo]) -> tuple[EncodedVideo, Source]:
        """The entry for (video content, model, settings): from RAM, disk, or ``compute()``
        (then stored in both). Returns (entry, where it came from)."""
        key = self.entry_key(video, model_fp, settings)
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                self.stats["memory"] += 1
                return hit, "memory"
        path = self.entry_path(key, model_fp)
        source: Source = "disk"
        enc = self._read(path, key, model_fp) if path is not None else None
        if enc is None:
            enc, source = compute(), "computed"
            if path is not None:
                self._write(path, enc, key, model_fp, settings)
        self.stats[source] += 1
        self._remember(key, str(video), enc)
        return enc, source

    def release(self, video: str | Path) -> None:
        """Drops the in-memory entries of ``video`` (the disk store keeps them)."""
        with self._lock:
            for key in self._by_path.pop(str(video), set()):
                self._lru.pop(key, None)

    def clear_memory(self) -> None:
        with self._lock:
            self._lru.clear()
            self._by_path.clear()

    def __len__(self) -> int:
        return len(self._lru)

    def _remember(self, key: str, video: str, enc: EncodedVideo) -> None:
        if self.max_in_memory == 0:
            return
        with self._lock:
            self._lru[key] = enc
            self._lru.move_to_end(key)
            self._by_path[video].add(key)
            while len(self._lru) > self.max_in_memory:
                old, _ = self._lru.popitem(last=False)
                for keys in self._by_path.values():
                    keys.discard(old)

    # -- disk --------------------------------------------------------------------------------

    def _read(self, path: Path, key: str, model_fp: str) -> EncodedVideo | None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})["hourllava"])
            arrays = load_file(str(path))
            feats, idx, ts = arrays["features"], arrays["frame_indices"], arrays["timestamps"]
            ok = (meta.get("format") == FORMAT_VERSION and meta.get("key") == key and meta.get("model") == model_fp
                  and feats.ndim == 3 and idx.shape == ts.shape == (feats.shape[0],) and feats.shape[0] > 0)
            if not ok:
                raise ValueError("metadata does not match the entry")
            return EncodedVideo(feats.astype(np.float32, copy=False), idx.astype(np.int64), ts.astype(np.float64),
                                float(meta["duration"]), str(meta["path"]))
        except (OSError, KeyError, ValueError, TypeError, SafetensorError, json.JSONDecodeError):
            self.stats["corrupt"] += 1  # a half-copied or foreign file: recompute and overwrite
            return None

    def _write(self, path: Path, enc: EncodedVideo, key: str, model_fp: str, settings: Mapping[str, Any]) -> None:
        from safetensors.numpy import save

        meta = {"format": FORMAT_VERSION, "key": key, "model": model_fp, "settings": dict(settings),
                "duration": enc.duration, "path": enc.path, "num_frames": enc.num_frames}
        blob = save({"features": np.ascontiguousarray(enc.features, np.float32),
                     "frame_indices": np.ascontiguousarray(enc.frame_indices, np.int64),
                     "timestamps": np.ascontiguousarray(enc.timestamps, np.float64)},
                    metadata={"hourllava": json.dumps(meta, sort_keys=True)})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


__all__ = ["EncodedVideo", "MemoryCache", "params_digest", "settings_key", "video_key", "vision_fingerprint"]
