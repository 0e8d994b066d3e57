"""One model input sample and the collation of samples into the model's padded, static-shape batch.

The batch keys are documented in :mod:`hourllava_jax.model.hour_llava`. Lengths are rounded up
to multiples (``text_multiple`` etc.) so that batches of similar size share one compiled
program; the data pipeline picks the multiples (buckets).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hourllava_jax.config.tokens import IGNORE_INDEX, IMAGE_TOKEN_ID
from hourllava_jax.memory.layout import VisualLayout, collate_layouts


@dataclasses.dataclass(frozen=True)
class Sample:
    """input_ids/labels int32[L]; features float[U, P, C] (pre-projector visual units: video
    frames, or an image's [base, crops...] / a multi-image sample's images) or None for
    text-only; layout: the sample's :class:`VisualLayout` (None for text-only)."""

    input_ids: np.ndarray
    labels: np.ndarray | None = None
    features: np.ndarray | None = None
    layout: VisualLayout | None = None


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def collate(samples: list[Sample], *, pad_id: int = 0, text_multiple: int = 64, unit_multiple: int = 16,
            memory_multiple: int = 128, decayed_multiple: int = 64, image_token_id: int = IMAGE_TOKEN_ID,
            max_placeholders: int | None = None) -> dict[str, np.ndarray]:
    """Pads samples into the batch dict of :class:`~hourllava_jax.model.hour_llava.HourLlava`.

    ``max_placeholders``: K of ``decayed`` int32[B, K, N] (default: the batch's largest count;
    a data pipeline fixes it so multi-image batches keep one shape).

    Raises ValueError when a sample's ``<image>`` count differs from its layout's placeholder
    count (the release would silently misalign them).
    """
    b = len(samples)
    length = _round_up(max(len(s.input_ids) for s in samples), text_multiple)
    ids = np.full((b, length), pad_id, np.int32)
    mask = np.zeros((b, length), bool)
    labels = np.full((b, length), IGNORE_INDEX, np.int32)
    with_labels = any(s.labels is not None for s in samples)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n] = s.input_ids
        mask[i, :n] = True
        if s.labels is not None:
            if len(s.labels) != n:
                raise ValueError(f"sample {i}: {len(s.labels)} labels for {n} tokens")
            labels[i, :n] = s.labels
        n_ph = int((np.asarray(s.input_ids) == image_token_id).sum())
        n_vis = 0 if s.layout is None else len(s.layout.decayed)
        if n_ph != n_vis:
            raise ValueError(f"sample {i}: {n_ph} <image> placeholder(s) but {n_vis} visual input(s)")
    batch: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
    if with_labels:
        batch["labels"] = labels
    visual = [s for s in samples if s.features is not None]
    if not visual:
        return batch
    feats = _pack_features(samples, unit_multiple)
    lay = collate_layouts([s.layout for s in samples], memory_multiple=memory_multiple, decayed_multiple=decayed_multiple,
                          max_placeholders=max_placeholders)
    batch.update(features=feats, memory_src=lay.memory_src, memory_pos=lay.memory_pos, decayed=lay.decayed)
    if lay.memory_w is not None:
        batch["memory_w"] = lay.memory_w
    return batch


def _pack_features(samples: list[Sample], unit_multiple: int) -> np.ndarray:
    """float[B, U, P, C] with P the largest units' token count. The model only ever sees a
    sample's tokens flattened (``memory_src`` indexes ``unit * P_i + token``), so samples with
    smaller units (a video's p² pooled tokens next to an image's g² crops) are packed as their
    flat token list cut into units of P; with one P for all samples this is plain padding."""
    visual = [s.features for s in samples if s.features is not None]
    c = visual[0].shape[-1]
    for i, s in enumerate(samples):
        if s.features is not None and (s.features.ndim != 3 or s.features.shape[-1] != c):
            raise ValueError(f"sample {i}: features {s.features.shape} do not match [U, P, {c}]")
    p = max(f.shape[1] for f in visual)
    u = _round_up(max(-(-(f.shape[0] * f.shape[1]) // p) for f in visual), unit_multiple)
    feats = np.zeros((len(samples), u * p, c), visual[0].dtype)
    for i, s in enumerate(samples):
        if s.features is not None:
            feats[i, : s.features.shape[0] * s.features.shape[1]] = np.asarray(s.features).reshape(-1, c)
    return feats.reshape(len(samples), u, p, c)
