"""TFDS builder ``videomarathon`` (ArrayRecord, no TensorFlow needed): records + features or frames.

Two configs, each one example per training record (design §4.2):

=============  ==============================================================================
``features``   ``id`` Text, ``record`` Text (the record as JSON), ``duration`` float32 seconds,
               ``features`` float32[N, P, C] (pre-extracted, design §3), from a feature store
``frames``     ``id``, ``record``, ``duration``, ``frames`` uint8[T, S, S, 3] (design §3.2 raw-video
               rule, PIL bicubic to S = ``frame_size``, 64 by default), ``timestamps`` float32[T]
=============  ==============================================================================

Only ``Tensor``/``Text``/``Scalar`` features: ``tfds.features.Image``/``Video`` need TensorFlow
(design §8.3). Build from a local directory (``source_dir=`` builder kwarg, else the manual dir)::

    <source_dir>/*.jsonl           records (all files, sorted)
    <source_dir>/feature_store/    a data/features.py store (``features`` config; or feature_store=)
    <source_dir>/videos/           <data_source>/<video> (``frames`` config)

    builder = VideoMarathon(data_dir=out, config="features", source_dir=src)
    builder.download_and_prepare()
    ds = tfds.data_source("videomarathon/features", split="train", data_dir=out, download=False)
    grain.MapDataset.source(ds)    # or pipeline.TfdsSource(ds) for the training pipeline

Bad records (malformed, missing features, undecodable video) are skipped at build time, counted
in ``builder.skipped`` by reason and logged once per reason.

Cost note: the ``features`` config stores a video's features once per *record*; VideoMarathon
groups up to 5 QA pairs per record and has several records per video, and one hour of
features is ~1 GB in float32, so at full scale the feature store + JSON Lines records (features
stored once per video) is the better source; this builder suits subsets and exchanges.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import FeatureStore, feature_key
from hourllava_jax.data.records import iter_records, video_path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VideoMarathonConfig(tfds.core.BuilderConfig):
    """``kind``: "features" or "frames"; frames options: ``frame_size`` S, sampling ``fps``,
    ``min_frames`` (design §3.2: 128) and an optional ``max_frames`` cap."""

    kind: str = "features"
    frame_size: int = 64
    fps: float = 1.0
    min_frames: int = 128
    max_frames: int | None = None


class VideoMarathon(tfds.core.GeneratorBasedBuilder):
    """VideoMarathon-layout data from a local directory (module docstring)."""

    name = "videomarathon"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Records with pre-extracted features or low-resolution frames."}
    BUILDER_CONFIGS = [
        VideoMarathonConfig(name="features", kind="features", description="records + pre-extracted features"),
        VideoMarathonConfig(name="frames", kind="frames", description="records + uint8 frames at 64x64"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the records (*.jsonl) in the manual dir, with feature_store/ (features config) or "
        "videos/<data_source>/... (frames config), or pass source_dir= as a builder kwarg."
    )

    # tfds' default looks the module up with the `importlib_resources` backport, which is not a
    # dependency here (and not needed on Python >= 3.9): this file is the code path.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(self, *, source_dir: str | Path | None = None, feature_store: str | Path | None = None, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        self.source_dir = None if source_dir is None else Path(source_dir)
        self.feature_store = None if feature_store is None else Path(feature_store)
        self.skipped: Counter = Counter()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        common = {
            "id": tfds.features.Text(),
            "record": tfds.features.Text(doc="the training record as JSON (design §4.2)"),
            "duration": tfds.features.Scalar(np.float32, doc="video duration in seconds"),
        }
        if self.builder_config.kind == "features":
            extra = {"features": tfds.features.Tensor(shape=(None, None, None), dtype=np.float32, encoding="bytes",
                                                      doc="float32[N, P, C] pooled SigLIP features")}
        else:
            s = self.builder_config.frame_size
            extra = {"frames": tfds.features.Tensor(shape=(None, s, s, 3), dtype=np.uint8, doc="RGB frames"),
                     "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.float32, doc="seconds")}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({**common, **extra}))

    def _split_generators(self, dl_manager):
        root = self.source_dir or Path(dl_manager.manual_dir)
        return {"train": self._generate_examples(root)}

    def _skip(self, e: DataError) -> None:
        if not self.skipped[e.reason]:
            log.warning("videomarathon: skipping bad record (%s; further ones are only counted): %s", e.reason, e)
        self.skipped[e.reason] += 1

    def _generate_examples(self, root: Path):
        cfg = self.builder_config
        store = None
        if cfg.kind == "features":
            store = FeatureStore(self.feature_store or root / "feature_store")
        last: tuple[Path | None, object] = (None, None)  # records of one video are usually adjacent
        for path in sorted(Path(root).glob("*.jsonl")):
            for n, item in enumerate(iter_records(path)):
                if isinstance(item, DataError):
                    self._skip(item)
                    continue
                rec = item
                if rec.video is None:
                    continue  # image / text records have no place in a video dataset
                ex = {"id": rec.id, "record": json.dumps(rec.to_json(), ensure_ascii=False)}
                try:
                    if store is not None:
                        vf = store.get(feature_key(rec))
                        ex.update(duration=np.float32(vf.duration), features=np.asarray(vf.features, np.float32))
                    else:
                        from hourllava_jax.data.video import decode_video

                        vpath = video_path(root, rec)
                        if last[0] != vpath:
                            last = (vpath, decode_video(vpath, fps=cfg.fps, min_frames=cfg.min_frames,
                                                        max_frames=cfg.max_frames, size=cfg.frame_size))
                        video = last[1]
                        ex.update(duration=np.float32(video.duration), frames=video.frames,
                                  timestamps=video.timestamps.astype(np.float32))
                except DataError as e:
                    self._skip(e)
                    continue
                yield f"{path.name}:{n}:{rec.id}", ex


__all__ = ["VideoMarathon", "VideoMarathonConfig"]
