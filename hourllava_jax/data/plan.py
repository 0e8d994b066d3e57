"""The global batch plan: which samples form each global batch, and its static shapes.

A pure function of the seed, the epoch and the samples' metadata (``data/samples.py``), so every
process computes the same plan and a resumed run continues it exactly. Samples are grouped by
(stream, kind, unit bucket): a batch never mixes long and short videos (design §3) nor kinds with
different model inputs, and all its rows pad to one shape.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data.samples import IMAGES, IMAGE_KINDS, TEXT, PipelineConfig, SampleMeta


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """One global batch: source indices of its rows (``batch_size * process_count``), its kind
    and the static shapes every process pads to: L text, U units (0: text-only), M memory,
    N decayed per placeholder, K placeholders."""

    epoch: int
    stream: str
    rows: tuple[int, ...]
    text_len: int
    units: int
    memory: int
    decayed: int
    kind: str = "video"
    placeholders: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.text_len, self.units, self.memory, self.decayed, self.placeholders


class BatchPlan:
    """Global batches of every epoch, computed lazily (a grain ``RandomAccessDataSource``).

    Element ``b`` is this process's share of global batch ``b``: ``{"batch": b, "epoch", "stream",
    "kind", "rows": its batch_size source indices, "shape": (L, U, M, N, K)}``.
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

    def _key(self, i: int) -> tuple[str, str, int]:
        m = self.metas[i]
        return m.stream, m.kind, self.cfg.unit_bucket(m.kind, m.num_frames, "")

    def _batch(self, epoch: int, key: tuple[str, str, int], rows: list[int]) -> PlannedBatch:
        stream, kind, units = key
        ms = [self.metas[j] for j in rows]
        text_len = _round_up(max(m.text_len for m in ms), self.cfg.text_multiple)
        if kind == TEXT:
            return PlannedBatch(epoch, stream, tuple(rows), text_len, 0, 0, 0, kind, 0)
        decayed = _round_up(max(m.num_decayed for m in ms), self.cfg.decayed_multiple)
        if kind in IMAGE_KINDS:
            memory = _round_up(max(m.num_memory for m in ms), self.cfg.image_memory_multiple)
            # A multi-image sample has one placeholder per image: K follows the unit bucket.
            k = units if kind == IMAGES else 1
        else:  # videos: the memory repeats the frames to min_frames, p² tokens + newline each
            memory, k = max(units, self.memory.min_frames) * (self.memory.pool_size**2 + 1), 1
        return PlannedBatch(epoch, stream, tuple(rows), text_len, units, memory, decayed, kind, k)

    def _plan_epoch(self, epoch: int) -> list[PlannedBatch]:
        order = self.valid
        if self.cfg.shuffle:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(order)
        groups: dict[tuple[str, str, int], list[int]] = {}
        out = []
        for i in order.tolist():
            k = self._key(i)
            g = groups.setdefault(k, [])
            g.append(i)
            if len(g) == self.global_batch:
                out.append(self._batch(epoch, k, g))
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
        return {"batch": b, "epoch": pb.epoch, "stream": pb.stream, "kind": pb.kind,
                "rows": pb.rows[lo : lo + self.cfg.batch_size], "shape": pb.shape}


__all__ = ["BatchPlan", "PlannedBatch"]
