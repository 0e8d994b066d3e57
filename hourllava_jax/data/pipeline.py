"""grain input pipelines: records + pre-extracted features, videos or images -> static-shape batches.

How it works (design §3.1 stage 3, design §4; docs/data_pipeline.md):

1. **Source** (``data/sources.py``): a grain ``RandomAccessDataSource`` of raw elements:
   ``RecordSource`` (JSON Lines / JSON records; visual inputs from a feature store, a video
   tree or an image tree) or ``TfdsSource`` (the ``videomarathon`` TFDS dataset, features or
   frames stored inline).
2. **Metadata pass** (``data/metadata.py``, once, at construction, in the main process): every
   record is parsed and tokenized with its time instruction, and the length of its visual input
   is read without decoding it (feature store index, video probe, image header). This gives
   each sample a *kind* (text, video features, video frames, one image, several images; see
   ``data/samples.py``), a *stream* (``long``: a video of at least ``long_video_seconds``;
   ``short``: everything else), a unit bucket and its exact token / memory / decayed-token
   counts. Bad records are dropped here, counted by reason and logged once per reason.
3. **Global batch plan** (``data/plan.py``, per epoch, a pure function of ``seed`` and the
   epoch): a seeded shuffle, then samples are grouped by (stream, kind, unit bucket) into
   *global* batches of ``batch_size * process_count`` rows; partial groups at the end of an
   epoch are dropped (counted). A micro-batch therefore never mixes long and short samples nor
   kinds, and every batch has static shapes decided from the whole global batch, so all
   processes agree on them.
4. **grain**: ``MapDataset.source(plan)`` -> ``.map(LoadBatch)``: each process loads only its
   rows ``[p·B, (p+1)·B)`` of each global batch (disjoint, covering), builds ``Sample``s and
   ``collate``s them to the planned shapes. ``worker_count > 0`` runs that in grain worker
   processes (``mp_prefetch``); the batches are identical to ``worker_count = 0``. A sample that
   fails to load (a corrupt feature record, a vanished file) becomes a filler row (one pad
   token, no loss, no visual input) and is counted in the iterator state.
5. **Mixing** (:func:`mix_pipelines`): several record sets interleaved batch by batch in given
   proportions (e.g. the paper's best 3:1 long-to-short mix, design §5), with grain's
   ``MapDataset.mix``: deterministic and random-access, so the state stays one batch number.
6. **State**: ``get_state()`` is a small JSON dict (next global batch number, skip counters,
   a fingerprint of the plan). It does not depend on the process count or the worker count,
   so a run can resume on another number of hosts (a gap of the release, design §6).

Batches are dicts of numpy arrays, the ``HourLlava`` batch contract (``model/hour_llava.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data import errors
from hourllava_jax.config.tokens import IGNORE_INDEX
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import CORRUPT_FEATURES, DTYPES
from hourllava_jax.data.metadata import load_or_build
from hourllava_jax.data.plan import BatchPlan, PlannedBatch
from hourllava_jax.data.samples import (
    FRAMES,
    IMAGE,
    IMAGES,
    LONG,
    SHORT,
    VIDEO,
    PipelineConfig,
    SampleBuilder,
    SampleMeta,
    log_once,
)
from hourllava_jax.data.sources import RecordSource, TfdsSource
from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import PAD, TAPS

log = logging.getLogger(__name__)

UNSUPPORTED_KIND = errors.UNSUPPORTED_RECORD_KIND  # image records when the pipeline has no image_root

# Where each kind's visual input goes in the batch (model/hour_llava.py).
BATCH_KEY = {VIDEO: "features", FRAMES: "pixels", IMAGE: "image_pixels", IMAGES: "image_pixels"}
# The reason a sample that no longer fits its planned shape is counted under.
_CHANGED = {VIDEO: CORRUPT_FEATURES, FRAMES: errors.CORRUPT_VIDEO, IMAGE: errors.CORRUPT_IMAGE, IMAGES: errors.CORRUPT_IMAGE}


# ---------------------------------------------------------------------------------------------
# Loading one batch (runs in grain workers)
# ---------------------------------------------------------------------------------------------


class LoadBatch(grain.transforms.Map):
    """Planned batch -> {"batch": dict of numpy arrays, "skipped": {reason: n}, "examples": {reason: message}}."""

    def __init__(self, source, builder: SampleBuilder, feature_dim: tuple[int, int] | None, feature_dtype: str = "float32"):
        self.source, self.builder, self.feature_dim, self.feature_dtype = source, builder, feature_dim, feature_dtype

    def _check(self, s: Sample, plan: Mapping[str, Any], where: str) -> None:
        """A sample must fit the shapes planned from its metadata (a file may change in between)."""
        text_len, units, memory, decayed, k = plan["shape"]
        kind = plan["kind"]
        if units == 0 and s.features is not None:
            raise DataError(where, errors.BAD_RECORD, "planned as text-only, has a visual input")
        fits = len(s.input_ids) <= text_len and (s.features is None or len(s.features) <= units)
        if s.layout is not None:
            fits = fits and s.layout.num_memory <= memory and len(s.layout.decayed) <= max(k, 1)
            fits = fits and all(len(d) <= decayed for d in s.layout.decayed)
        if not fits:
            raise DataError(where, _CHANGED.get(kind, CORRUPT_FEATURES), "sample no longer matches its planned shape")

    def _empty_visual(self, b: int, units: int, memory: int, decayed: int, k: int, kind: str) -> dict[str, np.ndarray]:
        """The visual keys of a batch whose every row is a filler: zeros at the planned shapes."""
        if kind == VIDEO:
            (p, c), dtype = self.feature_dim, DTYPES[self.feature_dtype]
        else:
            (p, c), dtype = (self.builder.image_size**2, 3), np.float32
        out = {"features": np.zeros((b, units, p, c), dtype), "memory_pos": np.zeros((b, memory), np.int32),
               "decayed": np.full((b, max(k, 1), decayed), -1, np.int32)}
        if kind == IMAGE:  # anyres images carry 4-tap memory maps
            out.update(memory_src=np.full((b, memory, TAPS), PAD, np.int32), memory_w=np.zeros((b, memory, TAPS), np.float32))
        else:
            out["memory_src"] = np.full((b, memory), PAD, np.int32)
        return out

    def map(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.builder.cfg
        text_len, units, memory, decayed, k = plan["shape"]
        kind = plan["kind"]
        samples, skipped, examples = [], Counter(), {}
        for i in plan["rows"]:
            try:
                s = self.builder.build(self.source[i], epoch=plan["epoch"], source_index=int(i))
                self._check(s, plan, f"source[{i}]")
            except DataError as e:
                skipped[e.reason] += 1
                examples.setdefault(e.reason, str(e))
                # A filler row: one pad token, no loss, no visual input (keeps the static shape).
                s = Sample(np.asarray([cfg.pad_id], np.int32), np.asarray([IGNORE_INDEX], np.int32))
            samples.append(s)
        batch = collate(samples, pad_id=cfg.pad_id, text_multiple=text_len, unit_multiple=max(units, 1),
                        memory_multiple=max(memory, 1), decayed_multiple=max(decayed, 1),
                        image_token_id=cfg.image_token_id, max_placeholders=k or None)
        if units:
            if "features" not in batch:
                batch.update(self._empty_visual(len(samples), units, memory, decayed, k, kind))
            if kind != VIDEO:  # pixels travelled as features [B, U, S·S, 3]
                s = self.builder.image_size
                batch[BATCH_KEY[kind]] = batch.pop("features").reshape(len(samples), units, s, s, 3)
        return {"batch": batch, "skipped": dict(skipped), "examples": examples}


# ---------------------------------------------------------------------------------------------
# The iterator
# ---------------------------------------------------------------------------------------------


def _mark_flags_parsed() -> None:
    """grain workers read absl flags; a plain script never parsed them (design §8.3)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class FeaturePipeline(Iterator[dict[str, np.ndarray]]):
    """Iterator of this process's batches with ``get_state()/set_state()`` (JSON dicts).

    Build with :func:`make_feature_pipeline` (or :func:`mix_pipelines`). ``skipped`` counts bad samples by reason: those
    dropped when planning (``plan_skipped``, the same on every process) plus those that failed to
    load in this process's batches so far (part of the state). Call ``close()`` (or use ``with``)
    to stop grain worker processes.
    """

    def __init__(self, plan: BatchPlan | None, dataset: grain.MapDataset, cfg: PipelineConfig,
                 plan_skipped: Mapping[str, int], fingerprint: Mapping[str, Any],
                 components: Sequence[FeaturePipeline] = ()):
        self.plan, self._ds, self.cfg = plan, dataset, cfg
        self.components = tuple(components)  # the mixed pipelines (mix_pipelines); () otherwise
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
            log_once(reason, out["examples"][reason])
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
    image_root: str | Path | None = None,
    image_tokens_per_side: int | None = None,
    meta_cache: str | Path | None = None,
) -> FeaturePipeline:
    """Records (``RecordSource`` + ``store_dir``, or ``TfdsSource``) -> :class:`FeaturePipeline`.

    Raw-video mode (``video_root`` + ``image_size``, e.g. stage 2 where SigLIP trains): videos
    ``<video_root>/videos/<data_source>/<video>`` are probed at planning (T by the design §3.2 raw
    rule: 1 FPS, at least ``raw_min_frames``) and decoded per sample; batches carry ``pixels``
    float32[B, U, S, S, 3] instead of ``features``. A ``TfdsSource`` of the ``frames`` config
    gives the same batches from its stored frames.

    Images (``image_root`` + ``image_size`` + ``image_tokens_per_side``; stages 1-3): records
    with ``image`` read ``<image_root>/images/<image>``; batches of one kind carry
    ``image_pixels`` float32[B, U, S, S, 3] (and ``memory_w`` for single anyres images).

    ``shard_options``: this process's shard (``shard_index`` of ``shard_count``); default
    ``ShardByJaxProcess``. Each process gets ``cfg.batch_size`` rows of every global batch.

    ``meta_cache``: a JSON file for the metadata pass (``data/metadata.py``).
    """
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    builder = SampleBuilder(tokenizer_dir=tokenizer_dir, memory=memory, cfg=cfg, store_dir=store_dir,
                            video_root=video_root, image_size=image_size, image_root=image_root,
                            image_tokens_per_side=image_tokens_per_side)
    meta = load_or_build(source, builder, meta_cache)
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


