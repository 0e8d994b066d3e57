"""One training sample of the grain pipeline: record (+ visual input) -> ``data.collate.Sample``.

:class:`SampleBuilder` is the per-sample transform behind ``data/pipeline.py``. It serves five
*kinds* of sample, and a batch never mixes kinds (they differ in the batch keys the model reads):

=========  ===========================================  ==========================================
kind       visual input                                 batch key (see ``model/hour_llava.py``)
=========  ===========================================  ==========================================
``text``   none                                         -
``video``  pre-extracted pooled features at the      ``features`` float[B, U, p², C]
           design §3.2 feature indices (a store, or the
           ``videomarathon/features`` TFDS config)
``frames`` video frames (decoded from ``video_root`` by ``pixels`` float32[B, U, S, S, 3]
           the design §3.2 raw rule, or the ``videomarathon/
           frames`` TFDS config), pooled by the model
``image``  one anyres image (design §1.4) from          ``image_pixels`` float32[B, U, S, S, 3],
           ``image_root``: base + crops, unpooled       ``memory_w`` (4-tap memory map)
``images`` several images, one unpooled unit each       ``image_pixels``
=========  ===========================================  ==========================================

Each sample also has a *stream*: ``long`` for videos of at least ``long_video_seconds``,
``short`` for everything else (design §3.1: a micro-batch never mixes the two).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data import errors
from hourllava_jax.config.tokens import IMAGE_TOKEN_ID
from hourllava_jax.data.chat import tokenize_record
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import CORRUPT_FEATURES, FeatureStore, feature_key
from hourllava_jax.data.frames import feature_indices
from hourllava_jax.data.records import Record, image_paths, parse_record, video_path
from hourllava_jax.data.sources import BROKEN
from hourllava_jax.data.collate import Sample
from hourllava_jax.memory.layout import video_layout

log = logging.getLogger("hourllava_jax.data.pipeline")  # one logger name for the whole pipeline

LONG, SHORT = "long", "short"
TEXT, VIDEO, FRAMES, IMAGE, IMAGES = "text", "video", "frames", "image", "images"
IMAGE_KINDS = (IMAGE, IMAGES)
_LOGGED: set[str] = set()  # reasons already logged by this process (log once per reason)


def log_once(reason: str, message: str) -> None:
    """Logs the first bad sample of each reason; later ones are only counted by the caller."""
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.warning("skipping bad sample (%s; further ones are only counted): %s", reason, message)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Batching and sampling options.

    batch_size: rows per process (micro-batch); the global batch is ``batch_size * process_count``.
    frame_buckets: static frame counts U; a video of T frames goes to the smallest bucket >= T
      (longer ones are skipped as ``too_long`` unless ``max_frames`` caps T first).
    max_frames: optional cap on T (uniform subsample of the design §3.2 indices; not in the release).
    text_multiple / decayed_multiple: token and decayed-token lengths are rounded up to these.
    long_video_seconds: videos at least this long form the ``long`` stream (VideoMarathon's
      shortest videos are 3 minutes).
    max_text_tokens: records with more text tokens are skipped (``too_long``); None: no limit.
    image_unit_buckets: static unit counts of image samples (an anyres image has 1 + crops
      units, at most 1 + 36 with the 6 x 6 pinpoints; a multi-image sample one per image).
    image_memory_multiple: image memories (whose size follows each image's aspect) are rounded
      up to this many slots.
    """

    batch_size: int
    seed: int = 0
    num_epochs: int | None = 1  # None: repeat forever (each epoch reshuffled)
    shuffle: bool = True
    frame_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    max_frames: int | None = None
    raw_fps: float = 1.0  # raw-video mode: design §3.2 sampling rate
    raw_min_frames: int = 128  # raw-video mode: short videos get min(N, 128) frames (design §3.2)
    text_multiple: int = 256
    decayed_multiple: int = 64
    long_video_seconds: float = 180.0
    max_text_tokens: int | None = None
    image_unit_buckets: tuple[int, ...] = (2, 3, 5, 7, 10, 13, 17, 26, 37)
    image_memory_multiple: int = 512
    image_token_id: int = IMAGE_TOKEN_ID
    pad_id: int = 0
    worker_count: int = 0
    worker_buffer_size: int = 2
    read_threads: int = 1

    def fingerprint(self) -> dict[str, Any]:
        keys = ("batch_size", "seed", "num_epochs", "shuffle", "frame_buckets", "max_frames", "raw_fps",
                "raw_min_frames", "text_multiple", "decayed_multiple", "long_video_seconds", "max_text_tokens",
                "image_unit_buckets", "image_memory_multiple")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in keys)}

    def unit_bucket(self, kind: str, units: int, where: str) -> int:
        """The static unit count of a sample (0 for text). Raises DataError ``too_long``."""
        if kind == TEXT:
            return 0
        buckets = self.image_unit_buckets if kind in IMAGE_KINDS else self.frame_buckets
        for b in buckets:
            if units <= b:
                return b
        what = "units" if kind in IMAGE_KINDS else "frames"
        raise DataError(where, errors.TOO_LONG, f"{units} {what} exceed the largest bucket {buckets[-1]}")


