"""Hugging Face checkpoint directories: streamed safetensors reading and atomic, sharded writing.

Reading opens each ``*.safetensors`` file memory-mapped and hands out one tensor at a time, so
loading a 7B checkpoint never holds it twice. Writing goes to a temporary sibling directory that
is renamed into place only when every shard, the index and ``config.json`` are written: a failed
export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from hourllava_jax.convert.mapping import ConversionError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # what transformers' save_pretrained uses


class CheckpointReader:
    """Keys and tensors of an HF directory (single file, index-sharded, or loose shards).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConversionError(f"{self.path}: checkpoint directory not found")
        self._key_file: dict[str, Path] = {}
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConversionError(f"{index}: malformed index ({e})") from None
            for key, fname in weight_map.items():
                f = self.path / fname
                if not f.is_file():
                    raise ConversionError(f"{f}: shard named in {INDEX_NAME} for key {key!r} is missing")
                self._key_file[key] = f
        else:
            files = sorted(self.path.glob("*.safetensors"))
            if not files:
                raise ConversionError(f"{self.path}: no *.safetensors file (and no {INDEX_NAME})")
            for f in files:
                for key in self._open(f).keys():
                    if key in self._key_file:
                        raise ConversionError(f"{f}: key {key!r} also in {self._key_file[key]}")
                    self._key_file[key] = f
        self._handles: dict[Path, Any] = {}

    def _open(self, f: Path):
        try:
            return safe_open(str(f), framework="numpy")
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ConversionError(f"{f}: not a readable safetensors file ({e})") from None

    def keys(self) -> list[str]:
        return list(self._key_file)

    def __contains__(self, key: str) -> bool:
        return key in self._key_file

    def get(self, key: str) -> np.ndarray:
        if key not in self._key_file:
            raise ConversionError(f"{self.path}: missing key {key!r}")
        f = self._key_file[key]
        if f not in self._handles:
            self._handles[f] = self._open(f)
        try:
            return self._handles[f].get_tensor(key)
        except Exception as e:
            raise ConversionError(f"{f}: cannot read tensor {key!r} ({e})") from None

    def shape(self, key: str) -> tuple[int, ...]:
        f = self._key_file[key]
        if f not in self._handles:
            self._handles[f] = self._open(f)
        return tuple(self._handles[f].get_slice(key).get_shape())

    def dtype(self, key: str) -> np.dtype:
        """The stored dtype of ``key`` (read from the header, no data loaded)."""
        f = self._key_file[key]
        if f not in self._handles:
            self._handles[f] = self._open(f)
        name = self._handles[f].get_slice(key).get_dtype()
        return np.dtype({"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}.get(name, name.lower()))

    def config(self) -> dict[str, Any]:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise ConversionError(f"{cfg}: missing (needed to know the architecture)")
        try:
            return json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise ConversionError(f"{cfg}: not valid JSON ({e})") from None

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_checkpoint(
    path: str | Path,
    tensors: Iterable[tuple[str, np.ndarray]],
    config: dict[str, Any],
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Writes an HF directory (``model.safetensors`` or shards + index) atomically.

    ``tensors`` is consumed lazily; at most one shard is buffered in host memory.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConversionError(f"{path}: already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        shards: list[list[str]] = []
        buf: dict[str, np.ndarray] = {}
        size = total = 0
        seen: set[str] = set()

        def flush() -> None:
            nonlocal buf, size
            if buf:
                save_file(buf, str(tmp / f"shard-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
                shards.append(list(buf))
                buf, size = {}, 0

        for key, arr in tensors:
            if key in seen:
                raise ConversionError(f"{path}: key {key!r} written twice")
            seen.add(key)
            arr = np.ascontiguousarray(arr)
            if buf and size + arr.nbytes > max_shard_bytes:
                flush()
            buf[key] = arr
            size += arr.nbytes
            total += arr.nbytes
        flush()
        if not shards:
            raise ConversionError(f"{path}: nothing to write (no tensors)")
        if len(shards) == 1:
            os.replace(tmp / "shard-00000.safetensors", tmp / SINGLE_NAME)
        else:
            n = len(shards)
            weight_map = {}
            for i, keys in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                os.replace(tmp / f"shard-{i:05d}.safetensors", tmp / name)
                weight_map.update({k: name for k in keys})
            (tmp / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
