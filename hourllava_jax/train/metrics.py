"""Training metrics: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, a tqdm
bar and, if the package is importable and a project is configured, wandb. Only process 0 writes.

Each record has at least ``step`` and ``loss``; the loop adds ``lr/<group>``, ``grad_norm``,
``tokens_per_s``, ``step_time_s``, ``mfu`` (vs the configured per-device peak) and ``skipped``.
On resume the file is appended to; a step logged twice (before a crash and after the restart)
appears twice and the later line is the one that counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax


def mfu(flops_per_step_per_device: float, step_time_s: float, peak_flops_per_device: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s per device over the configured peak (0 if unknown)."""
    if peak_flops_per_device <= 0 or step_time_s <= 0 or flops_per_step_per_device <= 0:
        return 0.0
    return flops_per_step_per_device / step_time_s / peak_flops_per_device


class MetricsLogger:
    """Writes metrics on process 0; a silent no-op elsewhere."""

    def __init__(self, workdir: str | Path, *, total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 wandb_project: str = "", config: dict[str, Any] | None = None, progress: bool = True):
        self.enabled = jax.process_index() == 0
        self._tb = self._wandb = self._bar = self._file = None
        if not self.enabled:
            return
        workdir = Path(workdir)
        if tensorboard:
            # Optional: machines without tensorboardX (the GPU benchmark machine) set tensorboard=false.
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:
                raise ImportError(f"tensorboard: true needs the tensorboardX package ({e}); install it or set tensorboard=false") from e
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(workdir / "metrics.jsonl", "a", buffering=1)  # line-buffered: survives SIGKILL
        if tensorboard:
            self._tb = SummaryWriter(str(workdir / "tensorboard"))
        if wandb_project:
            try:
                import wandb  # optional
            except ImportError:
                wandb = None
            if wandb is not None:
                self._wandb = wandb.init(project=wandb_project, config=config or {}, dir=str(workdir), resume="allow")
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            v = v.item() if hasattr(v, "item") else v
            rec[k] = v if not isinstance(v, float) or math.isfinite(v) else str(v)
        self._file.write(json.dumps(rec) + "\n")
        scalars = {k: float(v) for k, v in rec.items() if k != "step" and isinstance(v, (int, float, bool))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}", refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._file.close()


def read_metrics(path: str | Path) -> dict[int, dict[str, Any]]:
    """``metrics.jsonl`` -> ``{step: record}``; a step logged twice keeps its later record."""
    out: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["step"])] = rec
    return out