def mix_pipelines(pipelines: Sequence[FeaturePipeline], weights: Sequence[float]) -> FeaturePipeline:
    """Interleaves whole batches of several pipelines in proportion to ``weights``.

    E.g. ``mix_pipelines([videomarathon, llava_video], [3, 1])``: three long-video batches per
    short one (the paper's best mix, design §5). Every global batch holds the same number of
    rows, so batch proportions are sample proportions. The order is grain's ``MapDataset.mix``:
    deterministic and random-access, so resuming is exact and independent of the process count.
    The mixture ends when its first component runs out (give components ``num_epochs=None`` to
    repeat them); the worker and read options are the first component's.
    """
    if len(pipelines) < 1 or len(pipelines) != len(weights) or min(weights) <= 0:
        raise ValueError(f"mix_pipelines: need one positive weight per pipeline, got {len(pipelines)} and {list(weights)}")
    gb = {p.plan.global_batch if p.plan is not None else None for p in pipelines}
    if len(gb) != 1:
        raise ValueError(f"mix_pipelines: components disagree on the global batch size: {sorted(map(str, gb))}")
    ds = grain.MapDataset.mix([p._ds for p in pipelines], [float(w) for w in weights])
    skipped = sum((Counter(p.plan_skipped) for p in pipelines), Counter())
    fingerprint = {"mix": [p._fp for p in pipelines], "weights": [float(w) for w in weights]}
    return FeaturePipeline(None, ds, pipelines[0].cfg, skipped, fingerprint, components=pipelines)


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
    "BATCH_KEY", "LONG", "SHORT", "UNSUPPORTED_KIND", "BatchPlan", "DevicePrefetch", "FeaturePipeline", "LoadBatch",
    "PipelineConfig", "PlannedBatch", "RecordSource", "SampleBuilder", "SampleMeta", "TfdsSource", "make_feature_pipeline",
    "mix_pipelines",
]
