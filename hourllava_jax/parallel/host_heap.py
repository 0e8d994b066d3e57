"""Keeps XLA:CPU's buffers in the process heap instead of fresh ``mmap`` pages on every step.

On the CPU backend a compiled step allocates its temporaries (GBs for a ~100M model: logits,
attention tiles, activations) through the C allocator and frees them at the end of the step.
glibc serves each large block with a new ``mmap`` and returns it with ``munmap``, so every step
page-faults and zero-fills all of its temporary memory again, and XLA's pool threads each get an
arena of their own that does the same. :func:`keep_heap_for_cpu` tells glibc (``mallopt``) to
serve every block from one arena's heap and never to give freed memory back to the kernel: after
the first step the temporaries reuse pages that are already mapped (docs/performance.md has the
before and after). The price is a resident set that stays at its high-water mark, which is what
a training or evaluation process reaches anyway.

Only for the CPU backend: on GPU and TPU hosts the step's memory is on the accelerator, and one
arena would serialise the host threads (data pipeline, checkpointing) for nothing. The arena
limit only binds threads that have not allocated yet, so the decision is taken before JAX starts
its backend (and its thread pool): CPU means ``JAX_PLATFORMS=cpu``, or no accelerator plugin
installed (``libtpu``, a ``jax_plugins`` package or entry point such as the CUDA plugin). Set
``HOURLLAVA_HOST_HEAP=system`` to keep glibc's defaults; non-glibc platforms are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform

ENV = "HOURLLAVA_HOST_HEAP"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

_applied = False


def cpu_only() -> bool:
    """Whether JAX will compute on the CPU, decided without starting a backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    plugins = list(importlib.metadata.entry_points(group="jax_plugins"))
    return not plugins and not any(importlib.util.find_spec(m) for m in ("libtpu", "jax_plugins"))


def keep_heap_for_cpu() -> bool:
    """Applies the heap settings once per process when JAX computes on the CPU; returns whether
    they are in effect. Call it first thing in an entry point, before JAX starts its backend."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "").lower() == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if not cpu_only():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success. -1 as the trim threshold is SIZE_MAX: never trim.
    ok = libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    _applied = ok
    return ok
