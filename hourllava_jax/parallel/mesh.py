"""Device meshes from config: axes ``data``, ``fsdp``, ``tensor``, ``memory`` (design §7.2).

Sizes come from the training config (``mesh: {data: -1, fsdp: 1, tensor: 1, memory: 1}``); one
axis may be ``-1`` and takes whatever devices remain. Axis types are **Auto**: the model uses
logical-axis rules and ``with_sharding_constraint`` (design §8.1: ``jax.make_mesh`` defaults to
Explicit, which would demand ``out_sharding=`` on every sharded matmul).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MEMORY_AXIS = "memory"  # splits the memory repository's tokens (memory-parallel cross-attention)
MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor", MEMORY_AXIS)


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills the single ``-1`` axis and checks the product equals ``num_devices``.

    Returns sizes for every axis of :data:`MESH_AXES` in that order (missing axes are 1).
    """
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh: unknown axis {unknown}; valid axes are {list(MESH_AXES)}")
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {free}")
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh: sizes must be positive or -1, got {sizes}")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh: {num_devices} devices do not divide by the fixed axes {sizes} (product {fixed})")
        sizes[free[0]] = num_devices // fixed
    total = int(np.prod(list(sizes.values())))
    if total != num_devices:
        raise ValueError(f"mesh: {sizes} needs {total} devices but {num_devices} are available")
    return sizes


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 4-axis Auto mesh ``(data, fsdp, tensor, memory)`` over ``devices`` (default: all).

    ``jax.make_mesh`` orders devices for the physical topology (TPU ICI rings, one process's
    devices contiguous), which keeps ``tensor``/``memory`` traffic inside a host or slice.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape, len(devices))
    axis_shapes = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(axis_shapes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """Mesh axes the global batch is split over (``data`` and ``fsdp``: FSDP is data parallel)."""
    return tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
