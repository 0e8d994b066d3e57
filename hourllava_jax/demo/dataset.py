"""Needle records + stored features -> model :class:`~hourllava_jax.model.inputs.Sample`s.

A needle item is one video's features float32[T, p², C] (T = seconds at 1 FPS), its question
and its answer, tokenized exactly as training data (design §4: time instruction, ChatML, labels).
Two answer formats:

* ``letter``: the record as written by ``make_needle_dataset`` (options A-D in a random order,
  answer a letter): the LLM must also match the seen colour to its option line.
* ``word``: the same question without options, answered with the colour word itself (one of
  four single tokens), which isolates the memory problem from the option-matching one.

Training augmentation (``with_needle``): the vision tower sees one frame at a time, so a
training video's features with its needle frame swapped out and another training video's
needle frame put at a random second are exactly the features of such a spliced video. One
training set thus yields (haystacks x needles x positions) samples. Held-out items are used as
recorded. (``rolled``, a cyclic shift of the frames, is the lighter alternative.)

The control's theoretical bound: without MemAug the LLM sees only the decayed tokens, i.e. the
kept frames of uniform temporal forgetting (``layout.frame_indices``). A needle on a dropped frame
leaves no trace there, so the best possible accuracy is ``kept + (1 - kept) / 4``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.data.chat import tokenize_record
from hourllava_jax.data.features import FeatureStore, feature_key
from hourllava_jax.data.records import Record, Turn
from hourllava_jax.data.synthetic import LETTERS, NEEDLE_COLOURS, NEEDLE_QUESTION
from hourllava_jax.model.inputs import Sample, collate
from hourllava_jax.model.layout import video_layout

ANSWER_FORMATS = ("letter", "word")


@dataclasses.dataclass(frozen=True)
class NeedleItem:
    """One video and its question. features float32[T, p², C]; needle_frame in [0, T)."""

    record: Record
    features: np.ndarray
    duration: float
    needle_frame: int
    colour: str
    depth: float
    length: int

    def with_needle(self, donor: NeedleItem, frame: int) -> NeedleItem:
        """This haystack with its own needle frame replaced by its neighbour, and ``donor``'s needle
        frame put at ``frame``: a new (haystack, needle colour, position) combination."""
        t = self.features.shape[0]
        f = self.features.copy()
        f[self.needle_frame] = f[self.needle_frame - 1 if self.needle_frame > 0 else 1]
        f[frame] = donor.features[donor.needle_frame]
        return dataclasses.replace(self, features=f, needle_frame=frame, colour=donor.colour, depth=frame / max(1, t - 1))

    def rolled(self, shift: int) -> NeedleItem:
        """The same haystack with the frames shifted cyclically by ``shift`` (needle moves too)."""
        t = self.features.shape[0]
        frame = (self.needle_frame + shift) % t
        return dataclasses.replace(self, features=np.roll(self.features, shift, axis=0), needle_frame=frame,
                                   depth=frame / max(1, t - 1))


@dataclasses.dataclass(frozen=True)
class FeatureNorm:
    """Per-channel standardisation of the frozen tower's features, float32[C] each.

    The demo's tower is randomly initialised: its outputs share a large common offset (mean |x|
    ~1.2 against a spread of ~1.3 per channel), which slowed the first layers' learning ~2x in
    prototyping. Standardising with training-set statistics is an affine map in front of the
    projector's first Linear, i.e. only a data-dependent re-initialisation of that layer.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, items: Sequence[NeedleItem]) -> FeatureNorm:
        flat = np.concatenate([it.features.reshape(-1, it.features.shape[-1]) for it in items])
        return cls(flat.mean(0), np.maximum(flat.std(0), 1e-6))

    def __call__(self, item: NeedleItem) -> NeedleItem:
        return dataclasses.replace(item, features=((item.features - self.mean) / self.std).astype(np.float32))


def load_items(records: Sequence[Record], store: FeatureStore) -> list[NeedleItem]:
    """The stored features of every record, checked against its 1-FPS frame count."""
    items = []
    for r in records:
        f = store.get(feature_key(r))
        n = r.extra["needle"]
        if f.num_frames != n["n_frames"]:
            raise ValueError(f"{r.id}: {f.num_frames} feature frames but {n['n_frames']} video frames (1 FPS)")
        items.append(NeedleItem(r, np.asarray(f.features, np.float32), f.duration, int(n["frame"]), n["colour"],
                                float(n["depth"]), int(n["length_seconds"])))
    return items


