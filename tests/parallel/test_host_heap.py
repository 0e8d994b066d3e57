"""parallel/host_heap.py: the CPU-backend decision, the opt-out, and the effect itself (a step's
large temporaries stop page-faulting once the heap is kept), each checked in a fresh process
because the settings bind a process for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hourllava_jax.parallel import host_heap

ROOT = Path(__file__).resolve().parents[2]

# One jitted step whose ~64 MiB result is allocated and freed on every call (as a train step's
# temporaries are); prints the minor page faults of 20 calls after 10 warm-up calls, and whether the
# heap settings were applied. The first calls fault either way: JAX frees a result on another
# thread, so the heap grows for a few calls before freed blocks are there to reuse.
_PROBE = textwrap.dedent("""
    import json, os, resource, sys
    from hourllava_jax.parallel.host_heap import keep_heap_for_cpu
    applied = keep_heap_for_cpu() if sys.argv[1] == "keep" else False
    import jax, jax.numpy as jnp
    x = jnp.ones((2048, 1024), jnp.float32)
    f = jax.jit(lambda x: jnp.exp(jnp.tile(x, (8, 1)) * 1e-3))
    for _ in range(10):
        f(x).block_until_ready()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        f(x).block_until_ready()
    print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}))
""")


def _probe(mode: str, **env: str) -> dict:
    child_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", host_heap.ENV)}
    child_env.update(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=child_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _thp_always() -> bool:
    """Transparent huge pages for every mapping: a fresh 64 MiB block then faults 32 times, not
    16k, and minor faults stop measuring what the heap settings save."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.skipif(_thp_always(), reason="transparent_hugepage=always: page-fault counts do not measure the heap")
def test_kept_heap_stops_per_step_page_faults():
    default, kept = _probe("default"), _probe("keep")
    assert kept["applied"] and not default["applied"]
    # 20 calls x 64 MiB of fresh pages is ~330k faults with glibc's defaults; the kept heap reuses
    # its pages (a stray call may still fault: the kernel can reclaim idle heap pages).
    assert default["faults"] > 200_000, default
    assert kept["faults"] < default["faults"] / 2, (kept, default)


def test_opt_out_keeps_the_system_allocator():
    assert _probe("keep", **{host_heap.ENV: "system"})["applied"] is False


@pytest.mark.parametrize(("platforms", "plugins", "specs", "want"), [
    ("cpu", [], (), True),
    ("tpu,cpu", [], (), False),
    ("", [], (), True),
    ("", ["xla_cuda12"], (), False),  # a CUDA plugin's entry point
    ("", [], ("libtpu",), False),
])
def test_cpu_only_is_decided_without_starting_a_backend(monkeypatch, platforms, plugins, specs, want):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setattr(host_heap.importlib.metadata, "entry_points", lambda group: list(plugins))
    monkeypatch.setattr(host_heap.importlib.util, "find_spec", lambda name: object() if name in specs else None)
    assert host_heap.cpu_only() is want
