"""The pipeline's metadata pass (one ``SampleMeta`` per source element) and its on-disk cache.

The pass parses and tokenizes every record and reads each visual input's length (feature store
index, video probe, image header), about 1 ms per record: minutes for a million records, on
every start and every process. The cache (a JSON file) is reused while the record files, store
index, tokenizer and options are unchanged, and rebuilt otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hourllava_jax.data.errors import DataError
from hourllava_jax.data.features import feature_key
from hourllava_jax.data.samples import VIDEO, SampleBuilder, SampleMeta, log_once
from hourllava_jax.data.sources import file_identity

log = logging.getLogger("hourllava_jax.data.pipeline")  # one logger name for the whole pipeline

CACHE_VERSION = 2  # 2: SampleMeta gained kind / num_memory / placeholders (images, stored frames)


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Per source element its ``SampleMeta`` or (None and) the skip reason; the unit shape
    (P, C) and dtype of pre-extracted features (None when no ``video`` sample exists)."""

    metas: list[SampleMeta | None]
    reasons: list[str | None]
    feature_dim: tuple[int, int] | None
    feature_dtype: str


def metadata_pass(source, builder: SampleBuilder) -> Metadata:
    metas: list[SampleMeta | None] = []
    reasons: list[str | None] = []
    feature_dim, feature_dtype = None, "float32"
    for i in range(len(source)):
        element = source[i]
        try:
            m = builder.meta(element)
        except DataError as e:
            metas.append(None)
            reasons.append(e.reason)
            log_once(e.reason, str(e))
            continue
        metas.append(m)
        reasons.append(None)
        if feature_dim is None and m.kind == VIDEO:
            if "features" in element:
                x = np.asarray(element["features"])
                feature_dim, feature_dtype = tuple(x.shape[1:]), x.dtype.name
            else:
                e = builder.store.meta(feature_key(builder.record(element)))
                feature_dim, feature_dtype = tuple(e["shape"][1:]), e["dtype"]
    return Metadata(metas, reasons, feature_dim, feature_dtype)


def cache_key(source, builder: SampleBuilder) -> dict[str, Any] | None:
    """Everything the metadata pass depends on (JSON), or None if the source cannot name itself."""
    if not hasattr(source, "identity"):
        return None
    tok = Path(builder.tokenizer_dir) / "tokenizer.json"
    index = [] if builder.store_dir is None else [
        file_identity(p) for p in sorted((Path(builder.store_dir) / "index").glob("*.jsonl"))]
    cfg = builder.cfg.fingerprint()
    key = {
        "version": CACHE_VERSION, "source": source.identity(), "store_index": index, "video_root": builder.video_root,
        "image_root": builder.image_root, "image_size": builder.image_size,
        "image_tokens_per_side": builder.image_tokens_per_side, "memory": dataclasses.asdict(builder.memory),
        "tokenizer": hashlib.sha256(tok.read_bytes()).hexdigest() if tok.is_file() else builder.tokenizer_dir,
        "options": {k: cfg[k] for k in ("frame_buckets", "max_frames", "raw_fps", "raw_min_frames",
                                        "long_video_seconds", "max_text_tokens", "image_unit_buckets")},
        "image_token_id": builder.cfg.image_token_id,
    }
    return json.loads(json.dumps(key))  # tuples -> lists, as they come back from the file


def load_cache(path: str | Path, key: dict[str, Any]) -> Metadata | None:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        log.info("pipeline: metadata cache %s is stale (records, store, tokenizer or options changed)", path)
        return None
    metas = [None if m is None else SampleMeta(*m) for m in data["metas"]]
    for reason in {r for r in data["reasons"] if r is not None}:
        log_once(reason, f"(counted from the metadata cache {path}; delete it to see the records)")
    dim = data["feature_dim"]
    return Metadata(metas, data["reasons"], None if dim is None else tuple(dim), data["feature_dtype"])


def save_cache(path: str | Path, key: dict[str, Any], meta: Metadata) -> None:
    """Atomic write (every process may write the same content at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"key": key, "metas": [None if m is None else dataclasses.astuple(m) for m in meta.metas],
            "reasons": meta.reasons, "feature_dim": None if meta.feature_dim is None else list(meta.feature_dim),
            "feature_dtype": meta.feature_dtype}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


def load_or_build(source, builder: SampleBuilder, cache: str | Path | None) -> Metadata:
    """The metadata of ``source``, from ``cache`` when it is fresh (then refreshed)."""
    key = cache_key(source, builder) if cache is not None else None
    meta = load_cache(cache, key) if key is not None else None
    if meta is None:
        meta = metadata_pass(source, builder)
        if key is not None:
            save_cache(cache, key, meta)
    return meta


__all__ = ["Metadata", "cache_key", "load_cache", "load_or_build", "metadata_pass", "save_cache"]
