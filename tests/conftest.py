"""Test set-up: 8 virtual CPU devices, the persistent compile cache, no network, fp32 parity."""

from __future__ import annotations

import os
from pathlib import Path

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The torch-reference tests skip where torch is absent (Python 3.12: only the multi-GB CUDA build
# exists there). CI's Python 3.11 run sets this so a missing torch fails instead of skipping them.
if os.environ.get("HOURLLAVA_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401

_CACHE = Path(os.environ.get("HOURLLAVA_JAX_CACHE", Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def torch_fp32():
    """The PyTorch reference, single-threaded-deterministic fp32 (imported only by tests)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)
    return torch
