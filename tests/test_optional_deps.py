"""The model, kernels, trainer and converters import and work without the data-only packages.

The GPU machine (docs/gpu.md, "hardware run") has no grain, PyAV, tensorflow-datasets or
tensorboardX: every module under kernels/, model/, train/, convert/, config/ and parallel/ must
import without them (they are imported lazily, where a data feature needs them). Each check runs
in a fresh interpreter whose ``sys.modules`` marks those packages as missing, so an import of
any of them raises ImportError exactly as on a machine without them. The package tree is walked,
so a new module is covered as soon as it exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Missing on the GPU machine; PIL and torch are blocked too: the package proper never needs them
# (PIL only inside image helpers, torch only in tests).
BLOCKED = ("grain", "av", "tensorflow_datasets", "tensorflow", "tensorboardX", "array_record", "decord", "PIL", "torch")
PACKAGES = ("kernels", "model", "train", "convert", "config", "parallel")


def _run_blocked(body: str, timeout: float = 300) -> subprocess.CompletedProcess:
    prelude = f"import sys\nfor _n in {BLOCKED!r}:\n    sys.modules[_n] = None\n"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_core_module_imports_without_data_packages():
    r = _run_blocked(f"""
        import importlib, json, pkgutil
        imported, failed = [], {{}}
        for pkg in {PACKAGES!r}:
            p = importlib.import_module("hourllava_jax." + pkg)
            imported.append(p.__name__)
            for m in pkgutil.walk_packages(p.__path__, p.__name__ + "."):
                try:
                    importlib.import_module(m.name)
                    imported.append(m.name)
                except Exception as e:  # report every failure, not just the first
                    failed[m.name] = f"{{type(e).__name__}}: {{e}}"
        leaked = sorted(n for n in {BLOCKED!r} if sys.modules.get(n) is not None)
        print(json.dumps({{"imported": imported, "failed": failed, "leaked": leaked}}))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}, out["failed"]
    assert out["leaked"] == []
    # The walk really covered the tree: one known module of each package, and the blocked names
    # stayed blocked (a module importing grain at top level would have failed above).
    for name in ("kernels.pallas_gpu", "model.hour_llava", "train.loop", "convert.api", "config.model", "parallel.rules"):
        assert f"hourllava_jax.{name}" in out["imported"], name
    n_files = sum(1 for pkg in PACKAGES for _ in (REPO / "hourllava_jax" / pkg).rglob("*.py"))
    assert len(out["imported"]) == n_files


def test_metrics_logger_without_tensorboardx(tmp_path):
    """tensorboard=False never touches tensorboardX; tensorboard=True without it names the key."""
    r = _run_blocked(f"""
        from hourllava_jax.train.metrics import MetricsLogger, read_metrics
        log = MetricsLogger({str(tmp_path)!r}, total_steps=2, tensorboard=False, progress=False)
        log.log(1, {{"loss": 1.5}})
        log.close()
        assert read_metrics({str(tmp_path / "metrics.jsonl")!r})[1]["loss"] == 1.5
        try:
            MetricsLogger({str(tmp_path / "tb")!r}, total_steps=2, tensorboard=True, progress=False)
        except ImportError as e:
            print("ERR", e)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ERR" in r.stdout and "tensorboard" in r.stdout and "tensorboardX" in r.stdout
