"""The one frame encoder: frames -> SigLIP -> bilinear pool per frame (design §1.1, §1.2).

Used by feature extraction (``data/extract.py``), inference (``infer/pipeline.py``) and the demo::

    enc = FrameEncoder.from_checkpoint("ckpt/")            # SigLIP or Hour-LLaVA directory
    feats = enc(frames)                                    # uint8[N, S, S, 3] -> float32[N, p², C]

Frames go through the tower in chunks of a fixed size (the last chunk zero-padded), so one
compiled program serves every video length; the jitted function is module-level with the
tower's graph static, so every encoder of the same architecture and chunk shares it. uint8
frames are normalised chunk by chunk (a float32 copy of an hour of 384x384 frames would be
6 GB). With ``devices`` the chunk is split over them (data parallel, tower replicated);
without, the tower's parameters stay where they are and the chunk goes to the default device.

Lives in ``data/`` (not ``model/``) because it normalises pixels (``data/preprocess.py``) and
loads checkpoints (``convert/``); the model layer imports neither.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from hourllava_jax.data.preprocess import normalize
from hourllava_jax.memory.resize import pool_frames

DEFAULT_POOL_SIZE = 8  # design §1.2: 27x27 -> 8x8 per frame, for a bare SigLIP checkpoint


@functools.partial(jax.jit, static_argnames=("graphdef", "pool_size"))
def _encode_chunk(graphdef, state, pixels, pool_size):
    """float32[n, S, S, 3] -> float32[n, p², C] (``pool_size`` None: float32[n, g², C])."""
    feats = nnx.merge(graphdef, state)(pixels)
    if pool_size is not None:
        feats = pool_frames(feats, pool_size)
    return feats.astype(jnp.float32)


class FrameEncoder:
    """A vision tower + per-frame bilinear pooling, jitted on a fixed chunk of frames.

    Args:
      tower: a :class:`~hourllava_jax.model.siglip.SiglipVisionTower` (its parameters are
        snapshotted here: build a new encoder after changing them).
      pool_size: p of the p x p pooled grid per frame; None returns the unpooled g² tokens
        (what images use, design §1.4).
      chunk: frames per compiled call (rounded up to a multiple of the device count).
      devices: split each chunk over these devices (parameters replicated on them); None: no
        placement, the parameters stay where they are (e.g. inside a served model).

    ``__call__(frames) -> float32[N, p², C]``: ``frames`` uint8[N, S, S, 3] RGB at the tower's
    size (normalised here, design §1.1), or float[N, S, S, 3] already normalised.
    """

    def __init__(self, tower: nnx.Module, *, pool_size: int | None, chunk: int = 64,
                 devices: Sequence[jax.Device] | None = None):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or None, got {pool_size}")
        self.cfg = tower.cfg
        self.pool_size = pool_size
        self._graphdef, state = nnx.split(tower)
        self._frames_sharding = None
        if devices is not None and len(devices) > 1:
            chunk = -(-chunk // len(devices)) * len(devices)
            mesh = jax.make_mesh((len(devices),), ("data",), devices=list(devices),
                                 axis_types=(jax.sharding.AxisType.Auto,))
            self._frames_sharding = NamedSharding(mesh, PartitionSpec("data"))
            state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
        elif devices is not None:
            state = jax.device_put(state, devices[0])
        self._state = state
        self.chunk = chunk

    @property
    def image_size(self) -> int:
        """S: the tower's input side (frames are decoded straight to it)."""
        return int(self.cfg.image_size)

    @property
    def tokens_per_frame(self) -> int:
        """p² pooled (or g² unpooled) tokens per frame."""
        if self.pool_size is not None:
            return self.pool_size**2
        return (self.cfg.image_size // self.cfg.patch_size) ** 2

    @property
    def hidden_size(self) -> int:
        """C: the feature width."""
        return int(self.cfg.hidden_size)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        s = self.image_size
        if frames.ndim != 4 or frames.shape[1:] != (s, s, 3):
            raise ValueError(f"FrameEncoder: expected frames [N, {s}, {s}, 3], got {list(frames.shape)}")
        if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"FrameEncoder: frames must be uint8 RGB or normalised floats, got {frames.dtype}")
        n, c = len(frames), self.chunk
        if n == 0:
            raise ValueError("FrameEncoder: no frames")
        out = []
        for start in range(0, n, c):
            part = frames[start:start + c]
            part = normalize(part) if part.dtype == np.uint8 else part.astype(np.float32, copy=False)
            if len(part) < c:  # pad the last chunk: every call has the same shape
                part = np.concatenate([part, np.zeros((c - len(part), *part.shape[1:]), np.float32)])
            x = jax.device_put(part, self._frames_sharding) if self._frames_sharding is not None else jnp.asarray(part)
            out.append(np.asarray(_encode_chunk(self._graphdef, self._state, x, self.pool_size)))
        return np.concatenate(out)[:n]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, pool_size: int | None = None, dtype: Any = jnp.float32,
                        chunk: int = 64, devices: Sequence[jax.Device] | None = None) -> FrameEncoder:
        """The vision tower of a Hugging Face directory: a SigLIP one (``SiglipVisionModel``, read
        the release's way: penultimate layer, no head) or an Hour-LLaVA one (also the output of
        ``hourllava-convert compose``), of which only the vision tensors are read.

        ``pool_size``: default the Hour-LLaVA config's ``memory.pool_size``, else 8 (design §1.2).
        ``dtype``: parameter and compute dtype (the release extracts in float32).
        """
        tower, cfg_pool = load_vision_tower(path, dtype)
        return cls(tower, pool_size=pool_size or cfg_pool, chunk=chunk, devices=devices)


