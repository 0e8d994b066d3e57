"""The demo's data on disk: needle mp4 datasets, the small tokenizer, frozen-tower features.

Train and held-out sets are separate ``make_needle_dataset`` calls with different seeds, so no
held-out video (haystack, needle colour or placement) is ever seen in training. Features are
extracted the way the release pre-extracts (design §3): 1-FPS decode -> SigLIP preprocessing ->
vision tower (frozen) -> bilinear pool -> one ``float32[N, p², C]`` per video, stored without
pickle in a :mod:`hourllava_jax.data.features` store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.data.features import FeatureStore, FeatureWriter, feature_key
from hourllava_jax.data.preprocess import normalize
from hourllava_jax.data.records import Record, load_records, video_path
from hourllava_jax.data.synthetic import NEEDLE_COLOURS, corpus_texts, make_needle_dataset
from hourllava_jax.data.tokenizer import build_tokenizer, load_tokenizer
from hourllava_jax.data.video import decode_video
from hourllava_jax.model.memory import pool_frames
from hourllava_jax.model.siglip import SiglipVisionTower

RECORDS = "needle.jsonl"


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One ``make_needle_dataset`` call: every (length, depth, repeat) cell is one video."""

    seed: int
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    repeats: int

    @property
    def num_videos(self) -> int:
        return len(self.lengths) * len(self.depths) * self.repeats


def make_split(root: str | Path, spec: SplitSpec, *, size: int = 64) -> list[Record]:
    """Writes (or reuses, if its records file exists) the mp4 videos and records of one split."""
    root = Path(root)
    if not (root / RECORDS).is_file():
        make_needle_dataset(root, seed=spec.seed, lengths=spec.lengths, depths=spec.depths, repeats=spec.repeats,
                            size=size, records_name=RECORDS)
    return load_records(root / RECORDS)


def make_tokenizer(records: Sequence[Record], out_dir: str | Path, vocab_size: int):
    """The project's small BPE (Qwen2 special tokens at 0, 1, 2), trained on the training texts.

    The ``word`` answers (a colour alone at the start of the assistant turn, no leading space)
    are added as texts of their own, a few times each, so each becomes one token and one logit
    scores it (``dataset.option_token_ids``).
    """
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file():
        return load_tokenizer(out_dir)
    answers = [c for c in NEEDLE_COLOURS for _ in range(4)]
    return build_tokenizer(corpus_texts(records) + answers, vocab_size, out_dir)


class FrameEncoder:
    """Frozen vision tower + pooling, jitted on a fixed frame batch so it compiles once.

    ``__call__(pixels float32[N, S, S, 3]) -> float32[N, p², C]``.
    """

    def __init__(self, tower: SiglipVisionTower, pool_size: int, batch: int = 32):
        graphdef, state = nnx.split(tower)
        self.batch = batch

        @jax.jit
        def encode(state, px):
            return pool_frames(nnx.merge(graphdef, state)(px), pool_size)

        self._encode = lambda px: encode(state, px)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        pad = -n % self.batch
        px = np.concatenate([pixels, np.zeros((pad,) + pixels.shape[1:], pixels.dtype)]) if pad else pixels
        out = [np.asarray(self._encode(jnp.asarray(px[i : i + self.batch]))) for i in range(0, len(px), self.batch)]
        return np.concatenate(out)[:n].astype(np.float32)


def extract_features(records: Sequence[Record], video_root: str | Path, store: str | Path, encoder: FrameEncoder,
                     image_size: int, *, on_video: Callable[[], None] | None = None) -> FeatureStore:
    """Features of every record's video into ``store`` (resumable: stored videos are skipped)."""
    with FeatureWriter(store, writer="demo", shard_size=256) as w:
        for r in records:
            key = feature_key(r)
            if key not in w:
                v = decode_video(video_path(video_root, r), size=image_size, threads=1)
                w.add(key, encoder(normalize(v.frames)), v.duration)
            if on_video is not None:
                on_video()
    return FeatureStore(store)
