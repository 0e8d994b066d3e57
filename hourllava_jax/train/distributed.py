"""Multi-process set-up and per-process data sharding.

``initialize``: TPU pods and SLURM are detected by ``jax.distributed.initialize()`` itself
(cluster auto-detection); elsewhere pass the coordinator explicitly (``--coordinator
host:port --num-processes N --process-id I``). A single process needs nothing.

Each process loads only its rows of the global batch (``G / P`` rows, contiguous block ``p``);
:func:`global_batch` assembles them into global ``jax.Array``s sharded over ``data x fsdp``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from hourllava_jax.train.step import batch_sharding


def _cluster_detected() -> bool:
    """True on a multi-host TPU slice or inside a multi-task SLURM step (what jax auto-detects)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> None:
    """Calls ``jax.distributed.initialize`` when needed (explicit flags, or a detected cluster).

    Must run before anything touches the devices. Idempotent.
    """
    if jax.distributed.is_initialized():
        return
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator needs --num-processes and --process-id")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids)
    elif _cluster_detected():
        jax.distributed.initialize()


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def check_process_rows(mesh: Mesh, global_batch_size: int) -> None:
    """Checks that this process's devices hold exactly rows ``[p*G/P, (p+1)*G/P)`` of the batch,
    the block the data iterator loads; otherwise the mesh's device order does not match."""
    p, n = jax.process_index(), jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"global batch {global_batch_size} does not split over {n} processes")
    local = global_batch_size // n
    idx = batch_sharding(mesh, 1).addressable_devices_indices_map((global_batch_size,))
    rows = set()
    for sl in idx.values():
        rows.update(range(*sl[0].indices(global_batch_size)))
    if rows != set(range(p * local, (p + 1) * local)):
        raise ValueError(f"process {p} holds batch rows {sorted(rows)[:4]}..., not its block "
                         f"[{p * local}, {(p + 1) * local}); check the mesh's device order")


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local rows ``[G/P, ...]`` per key -> global arrays ``[G, ...]`` sharded on the batch dim."""
    n = jax.process_count()
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, (v.shape[0] * n, *v.shape[1:]))
    return out