def conversation(item: NeedleItem, answer_format: str) -> Record:
    """The record in the requested answer format (module docstring), answering ``item.colour``
    (which a mixed training item may have changed)."""
    if answer_format == "letter":
        opts, right = answer_options(item, answer_format)
        turns = (item.record.conversations[0], Turn("gpt", opts[right]))
    elif answer_format == "word":
        turns = (Turn("human", f"<image>\n{NEEDLE_QUESTION}"), Turn("gpt", item.colour))
    else:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    return dataclasses.replace(item.record, conversations=turns)


def answer_options(item: NeedleItem, answer_format: str) -> tuple[list[str], int]:
    """(option strings in the order scored, index of the right one)."""
    if answer_format == "word":
        return list(NEEDLE_COLOURS), NEEDLE_COLOURS.index(item.colour)
    opts = item.record.extra["qa"][0]["options"]
    return list(LETTERS[: len(opts)]), opts.index(item.colour)


def option_token_ids(tokenizer, options: Sequence[str]) -> np.ndarray:
    """int32[len(options)]: each option must be one token, so one logit scores it exactly."""
    ids = [tokenizer.encode(o, add_special_tokens=False) for o in options]
    bad = [o for o, i in zip(options, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"options {bad} are not single tokens of this tokenizer")
    return np.asarray([i[0] for i in ids], np.int32)


def to_sample(item: NeedleItem, tokenizer, cfg: HourLlavaConfig, answer_format: str) -> Sample:
    """Tokenized conversation + features + the video's memory layout (uniform forgetting)."""
    t = item.features.shape[0]
    tok = tokenize_record(conversation(item, answer_format), tokenizer, seconds=item.duration, n_frames=t,
                          image_token_id=cfg.image_token_id)
    return Sample(tok.input_ids, tok.labels, item.features, video_layout(t, cfg.memory))


def kept_frames(num_frames: int, cfg: HourLlavaConfig) -> np.ndarray:
    """Input frames whose decayed tokens survive temporal forgetting (what the control sees)."""
    return video_layout(num_frames, cfg.memory).frame_indices


def needle_kept(item: NeedleItem, cfg: HourLlavaConfig) -> bool:
    return bool(np.isin(item.needle_frame, kept_frames(item.features.shape[0], cfg)))


def control_bound(items: Sequence[NeedleItem], cfg: HourLlavaConfig, num_options: int = 4) -> float:
    """Best accuracy a model seeing only kept frames can reach: kept + (1 - kept) / options."""
    kept = np.mean([needle_kept(it, cfg) for it in items])
    return float(kept + (1 - kept) / num_options)


def collate_kwargs(items: Sequence[NeedleItem], tokenizer, cfg: HourLlavaConfig, answer_format: str,
                   text_multiple: int = 16) -> dict[int, dict]:
    """Per frame count T: the ``collate`` padding that gives every batch of T-frame videos the
    same shapes, so training compiles one step per length bucket, and short videos do not pay
    for the longest one's memory. Text is padded to the longest prompt of all items."""
    n_text = max(len(to_sample(it, tokenizer, cfg, answer_format).input_ids) for it in items)
    text = -(-n_text // text_multiple) * text_multiple
    out = {}
    for t in sorted({it.features.shape[0] for it in items}):
        lay = video_layout(t, cfg.memory)
        out[t] = dict(text_multiple=text, unit_multiple=t, memory_multiple=lay.num_memory,
                      decayed_multiple=len(lay.decayed[0]), image_token_id=cfg.image_token_id)
    return out


def by_length(items: Sequence[NeedleItem]) -> dict[int, list[NeedleItem]]:
    groups: dict[int, list[NeedleItem]] = {}
    for it in items:
        groups.setdefault(it.features.shape[0], []).append(it)
    return dict(sorted(groups.items()))


def training_batches(items: Sequence[NeedleItem], tokenizer, cfg: HourLlavaConfig, answer_format: str,
                     batch_size: int, collate_kw: dict[int, dict], seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches: a length bucket drawn in proportion to its items, then random haystacks
    of it, each given the needle frame of a random training video at a random second.

    Mixing matters: with a few hundred videos, a fixed (haystack -> colour) pairing is
    memorised (prototype: 32 videos, train loss 0.007, held-out accuracy below chance on
    dropped needles), which also lets the control "answer" without seeing the needle."""
    rng = np.random.default_rng(seed)
    groups = by_length(items)
    lengths = list(groups)
    p = np.asarray([len(groups[t]) for t in lengths], np.float64)
    while True:
        t = lengths[int(rng.choice(len(lengths), p=p / p.sum()))]
        group = groups[t]
        picks = rng.integers(len(group), size=batch_size)
        donors = rng.integers(len(items), size=batch_size)
        samples = [to_sample(group[i].with_needle(items[d], int(rng.integers(t))), tokenizer, cfg, answer_format)
                   for i, d in zip(picks, donors)]
        yield collate(samples, **collate_kw[t])
