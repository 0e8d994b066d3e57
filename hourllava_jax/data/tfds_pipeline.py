"""Training batches from a built ``videomarathon`` TFDS dataset (``data.source: tfds``).

The dataset (``data/tfds_videomarathon.py``, built by ``hourllava-build-tfds``) is read with
``tfds.data_source`` (ArrayRecord, random access, no TensorFlow) from a local directory or a
``gs://`` bucket, wrapped in :class:`~hourllava_jax.data.sources.TfdsSource` and fed to the same
grain pipeline as JSON Lines records (``data/pipeline.py``): the same metadata pass, global batch
plan, per-process rows (multi-host sharding) and resumable iterator state. The ``features`` config
gives ``features`` batches; the ``frames`` config gives ``pixels`` batches (frames resized to the
vision tower's side), as ``data.source: videos`` would.
"""

from __future__ import annotations

from pathlib import Path

import grain

from hourllava_jax.config import MemoryConfig
from hourllava_jax.data.pipeline import FeaturePipeline, PipelineConfig, make_feature_pipeline
from hourllava_jax.data.sources import TfdsSource


def open_tfds_source(name: str, data_dir: str | Path, split: str = "train") -> TfdsSource:
    """``tfds.data_source(name, split=split, data_dir=data_dir)`` as a pipeline source.

    ``name``: ``videomarathon/features`` or ``videomarathon/frames`` (optionally ``:VERSION``).
    ``data_dir``: the directory ``hourllava-build-tfds --out`` wrote, local or ``gs://``.
    Raises ``FileNotFoundError`` naming the key when the dataset is not there.
    """
    import tensorflow_datasets as tfds

    from hourllava_jax.data import tfds_videomarathon  # noqa: F401  (registers the builder)

    data_dir = str(data_dir)
    if data_dir.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401  (etils reads gs:// through fsspec when TensorFlow is absent)
        except ImportError as e:
            raise ImportError(f"data.tfds_dir={data_dir}: reading gs:// without TensorFlow needs gcsfs "
                              "(pip install gcsfs)") from e
    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except (AssertionError, KeyError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:  # KeyError: no splits
        raise FileNotFoundError(f"data.tfds_name={name} split={split}: no prepared dataset under "
                                f"data.tfds_dir={data_dir or '~/tensorflow_datasets'} ({e}); build it with "
                                "hourllava-build-tfds") from e
    return TfdsSource(src)


def has_frames(source: TfdsSource) -> bool:
    """True for the ``frames`` config (``pixels`` batches), False for ``features``."""
    return len(source) > 0 and "frames" in source[0]


def make_tfds_pipeline(
    name: str,
    data_dir: str | Path,
    *,
    split: str = "train",
    tokenizer_dir: str | Path,
    memory: MemoryConfig,
    cfg: PipelineConfig,
    image_size: int,
    shard_options: grain.sharding.ShardOptions | None = None,
    meta_cache: str | Path | None = None,
) -> FeaturePipeline:
    """The grain pipeline over a TFDS dataset: ``make_feature_pipeline(open_tfds_source(...))``.

    ``image_size``: the vision tower's input side, used by the ``frames`` config only.
    ``shard_options``: this process's shard of every global batch (default: by JAX process).
    """
    source = open_tfds_source(name, data_dir, split)
    if len(source) == 0:
        raise ValueError(f"data.tfds_name={name} split={split} in {data_dir}: the dataset has no examples")
    return make_feature_pipeline(source, tokenizer_dir=tokenizer_dir, memory=memory, cfg=cfg,
                                 image_size=image_size if has_frames(source) else None,
                                 shard_options=shard_options, meta_cache=meta_cache)


__all__ = ["has_frames", "make_tfds_pipeline", "open_tfds_source"]
