"""The demo's training set: needle videos' stored features, spliced into new samples that the
real trainer reads like any VideoMarathon data (records + a feature store).

A needle item is one training video's features float32[T, p², C] (T = seconds at 1 FPS) and its
needle's frame and colour. The vision tower sees one frame at a time, so a training video's
features with its needle frame swapped for its neighbour and another training video's needle
frame put at a random second are exactly the features of such a spliced video. One training set
thus yields (haystacks x needles x positions) samples; ``write_training_set`` draws
``n`` of them, stores their features (``data/features.py``) and writes their records, each asking
the needle question in its evaluation form (``demo/data.py``). Without splicing, a few hundred
videos let the model memorise haystack -> colour, which also lets the control "answer" without
seeing the needle (docs/demo.md).

The control's theoretical bound: without MemAug the LLM sees only the decayed tokens, i.e. the
kept frames of uniform temporal forgetting (``layout.frame_indices``). A needle on a dropped frame
leaves no trace there, so the best possible accuracy is ``kept + (1 - kept) / 4``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data.features import FeatureStore, FeatureWriter, feature_key
from hourllava_jax.data.records import IMAGE_TOKEN, Record, Turn, write_jsonl
from hourllava_jax.demo.data import answer_text, eval_item, needle, question_text
from hourllava_jax.memory.layout import video_layout


@dataclasses.dataclass(frozen=True)
class NeedleItem:
    """One video's features float32[T, p², C] and its needle (frame in [0, T), or -1 for none; colour)."""

    record: Record
    features: np.ndarray
    duration: float
    needle_frame: int
    colour: str

    def with_needle(self, donor: NeedleItem, frame: int) -> NeedleItem:
        """This haystack with its own needle frame replaced by its neighbour, and ``donor``'s needle
        frame put at ``frame``: a new (haystack, needle colour, position) combination."""
        f = self.features.copy()
        if self.needle_frame >= 0:  # -1: a haystack without a needle of its own
            f[self.needle_frame] = f[self.needle_frame - 1 if self.needle_frame > 0 else 1]
        f[frame] = donor.features[donor.needle_frame]
        return dataclasses.replace(self, features=f, needle_frame=frame, colour=donor.colour)


def concatenated(items: Sequence[NeedleItem], length: int, rng: np.random.Generator) -> NeedleItem:
    """A ``length``-second haystack: random training videos' frames back to back (each with its
    needle frame replaced by its neighbour), cut to ``length``; its needle is then spliced in.
    The tower encodes frames one by one, so these are the features of such a concatenated video."""
    parts, n = [], 0
    while n < length:
        it = items[int(rng.integers(len(items)))]
        f = it.features.copy()
        f[it.needle_frame] = f[it.needle_frame - 1 if it.needle_frame > 0 else 1]
        parts.append(f)
        n += len(f)
    first = items[int(rng.integers(len(items)))]
    rec = dataclasses.replace(first.record, extra={**first.record.extra, "duration": float(length),
                                                     "needle": dict(needle(first.record), length_seconds=length, n_frames=length)})
    return NeedleItem(rec, np.concatenate(parts)[:length], float(length), -1, first.colour)


def load_items(records: Sequence[Record], store: FeatureStore) -> list[NeedleItem]:
    """The stored features of every record, checked against its 1-FPS frame count."""
    items = []
    for r in records:
        f = store.get(feature_key(r))
        n = needle(r)
        if f.num_frames != n["n_frames"]:
            raise ValueError(f"{r.id}: {f.num_frames} feature frames but {n['n_frames']} video frames (1 FPS)")
        items.append(NeedleItem(r, np.asarray(f.features, np.float32), f.duration, int(n["frame"]), n["colour"]))
    return items


def spliced_record(k: int, item: NeedleItem) -> Record:
    """A training record for spliced sample ``k`` (its features are stored under its feature key)."""
    t = item.features.shape[0]
    depth = item.needle_frame / max(1, t - 1)
    meta = dict(needle(item.record), frame=item.needle_frame, time=item.needle_frame / float(item.record.extra.get("fps", 1)),
                colour=item.colour, depth=depth, actual_depth=depth)
    rec = Record(f"splice{k:06d}", (), f"splice{k:06d}.mp4", item.record.data_source,
                 extra={"duration": round(item.duration, 2), "needle": meta})
    q = eval_item(rec, "", item.colour)
    return dataclasses.replace(rec, conversations=(Turn("human", f"{IMAGE_TOKEN}\n{question_text(q)}"),
                                                   Turn("gpt", answer_text(q))))


def write_training_set(items: Sequence[NeedleItem], n: int, seed: int, store: str | Path, records_path: str | Path,
                       *, long: Sequence[tuple[int, float]] = (), on_sample: Callable[[], None] | None = None
                       ) -> list[Record]:
    """``n`` spliced samples: features into ``store``, records into ``records_path`` (JSON Lines).
    ``long``: (length in seconds, share of the samples) of concatenated haystacks
    (:func:`concatenated`); the rest are the training videos themselves. The draw is a function
    of ``seed`` alone."""
    records_path = Path(records_path)
    rng = np.random.default_rng(seed)
    shares = np.asarray([1.0 - sum(p for _, p in long), *(p for _, p in long)])
    if shares.min() < 0:
        raise ValueError(f"long: shares {list(long)} add up to more than 1")
    lengths = [0, *(n for n, _ in long)]
    records = []
    with FeatureWriter(store, writer="splice", shard_size=1024) as w:
        for k in range(n):
            length = lengths[int(rng.choice(len(lengths), p=shares))]
            hay = items[int(rng.integers(len(items)))] if length == 0 else concatenated(items, length, rng)
            donor = items[int(rng.integers(len(items)))]
            s = hay.with_needle(donor, int(rng.integers(hay.features.shape[0])))
            rec = spliced_record(k, s)
            w.add(feature_key(rec), s.features, s.duration)
            records.append(rec)
            if on_sample is not None:
                on_sample()
    write_jsonl(records, records_path)
    return records


def kept_frames(num_frames: int, memory: MemoryConfig) -> np.ndarray:
    """Input frames whose decayed tokens survive temporal forgetting (what the control sees)."""
    return video_layout(num_frames, memory).frame_indices


def needle_kept(num_frames: int, needle_frame: int, memory: MemoryConfig) -> bool:
    return bool(np.isin(needle_frame, kept_frames(num_frames, memory)))


def control_bound(kept: Sequence[bool], num_options: int = 4) -> float:
    """Best accuracy a model seeing only kept frames can reach: kept + (1 - kept) / options."""
    k = float(np.mean(kept))
    return k + (1 - k) / num_options
