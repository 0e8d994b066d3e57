"""grain input pipelines: records + pre-extracted features -> static-shape training batches.

How it works (SPEC §2 stage 3, §3; docs/data_pipeline.md):

1. **Source**: a grain ``RandomAccessDataSource`` of elements ``{"record": <JSON text>}``
   (``RecordSource``: JSON Lines records, features from a ``FeatureStore``) or
   ``{"record", "features", "duration"}`` (``TfdsSource``: the ``videomarathon/features`` TFDS
   dataset, features inline).
2. **Metadata pass** (once, at construction, in the main process): every record is parsed and
   tokenized with its time instruction, and its frame count ``T = min(N, int(duration))``
   (SPEC §2 feature rule) is read from the store index. This gives each sample a *stream*
   (``long``: a video of at least ``long_video_seconds``; ``short``: shorter videos and
   text-only records), a frame bucket and its exact token / decayed-token counts. Bad records
   (malformed JSON, bad conversation, missing features, too long) are dropped here, counted by
   reason and logged once per reason.
3. **Global batch plan** (per epoch, a pure function of ``seed`` and the epoch): a seeded
   shuffle, then samples are grouped by (stream, frame bucket) into *global* batches of
   ``batch_size * process_count`` rows; partial groups at the end of an epoch are dropped
   (counted). A micro-batch therefore never mixes long and short samples, and every batch has
   static shapes decided from the whole global batch, so all processes agree on them.
4. **grain**: ``MapDataset.source(plan)`` -> ``.map(LoadBatch)``: each process loads only its
   rows ``[p·B, (p+1)·B)`` of each global batch (disjoint, covering), builds ``Sample``s
   (features at the SPEC §2 indices, chat tokens and labels, ``video_layout`` with a random key
   ``fold_in(fold_in(key(seed), epoch), source_index)``) and ``collate``s them to the planned
   shapes. ``worker_count > 0`` runs that in grain worker processes (``mp_prefetch``); the
   batches are identical to ``worker_count = 0``. A sample that fails to load (a corrupt
   feature record, a vanished shard) becomes a filler row (one pad token, no loss) and is
   counted in the iterator state.
5. **State**: ``get_state()`` is a small JSON dict (next global batch number, skip counters,
   a fingerprint of the plan). It does not depend on the process count or the worker count,
   so a run can resume on another number of hosts (a gap of the release, SPEC §5).

Batches are dicts of numpy arrays, the ``HourLlava`` batch contract (``model/hour_llava.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data import errors
from hourllava_jax.data.chat import DEFAULT_IMAGE_TOKEN_ID, IGNORE_INDEX, tokenize_record
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import CORRUPT_FEATURES, DTYPES, FeatureStore, feature_key
from hourllava_jax.data.frames import feature_indices
from hourllava_jax.data.records import Record, iter_json_list, parse_record, video_path
from hourllava_jax.model.inputs import Sample, collate
from hourllava_jax.model.layout import PAD, video_layout

log = logging.getLogger(__name__)

LONG, SHORT = "long", "short"
UNSUPPORTED_KIND = errors.UNSUPPORTED_RECORD_KIND  # image records: not served by the feature pipeline
_LOGGED: set[str] = set()  # reasons already logged by this process (log once per reason)


def _log_once(reason: str, message: str) -> None:
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.warning("skipping bad sample (%s; further ones are only counted): %s", reason, message)


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Batching and sampling options.

    batch_size: rows per process (micro-batch); the global batch is ``batch_size * process_count``.
    frame_buckets: static frame counts U; a video of T frames goes to the smallest bucket >= T
      (longer ones are skipped as ``too_long`` unless ``max_frames`` caps T first).
    max_frames: optional cap on T (uniform subsample of the SPEC §2 indices; not in the release).
    text_multiple / decayed_multiple: token and decayed-token lengths are rounded up to these.
    long_video_seconds: videos at least this long form the ``long`` stream (VideoMarathon's
      shortest videos are 3 minutes).
    max_text_tokens: records with more text tokens are skipped (``too_long``); None: no limit.
    """

    batch_size: int
    seed: int = 0
    num_epochs: int | None = 1  # None: repeat forever (each epoch reshuffled)
    shuffle: bool = True
    frame_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    max_frames: int | None = None
    raw_fps: float = 1.0  # raw-video mode: SPEC §2 sampling rate
    raw_min_frames: int = 128  # raw-video mode: short videos get min(N, 128) frames (SPEC §2)
    text_multiple: int = 256
    decayed_multiple: int = 64
    long_video_seconds: float = 180.0
    max_text_tokens: int | None = None
    image_token_id: int = DEFAULT_IMAGE_TOKEN_ID
    pad_id: int = 0
    worker_count: int = 0
    worker_buffer_size: int = 2
    read_threads: int = 1

    def fingerprint(self) -> dict[str, Any]:
        keys = ("batch_size", "seed", "num_epochs", "shuffle", "frame_buckets", "max_frames", "raw_fps",
                "raw_min_frames", "text_multiple", "decayed_multiple", "long_video_seconds", "max_text_tokens")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in keys)}


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class RecordSource:
    """Raw records of ``.jsonl``/``.json`` files as ``{"record": text, "origin": "file:line"}``.

    Lines are kept unparsed so that a malformed one is reported (and counted) by the pipeline
    like any other bad sample. A ``.json`` file that does not parse as a list is one bad element.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self._items: list[tuple[str, str]] = []
        self._identity = []
        for path in map(Path, paths):
            if not path.is_file():
                raise DataError(path, errors.MISSING_FILE, "record file does not exist")
            self._identity.append(_file_identity(path))
            if path.suffix == ".json":
                for line, value in iter_json_list(path):
                    text = json.dumps(value.detail) if isinstance(value, DataError) else json.dumps(value)
                    self._items.append(("\x00" + text if isinstance(value, DataError) else text, f"{path}:{line}"))
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
    """Wraps ``tfds.data_source("videomarathon/features", ...)`` (or any random-access source of
    dicts with ``record`` (JSON text), ``features`` float[N, P, C] and ``duration``)."""

    def __init__(self, tfds_source):
        self._src = tfds_source

    def __len__(self) -> int:
        return len(self._src)

    def identity(self) -> list:
        return [repr(self._src), len(self._src)]  # names the dataset's files and version

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self._src[i]
        rec = ex["record"]
        return {"record": rec.decode() if isinstance(rec, bytes) else rec, "origin": f"tfds[{i}]",
                "features": np.asarray(ex["features"]), "duration": float(ex["duration"])}


# ---------------------------------------------------------------------------------------------
# One sample
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleMeta:
    """What the plan needs of a sample. num_frames T (0: text-only), text_len L (with
    placeholders), num_decayed (decayed tokens of the video, 0 for text)."""

    stream: str
    num_frames: int
    text_len: int
    num_decayed: int


class SampleBuilder:
    """Record (+ features) -> ``Sample``: the per-sample transform (picklable for grain workers;
    the tokenizer and the store open lazily in each process)."""

    def __init__(self, *, tokenizer_dir: str | Path, memory: MemoryConfig, cfg: PipelineConfig,
                 store_dir: str | Path | None = None, video_root: str | Path | None = None,
                 image_size: int | None = None):
        self.tokenizer_dir = str(tokenizer_dir)
        self.memory = memory
        self.cfg = cfg
        self.store_dir = None if store_dir is None else str(store_dir)
        # Raw-video mode: decode <video_root>/videos/<data_source>/<video> (SPEC §2 raw rule) into
        # normalised pixels float32[T, S, S, 3] instead of reading pre-extracted features.
        self.video_root = None if video_root is None else str(video_root)
        self.image_size = image_size
        if self.video_root is not None and not image_size:
            raise ValueError("raw-video mode needs image_size (the vision tower's input side)")
        self._tok = None
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_tok", "_store")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _tok=None, _store=None)

    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = _load_light_tokenizer(self.tokenizer_dir)
        return self._tok

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            if self.store_dir is None:
                raise ValueError("records without inline features need a feature store (store_dir)")
            self._store = FeatureStore(self.store_dir)
        return self._store

    def record(self, element: Mapping[str, Any]) -> Record:
        text, where = element["record"], element.get("origin", "")
        if text.startswith("\x00"):  # RecordSource's marker for a .json list that did not parse
            raise DataError(where, errors.MALFORMED_JSON, json.loads(text[1:]))
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(where, errors.MALFORMED_JSON, f"column {e.colno}: {e.msg}") from e
        rec = parse_record(raw, where)
        if rec.images:
            raise DataError(where, UNSUPPORTED_KIND, "image records need the image pipeline, not the feature pipeline")
        return rec

    def _raw_selection(self, rec: Record) -> tuple[Path, np.ndarray, float]:
        """Raw-video mode: (path, SPEC §2 frame indices int64[T], duration) by probing (no decoding)."""
        from hourllava_jax.data.video import probe_video

        path = video_path(self.video_root, rec)
        index = probe_video(path)
        idx = index.select(fps=self.cfg.raw_fps, min_frames=self.cfg.raw_min_frames, max_frames=self.cfg.max_frames)
        return path, idx, index.duration

    def _video_length(self, rec: Record, element: Mapping[str, Any]) -> tuple[int, float]:
        """(N stored feature frames, duration seconds), without reading features if possible."""
        if "features" in element:
            return int(np.shape(element["features"])[0]), float(element["duration"])
        m = self.store.meta(feature_key(rec))
        return int(m["num_frames"]), float(m["duration"])

    def frame_indices(self, n: int, duration: float) -> np.ndarray:
        """SPEC §2 feature rule, then the optional ``max_frames`` cap: int64[T]."""
        idx = feature_indices(n, duration)
        if self.cfg.max_frames is not None and len(idx) > self.cfg.max_frames:
            idx = idx[np.linspace(0, len(idx) - 1, self.cfg.max_frames).astype(np.int64)]
        return idx

    def _bucket(self, t: int, where: str) -> int:
        for b in self.cfg.frame_buckets:
            if t <= b:
                return b
        raise DataError(where, errors.TOO_LONG, f"{t} frames exceed the largest frame bucket {self.cfg.frame_buckets[-1]}")

    def _tokens(self, rec: Record, t: int, duration: float):
        tok = tokenize_record(rec, self.tokenizer, seconds=duration if t else None, n_frames=t or None,
                              image_token_id=self.cfg.image_token_id)
        if self.cfg.max_text_tokens is not None and len(tok) > self.cfg.max_text_tokens:
            raise DataError(rec.origin, errors.TOO_LONG, f"{len(tok)} text tokens > {self.cfg.max_text_tokens}")
        return tok

    def meta(self, element: Mapping[str, Any]) -> SampleMeta:
        """Plan-time metadata (reads no features when they come from a store). Raises DataError."""
        rec = self.record(element)
        if rec.video is None:
            return SampleMeta(SHORT, 0, len(self._tokens(rec, 0, 0.0)), 0)
        if self.video_root is not None:
            _, idx, duration = self._raw_selection(rec)
            t = len(idx)
        else:
            n, duration = self._video_length(rec, element)
            t = len(self.frame_indices(n, duration))
        self._bucket(t, rec.origin)
        stream = LONG if duration >= self.cfg.long_video_seconds else SHORT
        return SampleMeta(stream, t, len(self._tokens(rec, t, duration)), _num_decayed(t, self.memory))

    def build(self, element: Mapping[str, Any], *, epoch: int, source_index: int) -> Sample:
        """The training sample. ``features`` float[T, P, C] at the SPEC §2 indices; the layout's
        random forgetting key is ``fold_in(fold_in(key(seed), epoch), source_index)``, so it does
        not depend on process or worker counts. Raises DataError."""
        rec = self.record(element)
        if rec.video is None:
            tok = self._tokens(rec, 0, 0.0)
            return Sample(tok.input_ids, tok.labels)
        if self.video_root is not None:
            return self._build_raw(rec, epoch, source_index)
        if "features" in element:
            feats, duration = np.asarray(element["features"]), float(element["duration"])
        else:
            vf = self.store.get(feature_key(rec))
            feats, duration = vf.features, vf.duration
        if feats.ndim != 3 or feats.shape[1] != self.memory.pool_size**2:
            p2 = self.memory.pool_size**2
            raise DataError(rec.origin, CORRUPT_FEATURES, f"features {feats.shape} are not [N, {p2}, C] (pool size)")
        idx = self.frame_indices(feats.shape[0], duration)
        tok = self._tokens(rec, len(idx), duration)
        layout = video_layout(len(idx), self.memory, key=self._key(epoch, source_index))
        # Stored dtype kept (bf16 stores give bf16 batches: half the bytes to move; the model
        # casts features to its compute dtype before the projector).
        return Sample(tok.input_ids, tok.labels, np.asarray(feats[idx]), layout)

    def _key(self, epoch: int, source_index: int) -> jax.Array | None:
        if not _needs_key(self.memory):  # jax ops cost a compile per worker process: only when used
            return None
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.cfg.seed), epoch), source_index)

    def _build_raw(self, rec: Record, epoch: int, source_index: int) -> Sample:
        """Raw-video mode: pixels carried as ``features`` float32[T, S·S, 3] (``LoadBatch`` turns
        the padded batch into ``pixels`` float32[B, U, S, S, 3], the model's other input)."""
        from hourllava_jax.data.preprocess import normalize
        from hourllava_jax.data.video import decode_video

        cfg, s = self.cfg, self.image_size
        video = decode_video(video_path(self.video_root, rec), fps=cfg.raw_fps, min_frames=cfg.raw_min_frames,
                             max_frames=cfg.max_frames, size=s)
        t = len(video.indices)
        tok = self._tokens(rec, t, video.duration)
        layout = video_layout(t, self.memory, key=self._key(epoch, source_index))
        return Sample(tok.input_ids, tok.labels, normalize(video.frames).reshape(t, s * s, 3), layout)


class _LightTokenizer:
    """The slice of a HF fast tokenizer that ``chat.py`` uses, over ``tokenizers.Tokenizer``.

    Importing ``transformers`` costs seconds per grain worker (12 s wall on a loaded 2-core
    machine); ``tokenizer.json`` holds everything encoding needs (added tokens included), and the
    ids are those of ``PreTrainedTokenizerFast.encode(text, add_special_tokens=False)``.
    """

    unk_token_id = None

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._t = Tokenizer.from_file(str(path))
        self.name_or_path = str(path.parent)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._t.encode(text, add_special_tokens=add_special_tokens).ids

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._t.token_to_id(token)

    def __len__(self) -> int:
        return self._t.get_vocab_size(with_added_tokens=True)


def _load_light_tokenizer(tokenizer_dir: str | Path):
    """``_LightTokenizer`` when the directory has ``tokenizer.json``, else ``load_tokenizer``."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if path.is_file():
        from hourllava_jax.data.tokenizer import chat_token_ids

        tok = _LightTokenizer(path)
        chat_token_ids(tok)  # fail now if the chat ids are missing
        return tok
    from hourllava_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _needs_key(memory: MemoryConfig) -> bool:
    """True when ``video_layout`` draws random numbers (random spatial or temporal forgetting)."""
    return memory.spatial_mode == "random" or (memory.temporal_forgetting and memory.temporal_mode == "random")


@functools.lru_cache(maxsize=4096)
def _num_decayed(t: int, memory: MemoryConfig) -> int:
    """Decayed tokens of a T-frame video (the plan's N bucket); the count never depends on the draw."""
    key = jax.random.key(0) if _needs_key(memory) else None
    return int(len(video_layout(t, memory, key=key).decayed[0]))


# ---------------------------------------------------------------------------------------------
# The global batch plan
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """One global batch: source indices of its rows (``batch_size * process_count``) and the
    static shapes every process pads to: L text, U frames (0: text-only), M memory, N decayed."""

    epoch: int
    stream: str
    rows: tuple[int, ...]
    text_len: int
    units: int
    memory: int
    decayed: int


class BatchPlan:
    """Global batches of every epoch, computed lazily (a grain ``RandomAccessDataSource``).

    Element ``b`` is this process's share of global batch ``b``: ``{"batch": b, "epoch",
    "rows": its batch_size source indices, "shape": (L, U, M, N)}``.
    """

    def __init__(self, metas: Sequence[SampleMeta | None], cfg: PipelineConfig, memory: MemoryConfig, *,
                 process_index: int, process_count: int):
        self.cfg, self.memory = cfg, memory
        self.valid = np.asarray([i for i, m in enumerate(metas) if m is not None], np.int64)
        self.metas = list(metas)
        self.global_batch = cfg.batch_size * process_count
        self.process_index = process_index
        # Only the last couple of epoch plans are kept (an epoch of VideoMarathon is ~10^5
        # batches); an older one is recomputed on demand (plans are pure functions of the epoch).
        self._epochs: dict[int, list[PlannedBatch]] = {}
        self._starts: list[int] = [0]  # first global batch of each planned epoch, plus the end
        self.dropped_per_epoch: list[int] = []
        if len(self.valid) == 0:
            raise ValueError("no usable sample in the data (see the skip counts logged above)")

    def _key(self, i: int) -> tuple[str, int]:
        m = self.metas[i]
        b = 0 if m.num_frames == 0 else next(u for u in self.cfg.frame_buckets if m.num_frames <= u)
        return m.stream, b

    def _plan_epoch(self, epoch: int) -> list[PlannedBatch]:
        order = self.valid
        if self.cfg.shuffle:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(order)
        groups: dict[tuple[str, int], list[int]] = {}
        out = []
        p2 = self.memory.pool_size**2
        for i in order.tolist():
            k = self._key(i)
            g = groups.setdefault(k, [])
            g.append(i)
            if len(g) == self.global_batch:
                stream, units = k
                ms = [self.metas[j] for j in g]
                out.append(PlannedBatch(
                    epoch, stream, tuple(g),
                    text_len=_round_up(max(m.text_len for m in ms), self.cfg.text_multiple),
                    units=units,
                    memory=max(units, self.memory.min_frames) * (p2 + 1) if units else 0,
                    decayed=_round_up(max(m.num_decayed for m in ms), self.cfg.decayed_multiple) if units else 0,
                ))
                groups[k] = []
        if epoch == len(self.dropped_per_epoch):
            self.dropped_per_epoch.append(sum(len(g) for g in groups.values()))
        if not out:
            raise ValueError(f"epoch {epoch}: no bucket fills one global batch of {self.global_batch}")
        return out

    def _epoch_plan(self, e: int) -> list[PlannedBatch]:
        if e not in self._epochs:
            while len(self._epochs) >= 2:  # evict the least recently planned
                del self._epochs[next(iter(self._epochs))]
            self._epochs[e] = self._plan_epoch(e)
        return self._epochs[e]

    def _ensure(self, b: int) -> int:
        """Plans epochs until batch ``b`` is covered; returns its epoch."""
        while b >= self._starts[-1]:
            e = len(self._starts) - 1
            if self.cfg.num_epochs is not None and e >= self.cfg.num_epochs:
                raise IndexError(b)
            self._starts.append(self._starts[-1] + len(self._epoch_plan(e)))
        return int(np.searchsorted(self._starts, b, side="right") - 1)

    def __len__(self) -> int:
        if self.cfg.num_epochs is None:
            return sys.maxsize
        while len(self._starts) - 1 < self.cfg.num_epochs:
            self._ensure(self._starts[-1])
        return self._starts[-1]

    def planned(self, b: int) -> PlannedBatch:
        e = self._ensure(b)
        return self._epoch_plan(e)[b - self._starts[e]]

    def __getitem__(self, b: int) -> dict[str, Any]:
        pb = self.planned(b)
        lo = self.process_index * self.cfg.batch_size
        return {"batch": b, "epoch": pb.epoch, "stream": pb.stream, "rows": pb.rows[lo : lo + self.cfg.batch_size],
                "shape": (pb.text_len, pb.units, pb.memory, pb.decayed)}


# ---------------------------------------------------------------------------------------------
# Loading one batch (runs in grain workers)
# ---------------------------------------------------------------------------------------------


class LoadBatch(grain.transforms.Map):
    """Planned batch -> {"batch": dict of numpy arrays, "skipped": {reason: n}, "examples": {reason: message}}."""

    def __init__(self, source, builder: SampleBuilder, feature_dim: tuple[int, int] | None, feature_dtype: str = "float32"):
        self.source, self.builder, self.feature_dim, self.feature_dtype = source, builder, feature_dim, feature_dtype

    def map(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.builder.cfg
        text_len, units, memory, decayed = plan["shape"]
        samples, skipped, examples = [], Counter(), {}
        for i in plan["rows"]:
            try:
                s = self.builder.build(self.source[i], epoch=plan["epoch"], source_index=int(i))
                if units == 0 and s.features is not None:
                    raise DataError(f"source[{i}]", errors.BAD_RECORD, "planned as text-only, has a video")
                if len(s.input_ids) > text_len or (s.features is not None and len(s.features) > units):
                    raise DataError(f"source[{i}]", CORRUPT_FEATURES, "sample no longer matches its planned shape")
            except DataError as e:
                skipped[e.reason] += 1
                examples.setdefault(e.reason, str(e))
                # A filler row: one pad token, no loss, no visual input (keeps the static shape).
                s = Sample(np.asarray([cfg.pad_id], np.int32), np.asarray([IGNORE_INDEX], np.int32))
            samples.append(s)
        batch = collate(samples, pad_id=cfg.pad_id, text_multiple=text_len, unit_multiple=max(units, 1),
                        memory_multiple=max(memory, 1), decayed_multiple=max(decayed, 1),
                        image_token_id=cfg.image_token_id)
        if units and "features" not in batch:  # every row was a filler: still the planned shapes
            b, (p, c) = len(samples), self.feature_dim
            batch.update(features=np.zeros((b, units, p, c), DTYPES[self.feature_dtype]),
                         memory_src=np.full((b, memory), PAD, np.int32),
                         memory_pos=np.zeros((b, memory), np.int32), decayed=np.full((b, 1, decayed), -1, np.int32))
        if units and self.builder.video_root is not None:
            s = self.builder.image_size
            batch["pixels"] = batch.pop("features").reshape(len(samples), units, s, s, 3)
        return {"batch": batch, "skipped": dict(skipped), "examples": examples}


# ---------------------------------------------------------------------------------------------
# The iterator
# ---------------------------------------------------------------------------------------------


def _mark_flags_parsed() -> None:
    """grain workers read absl flags; a plain script never parsed them (ENV.md, Data)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class FeaturePipeline(Iterator[dict[str, np.ndarray]]):
    """Iterator of this process's batches with ``get_state()/set_state()`` (JSON dicts).

    Build with :func:`make_feature_pipeline`. ``skipped`` counts bad samples by reason: those
    dropped when planning (``plan_skipped``, the same on every process) plus those that failed to
    load in this process's batches so far (part of the state). Call ``close()`` (or use ``with``)
    to stop grain worker processes.
    """

    def __init__(self, plan: BatchPlan, dataset: grain.MapDataset, cfg: PipelineConfig, plan_skipped: Mapping[str, int],
                 fingerprint: Mapping[str, Any]):
        self.plan, self._ds, self.cfg = plan, dataset, cfg
        self.plan_skipped = dict(plan_skipped)
        self.load_skipped: Counter = Counter()
        self._fp = dict(fingerprint)
        self._next = 0
        self._it = None

    @property
    def skipped(self) -> dict[str, int]:
        return dict(Counter(self.plan_skipped) + self.load_skipped)

    def _start(self):
        ds = self._ds[self._next :] if self._next else self._ds
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.cfg.read_threads, prefetch_buffer_size=2))
        if self.cfg.worker_count > 0:
            _mark_flags_parsed()
            it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.cfg.worker_count,
                                                                   per_worker_buffer_size=self.cfg.worker_buffer_size))
        return iter(it_ds)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            self._it = self._start()
        out = next(self._it)
        self._next += 1
        for reason, n in out["skipped"].items():
            self.load_skipped[reason] += n
            _log_once(reason, out["examples"][reason])
        return out["batch"]

    def __iter__(self) -> FeaturePipeline:
        return self

    def get_state(self) -> dict[str, Any]:
        """``{"next_batch", "load_skipped", "fingerprint"}``: JSON, independent of process/worker count
        (``load_skipped`` is this process's own count)."""
        return {"next_batch": self._next, "load_skipped": dict(self.load_skipped), "fingerprint": self._fp}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resumes at the exact next global batch; a state of another plan is an error."""
        if state.get("fingerprint") != self._fp:
            raise ValueError(f"pipeline state is for another dataset/plan: {state.get('fingerprint')} != {self._fp}")
        self.close()
        self._next = int(state["next_batch"])
        self.load_skipped = Counter(state.get("load_skipped", {}))

    def close(self) -> None:
        """Stops worker processes (grain shuts them down when its iterator is collected)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()
        del it

    def __enter__(self) -> FeaturePipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_feature_pipeline(
    source,
    *,
    tokenizer_dir: str | Path,
    memory: MemoryConfig,
    cfg: PipelineConfig,
    store_dir: str | Path | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
    video_root: str | Path | None = None,
    image_size: int | None = None,
    meta_cache: str | Path | None = None,
) -> FeaturePipeline:
    """Records (``RecordSource`` + ``store_dir``, or ``TfdsSource``) -> :class:`FeaturePipeline`.

    Raw-video mode (``video_root`` + ``image_size``, e.g. stage 2 where SigLIP trains): videos
    ``<video_root>/videos/<data_source>/<video>`` are probed at planning (T by the SPEC §2 raw
    rule: 1 FPS, at least ``raw_min_frames``) and decoded per sample; batches carry ``pixels``
    float32[B, U, S, S, 3] instead of ``features``.

    ``shard_options``: this process's shard (``shard_index`` of ``shard_count``); default
    ``ShardByJaxProcess``. Each process gets ``cfg.batch_size`` rows of every global batch.

    ``meta_cache``: a JSON file for the metadata pass (about 1 ms per record, mostly
    tokenization: minutes for a million records, on every start and every process). Reused
    when the record files, store index, tokenizer and options are unchanged, else rebuilt.
    """
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    builder = SampleBuilder(tokenizer_dir=tokenizer_dir, memory=memory, cfg=cfg, store_dir=store_dir,
                            video_root=video_root, image_size=image_size)
    key = _meta_cache_key(source, builder) if meta_cache is not None else None
    meta = _load_meta_cache(meta_cache, key) if key is not None else None
    if meta is None:
        meta = _metadata_pass(source, builder)
        if key is not None:
            _save_meta_cache(meta_cache, key, meta)
    skipped = Counter(r for r in meta.reasons if r is not None)
    plan = BatchPlan(meta.metas, cfg, memory, process_index=shard.shard_index, process_count=shard.shard_count)
    # The global batch, not the per-process one: a state then resumes on another process count.
    fingerprint = {**{k: v for k, v in cfg.fingerprint().items() if k != "batch_size"},
                   "global_batch": plan.global_batch, "num_samples": len(source), "num_valid": len(plan.valid),
                   "memory": dataclasses.asdict(memory)}
    if cfg.num_epochs is not None:
        len(plan)  # plan every epoch now: the drop counts are then known up front
    log.info("pipeline: %d samples, %d usable, skipped %s, %d dropped as epoch remainders",
             len(source), len(plan.valid), dict(skipped), sum(plan.dropped_per_epoch))
    ds = grain.MapDataset.source(plan).map(LoadBatch(source, builder, meta.feature_dim, meta.feature_dtype))
    return FeaturePipeline(plan, ds, cfg, skipped, fingerprint)


@dataclasses.dataclass(frozen=True)
class _Metadata:
    """The metadata pass's result: per source element its ``SampleMeta`` or (None and) the skip
    reason; the visual unit shape (P, C) and dtype of the features."""

    metas: list[SampleMeta | None]
    reasons: list[str | None]
    feature_dim: tuple[int, int] | None
    feature_dtype: str


def _metadata_pass(source, builder: SampleBuilder) -> _Metadata:
    metas: list[SampleMeta | None] = []
    reasons: list[str | None] = []
    feature_dim, feature_dtype = None, "float32"
    for i in range(len(source)):
        element = source[i]
        try:
            m = builder.meta(element)
        except DataError as e:
            metas.append(None)
            reasons.append(e.reason)
            _log_once(e.reason, str(e))
            continue
        metas.append(m)
        reasons.append(None)
        if feature_dim is None and m.num_frames:
            if builder.video_root is not None:
                feature_dim = (builder.image_size**2, 3)
            elif "features" in element:
                x = np.asarray(element["features"])
                feature_dim, feature_dtype = tuple(x.shape[1:]), x.dtype.name
            else:
                e = builder.store.meta(feature_key(builder.record(element)))
                feature_dim, feature_dtype = tuple(e["shape"][1:]), e["dtype"]
    return _Metadata(metas, reasons, feature_dim, feature_dtype)


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _meta_cache_key(source, builder: SampleBuilder) -> dict[str, Any] | None:
    """Everything the metadata pass depends on (JSON), or None if the source cannot name itself."""
    if not hasattr(source, "identity"):
        return None
    tok = Path(builder.tokenizer_dir) / "tokenizer.json"
    index = [] if builder.store_dir is None else [
        _file_identity(p) for p in sorted((Path(builder.store_dir) / "index").glob("*.jsonl"))]
    cfg = builder.cfg.fingerprint()
    key = {
        "version": 1, "source": source.identity(), "store_index": index, "video_root": builder.video_root,
        "image_size": builder.image_size, "memory": dataclasses.asdict(builder.memory),
        "tokenizer": hashlib.sha256(tok.read_bytes()).hexdigest() if tok.is_file() else builder.tokenizer_dir,
        "options": {k: cfg[k] for k in ("frame_buckets", "max_frames", "raw_fps", "raw_min_frames",
                                        "long_video_seconds", "max_text_tokens")},
        "image_token_id": builder.cfg.image_token_id,
    }
    return json.loads(json.dumps(key))  # tuples -> lists, as they come back from the file


def _load_meta_cache(path: str | Path, key: dict[str, Any]) -> _Metadata | None:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        log.info("pipeline: metadata cache %s is stale (records, store, tokenizer or options changed)", path)
        return None
    metas = [None if m is None else SampleMeta(*m) for m in data["metas"]]
    for reason in {r for r in data["reasons"] if r is not None}:
        _log_once(reason, f"(counted from the metadata cache {path}; delete it to see the records)")
    dim = data["feature_dim"]
    return _Metadata(metas, data["reasons"], None if dim is None else tuple(dim), data["feature_dtype"])


def _save_meta_cache(path: str | Path, key: dict[str, Any], meta: _Metadata) -> None:
    """Atomic write (every process may write the same content at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"key": key, "metas": [None if m is None else dataclasses.astuple(m) for m in meta.metas],
            "reasons": meta.reasons, "feature_dim": None if meta.feature_dim is None else list(meta.feature_dim),
            "feature_dtype": meta.feature_dtype}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Onto the devices
# ---------------------------------------------------------------------------------------------


class DevicePrefetch(Iterator[dict[str, jax.Array]]):
    """Puts batches on the mesh ``size`` batches ahead (transfers are asynchronous in JAX).

    Each process's arrays are its rows of the global batch:
    ``jax.make_array_from_process_local_data(sharding, local)`` builds the global array. The
    state is the wrapped iterator's state *before* the first batch not yet returned, so a
    checkpoint never skips the prefetched batches.
    """

    def __init__(self, iterator, sharding: jax.sharding.Sharding | Mapping[str, jax.sharding.Sharding], size: int = 2):
        self._it, self._sharding, self._size = iterator, sharding, size
        self._queue: list[tuple[dict[str, Any], dict[str, jax.Array]]] = []

    def _put(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        out = {}
        for k, v in batch.items():
            s = self._sharding[k] if isinstance(self._sharding, Mapping) else self._sharding
            out[k] = jax.make_array_from_process_local_data(s, v)
        return out

    def __next__(self) -> dict[str, jax.Array]:
        while len(self._queue) < self._size:
            state = self._it.get_state()
            try:
                batch = next(self._it)
            except StopIteration:
                break
            self._queue.append((state, self._put(batch)))
        if not self._queue:
            raise StopIteration
        return self._queue.pop(0)[1]

    def __iter__(self) -> DevicePrefetch:
        return self

    def get_state(self) -> dict[str, Any]:
        return self._queue[0][0] if self._queue else self._it.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._queue.clear()
        self._it.set_state(state)


__all__ = [
    "LONG", "SHORT", "UNSUPPORTED_KIND", "BatchPlan", "DevicePrefetch", "FeaturePipeline", "LoadBatch", "PipelineConfig",
    "PlannedBatch", "RecordSource", "SampleBuilder", "SampleMeta", "TfdsSource", "make_feature_pipeline",
]
