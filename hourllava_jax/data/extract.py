"""Pre-extraction: pooled SigLIP features of a video tree into a feature store (design §3.3 "Pre-extraction").

    enc = build_encoder("ckpt/")                       # or FrameEncoder(tower, pool_size=p)
    summary = extract_features("DATA/videos", "DATA/feature_store", enc)

Per video (key ``<data_source>/<video without extension>``, the path under the videos directory;
``data/features.feature_key`` of its records): the release's frames (``frames.extraction_indices``:
``k = max(int(N / fps), 128)`` at ``linspace(0, N-1, k)``, all N below 128), decoded by PyAV and
resized with PIL bicubic to the tower's input size (design §1.1), the frame encoder (SigLIP, then
bilinear resize of each frame's grid to p x p, design §1.2), stored as float[k, p², C] with the
video's duration (``data/features.py``). At load time the data pipeline takes
``T = min(k, int(duration))`` of them at ``linspace`` (``frames.feature_indices``).

Which videos: every video file under the directory, or the videos of ``records`` (each once).
Split over processes: the sorted list, process ``i`` of ``P`` taking every ``P``-th from ``i``,
each process writing as its own writer. Resumable: videos already in the store (any writer)
are skipped, and so are recorded failures unless ``retry_failed``. A bad video is recorded
under ``failed/`` with its reason and skipped. The command line is ``hourllava-extract``
(``hourllava_jax/cli/extract.py``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
from tqdm import tqdm

from hourllava_jax.data.encoder import FrameEncoder
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import FeatureWriter, feature_key
from hourllava_jax.data.frames import DEFAULT_MIN_FRAMES, extraction_indices
from hourllava_jax.data.records import Record, video_file
from hourllava_jax.data.video import DEFAULT_TIMEOUT_S, decode_video, probe_video

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
# Outcomes passed to ``on_video`` besides a DataError reason (errors.py).
EXTRACTED, SKIPPED_DONE, SKIPPED_FAILED = "extracted", "skipped_done", "skipped_failed"
VideoCallback = Callable[[str, str], None]


def list_videos(root: str | Path) -> list[tuple[str, Path]]:
    """(key, path) of every video file under ``root``, sorted by key (the same on every process)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such video directory")
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p)
                  for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def record_videos(root: str | Path, records: Iterable[Record]) -> list[tuple[str, Path]]:
    """(key, path) of the videos of ``records`` under ``root`` (``<root>/<data_source>/<video>``),
    each video once, sorted by key; records without a video are left out."""
    out = {feature_key(r): video_file(root, r) for r in records if r.video is not None}
    return sorted(out.items())


def build_encoder(checkpoint: str | Path | None, *, tiny: bool = False, seed: int = 0, pool_size: int | None = None,
                  chunk: int = 64, devices: Sequence[jax.Device] | None = None) -> FrameEncoder:
    """The frame encoder of a SigLIP or Hour-LLaVA checkpoint directory (float32, as the release
    extracts; ``FrameEncoder.from_checkpoint``), or with ``tiny`` the random-init tower of
    ``configs/model/tiny.yaml`` (seed ``seed``; tests and smoke runs). ``pool_size`` overrides
    the checkpoint's (default: its Hour-LLaVA config's, else 8)."""
    if tiny:
        from flax import nnx

        from hourllava_jax.config import load_model_config
        from hourllava_jax.model.siglip import SiglipVisionTower

        cfg = load_model_config("tiny")
        tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(seed))
        return FrameEncoder(tower, pool_size=pool_size or cfg.memory.pool_size, chunk=chunk, devices=devices)
    if checkpoint is None:
        raise ValueError("build_encoder: give a checkpoint directory or tiny=True")
    return FrameEncoder.from_checkpoint(checkpoint, pool_size=pool_size, chunk=chunk, devices=devices)


def extract_features(video_root: str | Path, store: str | Path, encoder: FrameEncoder, *,
                     records: Iterable[Record] | None = None, min_frames: int = DEFAULT_MIN_FRAMES,
                     on_video: VideoCallback | None = None, process_index: int = 0, process_count: int = 1,
                     writer: str | None = None, dtype: str = "float32", shard_size: int = 16,
                     retry_failed: bool = False, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                     decode_threads: int = 0, progress: bool = False) -> dict[str, int]:
    """Extracts this process's share of the videos into ``store`` (module docstring).

    Args:
      video_root: the videos directory (``DATA/videos``: ``<data_source>/<file>``).
      store: the feature store directory (created).
      encoder: a :class:`FrameEncoder` (its ``image_size`` is the decode size).
      records: extract only these records' videos (default: every video file under the root).
      min_frames: the release's 128 (smaller for tiny tests).
      on_video: ``on_video(key, outcome)`` after each video of this process's share, outcome
        ``extracted`` / ``skipped_done`` / ``skipped_failed`` or the DataError reason.
      process_index / process_count: this process's share (every ``count``-th video).
      writer: the store writer name (default ``p<process_index:05d>``), unique per process.
      dtype / shard_size: stored dtype and videos per shard (``FeatureWriter``).
      retry_failed: retry videos recorded as failed by an earlier run.
      timeout_s / decode_threads: per-video decode budget and decoder threads (0: one per core).
      progress: a tqdm bar.
    Returns counts by outcome, e.g. ``{"extracted": 3, "skipped_done": 1, "corrupt_video": 1}``.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    videos = list_videos(video_root) if records is None else record_videos(video_root, records)
    videos = videos[process_index::process_count]
    counts: Counter = Counter()

    def done(key: str, outcome: str) -> None:
        counts[outcome] += 1
        if on_video is not None:
            on_video(key, outcome)

    with FeatureWriter(store, writer=writer or f"p{process_index:05d}", shard_size=shard_size, dtype=dtype) as w:
        todo = []
        for key, path in videos:
            if key in w:
                done(key, SKIPPED_DONE)
            elif key in w.failed and not retry_failed:
                done(key, SKIPPED_FAILED)
            else:
                todo.append((key, path))
        for key, path in tqdm(todo, desc=f"extract p{process_index}", disable=not progress, unit="video"):
            try:
                index = probe_video(path, timeout_s=timeout_s)
                idx = extraction_indices(index.num_frames, index.native_fps, min_frames)
                video = decode_video(path, indices=idx, size=encoder.image_size, timeout_s=timeout_s,
                                     threads=decode_threads)
            except DataError as e:
                if counts[e.reason] == 0:
                    log.warning("bad video skipped (%s; further ones are counted and listed in failed/): %s", e.reason, e)
                w.add_failed(key, e.reason, e.detail)
                done(key, e.reason)
                continue
            # The duration is the stream's (first frame to the end of the last: N / fps on a
            # constant-rate file, the release's round(N / fps, 2)), not the stored frame count.
            w.add(key, encoder(video.frames), index.duration)
            done(key, EXTRACTED)
    return dict(counts)


__all__ = ["EXTRACTED", "SKIPPED_DONE", "SKIPPED_FAILED", "VIDEO_SUFFIXES", "build_encoder", "extract_features",
           "list_videos", "record_videos"]
