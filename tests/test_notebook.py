"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel, from this checkout.

Cells tagged ``colab`` (clone + install) and ``accelerator`` (the TPU/GPU plugin) are dropped:
the package is already installed here and CI has no accelerator. Everything else runs as a user
would run it, ``--quick`` demo included, with nbclient (pinned in requirements-dev.txt). The
kernel works in a temporary directory holding links to the checkout's ``launch/`` and
``configs/``, so the notebook's relative paths (``launch/demo.py``, ``runs/...``) resolve and
nothing is written into the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
SKIP_TAGS = {"colab", "accelerator"}


def test_skipped_cells_are_only_the_clone_and_accelerator_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if SKIP_TAGS & set(c.metadata.get("tags", []))]
    assert len(tagged) == 2
    assert "git clone" in tagged[0].source and "pip install" in tagged[0].source
    assert "[{extra}]" in tagged[1].source
    first = "".join(c.source for c in nb.cells[:1])
    assert "colab.research.google.com/github/" in first and "colab-badge.svg" in first


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info < (3, 12), reason="Colab runs Python 3.12: CI executes the notebook in its 3.12 run only")
def test_notebook_executes_in_a_fresh_kernel(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [c for c in nb.cells if not SKIP_TAGS & set(c.metadata.get("tags", []))]
    for name in ("launch", "configs"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    # The kernel and its `!python` lines use this interpreter (a venv need not be on PATH), see the
    # checkout first, and run JAX on one CPU device as a Colab CPU runtime does.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    import jax

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(jax.config.jax_compilation_cache_dir or ROOT / ".jax_cache"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on the first failure
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Held-out needle accuracy" in outputs  # the demo's results table
    assert (tmp_path / "runs" / "demo" / "results.json").is_file()
    assert (tmp_path / "runs" / "tiny_random" / "config.json").is_file()  # save_pretrained wrote a checkpoint
