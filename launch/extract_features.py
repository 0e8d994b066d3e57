"""Pre-extracts pooled SigLIP features of a video tree into a feature store (design §3.3 "Pre-extraction").

    python launch/extract_features.py --videos DATA/videos --out DATA/feature_store \
        --model CKPT_DIR [--min-frames 128] [--batch-frames 64] [--dtype float32] \
        [--process-index I --process-count P]
    python launch/extract_features.py --videos DATA/videos --out STORE --tiny   # random tiny tower

Per video (key = path under --videos without extension, i.e. ``<data_source>/<stem>``):
frames at the release's indices (``extraction_indices``: ``max(int(duration), 128)`` uniform
indices plus the last frame), decoded by PyAV and resized with PIL bicubic to the tower's input
size (design §1.1), SigLIP (fp32), bilinear resize of the grid to p x p per frame (design §1.2),
stored as float[N, p², C] with the duration (``data/features.py``).

Sharding: videos are sorted and process ``i`` takes every ``P``-th one from ``i``
(``--process-index/--process-count``, default ``jax.process_index()/process_count()`` or the
SLURM task id/count); each
process writes as its own writer. Within a process, frames are batched over the local devices
with a sharded ``jax.jit``. Resumable: videos already in the store (any writer) are skipped, and
so are recorded failures unless ``--retry-failed``. Bad videos are recorded under ``failed/``
with their reason and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hourllava_jax.data.errors import DataError  # noqa: E402
from hourllava_jax.data.features import FeatureWriter  # noqa: E402
from hourllava_jax.data.preprocess import normalize  # noqa: E402
from hourllava_jax.data.video import DEFAULT_TIMEOUT_S, decode_video, probe_video  # noqa: E402
from hourllava_jax.model.memory import pool_frames  # noqa: E402

log = logging.getLogger("extract_features")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
RELEASE_MIN_FRAMES = 128


def extraction_indices(num_frames: int, duration: float, min_frames: int = RELEASE_MIN_FRAMES) -> np.ndarray:
    """The release's pre-extraction frames (design §3): ``k = max(int(duration), min_frames)``
    uniform indices ``floor(i * N / k)`` for i < k, plus the last frame N-1 -> int64[k + 1], always
    (so N stored = k + 1 is a function of the duration alone). With N < k + 1 frames repeat.

    Interpretation: "uniform indices plus the last frame" read as start-aligned uniform
    indices (which stop short of the end) with the last frame appended; ``linspace`` already
    contains the last frame and would make the "plus" a duplicate.
    """
    if num_frames < 1:
        return np.zeros((0,), np.int64)
    k = max(int(duration), min_frames)
    idx = (np.arange(k, dtype=np.float64) * (num_frames / k)).astype(np.int64)
    return np.append(idx, num_frames - 1)


def list_videos(root: str | Path) -> list[tuple[str, Path]]:
    """(key, path) of every video file under ``root``, sorted by key (the same on every process)."""
    root = Path(root)
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p)
                  for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


class FrameEncoder:
    """uint8[K, S, S, 3] frames -> float32[K, p², C]: SigLIP then bilinear pooling, in batches of
    ``batch_frames`` sharded over ``devices`` (one compiled shape: the last batch is padded)."""

    def __init__(self, tower: nnx.Module, *, pool_size: int, image_size: int, batch_frames: int = 64,
                 devices: list | None = None):
        devices = devices or jax.local_devices()
        if batch_frames % len(devices):
            batch_frames = -(-batch_frames // len(devices)) * len(devices)  # a multiple of the device count
        self.pool_size, self.image_size, self.batch_frames = pool_size, image_size, batch_frames
        mesh = jax.make_mesh((len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,))
        self._data = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        graphdef, state = nnx.split(tower)
        self._state = jax.device_put(state, replicated)

        def encode(state, pixels):  # float32[B, S, S, 3] -> float32[B, p², C]
            return pool_frames(nnx.merge(graphdef, state)(pixels), pool_size).astype(jnp.float32)

        self._fn = jax.jit(encode, in_shardings=(replicated, self._data), out_shardings=self._data)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(frames), self.batch_frames):
            chunk = normalize(frames[start : start + self.batch_frames])
            n = len(chunk)
            if n < self.batch_frames:
                chunk = np.concatenate([chunk, np.zeros((self.batch_frames - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(self._fn(self._state, jax.device_put(chunk, self._data)))[:n])
        return np.concatenate(out)


def build_encoder(model: str | None, *, tiny: bool = False, seed: int = 0, pool_size: int | None = None,
                  batch_frames: int = 64) -> FrameEncoder:
    """A SigLIP checkpoint directory or an Hour-LLaVA one (``load_pretrained``), or ``tiny``: the
    random-init tower of ``configs/model/tiny.yaml``. Pool size: the Hour-LLaVA config's, else
    ``pool_size`` (default 8, design §1.2)."""
    if tiny:
        from hourllava_jax.config import load_model_config
        from hourllava_jax.model.siglip import SiglipVisionTower

        cfg = load_model_config("tiny")
        tower = SiglipVisionTower(cfg.vision, rngs=nnx.Rngs(seed))
        return FrameEncoder(tower, pool_size=pool_size or cfg.memory.pool_size, image_size=cfg.vision.image_size,
                            batch_frames=batch_frames)
    if model is None:
        raise ValueError("give --model DIR or --tiny")
    from hourllava_jax.convert import load_pretrained

    cfg, loaded = load_pretrained(model, jnp.float32)  # the release extracts in fp32
    tower = getattr(loaded, "vision_tower", loaded)
    memory = getattr(cfg, "memory", None)
    vision = getattr(cfg, "vision", cfg)
    return FrameEncoder(tower, pool_size=pool_size or (memory.pool_size if memory else 8),
                        image_size=vision.image_size, batch_frames=batch_frames)


def extract_features(video_root: str | Path, store: str | Path, encoder: FrameEncoder, *,
                     min_frames: int = RELEASE_MIN_FRAMES, process_index: int = 0, process_count: int = 1,
                     dtype: str = "float32", shard_size: int = 16, retry_failed: bool = False,
                     timeout_s: float | None = DEFAULT_TIMEOUT_S, progress: bool = True) -> dict[str, int]:
    """Extracts this process's share of ``video_root`` into ``store``; returns counts
    {"extracted", "skipped_done", "skipped_failed", <DataError reasons>}."""
    videos = list_videos(video_root)[process_index::process_count]
    counts: Counter = Counter()
    with FeatureWriter(store, writer=f"p{process_index:05d}", shard_size=shard_size, dtype=dtype) as writer:
        todo = []
        for key, path in videos:
            if key in writer:
                counts["skipped_done"] += 1
            elif key in writer.failed and not retry_failed:
                counts["skipped_failed"] += 1
            else:
                todo.append((key, path))
        for key, path in tqdm(todo, desc=f"extract p{process_index}", disable=not progress, unit="video"):
            try:
                index = probe_video(path, timeout_s=timeout_s)
                idx = extraction_indices(index.num_frames, index.duration, min_frames)
                video = decode_video(path, indices=idx, size=encoder.image_size, timeout_s=timeout_s)
            except DataError as e:
                if counts[e.reason] == 0:
                    log.warning("bad video skipped (%s; further ones are counted and listed in failed/): %s", e.reason, e)
                counts[e.reason] += 1
                writer.add_failed(key, e.reason, e.detail)
                continue
            writer.add(key, encoder(video.frames), index.duration)
            counts["extracted"] += 1
    return dict(counts)


def default_process() -> tuple[int, int]:
    """(index, count): jax's, or SLURM's task id/count when jax.distributed is not initialised
    (extraction needs no collectives, so each task can run it independently)."""
    if jax.process_count() == 1 and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    return jax.process_index(), jax.process_count()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, type=Path, help="video tree (DATA/videos: <data_source>/<file>)")
    p.add_argument("--out", required=True, type=Path, help="feature store directory")
    p.add_argument("--model", default=None, help="SigLIP or Hour-LLaVA checkpoint directory (HF layout)")
    p.add_argument("--tiny", action="store_true", help="random-init tiny tower (tests, demo)")
    p.add_argument("--seed", type=int, default=0, help="init seed of --tiny")
    p.add_argument("--pool-size", type=int, default=None, help="p of the p x p pooled grid (default: config / 8)")
    p.add_argument("--min-frames", type=int, default=RELEASE_MIN_FRAMES)
    p.add_argument("--batch-frames", type=int, default=64, help="frames per device batch (rounded to the device count)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="stored dtype")
    p.add_argument("--shard-size", type=int, default=16, help="videos per ArrayRecord shard")
    p.add_argument("--process-index", type=int, default=None)
    p.add_argument("--process-count", type=int, default=None)
    p.add_argument("--retry-failed", action="store_true", help="retry videos recorded as failed")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="decode budget per video, seconds")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dpi, dpc = default_process()
    pi = dpi if args.process_index is None else args.process_index
    pc = dpc if args.process_count is None else args.process_count
    if not 0 <= pi < pc:
        raise SystemExit(f"--process-index {pi} not in [0, {pc})")
    t0 = time.perf_counter()
    encoder = build_encoder(args.model, tiny=args.tiny, seed=args.seed, pool_size=args.pool_size,
                            batch_frames=args.batch_frames)
    counts = extract_features(args.videos, args.out, encoder, min_frames=args.min_frames, process_index=pi,
                              process_count=pc, dtype=args.dtype, shard_size=args.shard_size,
                              retry_failed=args.retry_failed, timeout_s=args.timeout, progress=not args.no_progress)
    summary = {"process": f"{pi}/{pc}", "counts": counts, "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