def load_vision_tower(path: str | Path, dtype: Any = jnp.float32) -> tuple[nnx.Module, int]:
    """(SigLIP tower, the checkpoint's pool size or 8) from a SigLIP or Hour-LLaVA directory.

    For an Hour-LLaVA directory only the tower is built and read (an abstract tower filled one
    tensor at a time), so extracting with a 7B checkpoint does not load the LLM.
    """
    from hourllava_jax.convert.api import detect_architecture, load_pretrained
    from hourllava_jax.convert.hf_config import hour_llava_config_from_hf
    from hourllava_jax.convert.mapping import ConversionError, load_tensors
    from hourllava_jax.convert.safetensors_io import CheckpointReader
    from hourllava_jax.convert.siglip_keys import HOURLLAVA_PREFIX, siglip_hf_rules
    from hourllava_jax.kernels.blocks import BlockSizes
    from hourllava_jax.model.siglip import SiglipVisionTower

    with CheckpointReader(path) as reader:
        hf = reader.config()
        kind = detect_architecture(hf, str(Path(path) / "config.json"))
        if kind == "llm":
            raise ConversionError(f"{path}: a language-model checkpoint has no vision tower "
                                  "(give a SigLIP or Hour-LLaVA directory)")
        if kind == "hour_llava":
            keys = reader.keys()
            cfg = hour_llava_config_from_hf(hf, keys, reader.shape)
            blocks = BlockSizes.from_config(cfg.attention_block_sizes)
            tower = nnx.eval_shape(lambda: SiglipVisionTower(cfg.vision, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0),
                                                             attention_impl=cfg.attention_impl, attention_blocks=blocks))
            rules = siglip_hf_rules(cfg.vision, HOURLLAVA_PREFIX)
            load_tensors(tower, reader.get, keys, rules, dtype=dtype, strict=False, source=str(path))
            return tower, cfg.memory.pool_size
    _, tower = load_pretrained(path, dtype)
    return tower, DEFAULT_POOL_SIZE


__all__ = ["DEFAULT_POOL_SIZE", "FrameEncoder", "load_vision_tower"]