@dataclasses.dataclass(frozen=True)
class SampleMeta:
    """What the batch plan needs of a sample: ``num_frames`` its visual units (video frames T,
    image units; 0 for text), ``text_len`` L (with placeholders), ``num_decayed`` (per
    placeholder; an upper bound for anyres images), ``num_memory`` (image kinds; videos derive
    it from the frame bucket) and ``placeholders`` (``<image>`` count)."""

    stream: str
    num_frames: int
    text_len: int
    num_decayed: int
    kind: str = VIDEO
    num_memory: int = 0
    placeholders: int = 1


class SampleBuilder:
    """Record (+ visual input) -> ``Sample``: the per-sample transform (picklable for grain
    workers; the tokenizer and the store open lazily in each process).

    ``store_dir``: feature store of the ``video`` kind. ``video_root`` + ``image_size``: raw-video
    mode, videos ``<video_root>/videos/<data_source>/<video>`` decoded into ``frames`` samples.
    ``image_root`` + ``image_size`` + ``image_tokens_per_side``: image records, files under
    ``<image_root>/images/``; without ``image_root`` they are skipped as ``unsupported_record_kind``.
    """

    def __init__(self, *, tokenizer_dir: str | Path, memory: MemoryConfig, cfg: PipelineConfig,
                 store_dir: str | Path | None = None, video_root: str | Path | None = None,
                 image_size: int | None = None, image_root: str | Path | None = None,
                 image_tokens_per_side: int | None = None):
        self.tokenizer_dir = str(tokenizer_dir)
        self.memory = memory
        self.cfg = cfg
        self.store_dir = None if store_dir is None else str(store_dir)
        self.video_root = None if video_root is None else str(video_root)
        self.image_root = None if image_root is None else str(image_root)
        self.image_size = image_size
        self.image_tokens_per_side = image_tokens_per_side
        if (self.video_root is not None or self.image_root is not None) and not image_size:
            raise ValueError("raw-video and image modes need image_size (the vision tower's input side)")
        if self.image_root is not None and not image_tokens_per_side:
            raise ValueError("image mode needs image_tokens_per_side (image_size // patch_size)")
        self._tok = None
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_tok", "_store")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _tok=None, _store=None)

    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = load_light_tokenizer(self.tokenizer_dir)
        return self._tok

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            if self.store_dir is None:
                raise ValueError("records without inline features need a feature store (store_dir)")
            self._store = FeatureStore(self.store_dir)
        return self._store

    @property
    def image_spec(self):
        from hourllava_jax.data.images import ImageSpec

        return ImageSpec(self.image_size, self.image_tokens_per_side)

    # -- parsing -------------------------------------------------------------------------------

    def record(self, element: Mapping[str, Any]) -> Record:
        text, where = element["record"], element.get("origin", "")
        if text.startswith(BROKEN):  # RecordSource's marker for a .json list that did not parse
            raise DataError(where, errors.MALFORMED_JSON, json.loads(text[len(BROKEN):]))
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(where, errors.MALFORMED_JSON, f"column {e.colno}: {e.msg}") from e
        rec = parse_record(raw, where)
        if rec.images and self.image_root is None:
            raise DataError(where, errors.UNSUPPORTED_RECORD_KIND, "image record, but the pipeline has no image_root")
        return rec

    def kind(self, rec: Record, element: Mapping[str, Any]) -> str:
        if rec.images:
            return IMAGE if len(rec.images) == 1 else IMAGES
        if rec.video is None:
            return TEXT
        return FRAMES if "frames" in element or self.video_root is not None else VIDEO

    def _tokens(self, rec: Record, t: int, duration: float):
        tok = tokenize_record(rec, self.tokenizer, seconds=duration if t else None, n_frames=t or None,
                              image_token_id=self.cfg.image_token_id)
        if self.cfg.max_text_tokens is not None and len(tok) > self.cfg.max_text_tokens:
            raise DataError(rec.origin, errors.TOO_LONG, f"{len(tok)} text tokens > {self.cfg.max_text_tokens}")
        return tok

    def _cap(self, idx: np.ndarray) -> np.ndarray:
        """The optional ``max_frames`` cap: a uniform subsample of the selected indices."""
        if self.cfg.max_frames is not None and len(idx) > self.cfg.max_frames:
            idx = idx[np.linspace(0, len(idx) - 1, self.cfg.max_frames).astype(np.int64)]
        return idx

    def frame_indices(self, n: int, duration: float) -> np.ndarray:
        """design §3.2 feature rule, then the optional ``max_frames`` cap: int64[T]."""
        return self._cap(feature_indices(n, duration))

    def _raw_selection(self, rec: Record) -> tuple[Path, np.ndarray, float]:
        """Raw-video mode: (path, design §3.2 frame indices int64[T], duration) by probing (no decoding)."""
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

    # -- planning ------------------------------------------------------------------------------

    def meta(self, element: Mapping[str, Any]) -> SampleMeta:
        """Plan-time metadata (reads no features from a store, no pixels: image sizes come from
        file headers, videos are probed). Raises DataError."""
        rec = self.record(element)
        kind = self.kind(rec, element)
        if kind == TEXT:
            return SampleMeta(SHORT, 0, len(self._tokens(rec, 0, 0.0)), 0, kind=TEXT, placeholders=0)
        if kind in IMAGE_KINDS:
            return self._image_meta(rec, kind)
        if "frames" in element:
            t, duration = len(self._cap(np.arange(len(element["frames"])))), float(element["duration"])
        elif kind == FRAMES:
            _, idx, duration = self._raw_selection(rec)
            t = len(idx)
        else:
            n, duration = self._video_length(rec, element)
            t = len(self.frame_indices(n, duration))
        if t == 0:
            raise DataError(rec.origin, errors.NO_FRAMES, "the video has no frames to sample")
        self.cfg.unit_bucket(kind, t, rec.origin)
        stream = LONG if duration >= self.cfg.long_video_seconds else SHORT
        return SampleMeta(stream, t, len(self._tokens(rec, t, duration)), _num_decayed(t, self.memory), kind=kind)

    def _image_meta(self, rec: Record, kind: str) -> SampleMeta:
        from hourllava_jax.data.images import image_size, multi_image_geometry, single_image_geometry

        paths = image_paths(self.image_root, rec)
        if kind == IMAGE:
            geo = single_image_geometry(image_size(paths[0]), self.image_spec, self.memory)
        else:
            for p in paths:
                if not p.is_file():
                    raise DataError(p, errors.MISSING_FILE, "image file does not exist")
            geo = multi_image_geometry(len(paths), self.image_spec, self.memory)
        self.cfg.unit_bucket(kind, geo.units, rec.origin)
        return SampleMeta(SHORT, geo.units, len(self._tokens(rec, 0, 0.0)), geo.max_decayed, kind=kind,
                          num_memory=geo.num_memory, placeholders=geo.placeholders)

    # -- loading -------------------------------------------------------------------------------

    def build(self, element: Mapping[str, Any], *, epoch: int, source_index: int) -> Sample:
        """The training sample; its visual input is carried in ``Sample.features``: pooled
        features float[T, p², C] (``video``) or normalised pixels float32[U, S·S, 3] (the other
        kinds; ``LoadBatch`` reshapes them to [B, U, S, S, 3]). Random forgetting draws from
        ``fold_in(fold_in(key(seed), epoch), source_index)``, independent of process and worker
        counts. Raises DataError."""
        rec = self.record(element)
        kind = self.kind(rec, element)
        key = self._key(epoch, source_index)
        if kind == TEXT:
            tok = self._tokens(rec, 0, 0.0)
            return Sample(tok.input_ids, tok.labels)
        if kind in IMAGE_KINDS:
            return self._build_image(rec, kind, key)
        if "frames" in element:
            return self._build_frames(rec, element, key)
        if kind == FRAMES:
            return self._build_raw(rec, key)
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
        layout = video_layout(len(idx), self.memory, key=key)
        # Stored dtype kept (bf16 stores give bf16 batches: half the bytes to move; the model
        # casts features to its compute dtype before the projector).
        return Sample(tok.input_ids, tok.labels, np.asarray(feats[idx]), layout)

    def _key(self, epoch: int, source_index: int) -> jax.Array | None:
        if not _needs_key(self.memory):  # jax ops cost a compile per worker process: only when used
            return None
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.cfg.seed), epoch), source_index)

    def _pixels(self, frames: np.ndarray) -> np.ndarray:
        """uint8[T, H, W, 3] at any size -> float32[T, S·S, 3] (PIL bicubic when H, W != S)."""
        from hourllava_jax.data.preprocess import preprocess_frames

        s = self.image_size
        return preprocess_frames(frames, s).reshape(len(frames), s * s, 3)

    def _build_raw(self, rec: Record, key) -> Sample:
        from hourllava_jax.data.video import decode_video

        cfg = self.cfg
        video = decode_video(video_path(self.video_root, rec), fps=cfg.raw_fps, min_frames=cfg.raw_min_frames,
                             max_frames=cfg.max_frames, size=self.image_size)
        t = len(video.indices)
        tok = self._tokens(rec, t, video.duration)
        return Sample(tok.input_ids, tok.labels, self._pixels(video.frames), video_layout(t, self.memory, key=key))

    def _build_frames(self, rec: Record, element: Mapping[str, Any], key) -> Sample:
        """Stored frames (``videomarathon/frames``): already the design §3.2 selection; the
        ``max_frames`` cap, then resized to S if the dataset was built at another size."""
        frames = np.asarray(element["frames"])
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise DataError(rec.origin, errors.CORRUPT_VIDEO, f"stored frames {frames.dtype}{list(frames.shape)} are not uint8[T>0, S, S, 3]")
        frames = frames[self._cap(np.arange(len(frames)))]
        t, duration = len(frames), float(element["duration"])
        tok = self._tokens(rec, t, duration)
        return Sample(tok.input_ids, tok.labels, self._pixels(frames), video_layout(t, self.memory, key=key))

    def _build_image(self, rec: Record, kind: str, key) -> Sample:
        from hourllava_jax.data.images import load_image, multi_image_units, single_image_units
        from hourllava_jax.data.preprocess import normalize

        images = [load_image(p) for p in image_paths(self.image_root, rec)]
        build = single_image_units if kind == IMAGE else multi_image_units
        units, layout = build(images[0] if kind == IMAGE else images, self.image_spec, self.memory, key=key)
        tok = self._tokens(rec, 0, 0.0)
        s = self.image_size
        return Sample(tok.input_ids, tok.labels, normalize(units).reshape(len(units), s * s, 3), layout)


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


def load_light_tokenizer(tokenizer_dir: str | Path):
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
    """True when layouts draw random numbers (random spatial or temporal forgetting)."""
    return memory.spatial_mode == "random" or (memory.temporal_forgetting and memory.temporal_mode == "random")


@functools.lru_cache(maxsize=4096)
def _num_decayed(t: int, memory: MemoryConfig) -> int:
    """Decayed tokens of a T-frame video (the plan's N bucket); the count never depends on the draw."""
    key = jax.random.key(0) if _needs_key(memory) else None
    return int(len(video_layout(t, memory, key=key).decayed[0]))


__all__ = [
    "FRAMES", "IMAGE", "IMAGES", "IMAGE_KINDS", "LONG", "SHORT", "TEXT", "VIDEO", "PipelineConfig", "SampleBuilder",
    "SampleMeta", "load_light_tokenizer", "log_once",
]
