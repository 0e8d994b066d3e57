"""The demo's results: a plain-text table, a JSON summary and one PNG of needle heatmaps.

Cells are (needle depth, video length) as in :mod:`hourllava_jax.eval.tasks.needle`,
whose ``accuracy_grid`` builds them. The PNG puts MemAug, the control, and the control's
theoretical bound (kept needles + chance on the rest) side by side on one colour scale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hourllava_jax.demo.evaluate import Prediction, accuracy
from hourllava_jax.eval.tasks.needle import accuracy_grid


def _cells(preds: Sequence[Prediction], value: str = "correct", chance: float = 0.25) -> list[dict[str, Any]]:
    """Predictions as needle-benchmark result records; ``value="bound"`` scores each item with its
    expected best accuracy under forgetting (1 if its needle is kept, else chance)."""
    out = []
    for p in preds:
        v = p.correct if value == "correct" else (1.0 if p.kept else chance)
        out.append({"categories": {"depth": f"{p.depth:.2f}", "length": str(p.length)}, "correct": v})
    return out


def _grid(records: list[dict[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    # accuracy_grid counts bool(correct); the bound needs fractional scores, so average directly.
    depths, lengths, _ = accuracy_grid(records)
    grid = np.full((len(depths), len(lengths)), np.nan)
    for i, d in enumerate(depths):
        for j, n in enumerate(lengths):
            v = [float(r["correct"]) for r in records if r["categories"] == {"depth": d, "length": n}]
            if v:
                grid[i, j] = np.mean(v)
    return depths, lengths, grid


def summary(results: Mapping[str, Sequence[Prediction]], bound: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{variant: {accuracy, kept/dropped-needle accuracy, n}} plus the control bound and ``extra``."""
    out: dict[str, Any] = {"control_bound": bound, **(extra or {})}
    for name, preds in results.items():
        kept = [p for p in preds if p.kept]
        dropped = [p for p in preds if not p.kept]
        out[name] = {"accuracy": accuracy(preds), "accuracy_needle_kept": accuracy(kept),
                     "accuracy_needle_dropped": accuracy(dropped), "n": len(preds), "n_needle_kept": len(kept)}
    return out


def table(s: Mapping[str, Any], variants: Sequence[str]) -> str:
    """Fixed-width results table (accuracy in %)."""
    pct = lambda x: "  -  " if x != x else f"{100 * x:5.1f}"  # noqa: E731  (NaN -> "-")
    rows = [f"{'variant':<22}{'accuracy':>10}{'needle kept':>13}{'needle dropped':>16}{'n':>6}"]
    for v in variants:
        r = s[v]
        rows.append(f"{v:<22}{pct(r['accuracy']):>10}{pct(r['accuracy_needle_kept']):>13}"
                    f"{pct(r['accuracy_needle_dropped']):>16}{r['n']:>6}")
    rows.append(f"{'control bound':<22}{pct(s['control_bound']):>10}   (kept needles + chance on the rest)")
    return "\n".join(rows)


def write_heatmaps(results: Mapping[str, Sequence[Prediction]], path: str | Path, *, bound_of: str) -> Path:
    """PNG: one heatmap per variant plus the bound computed from ``results[bound_of]``'s items."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    panels = [(name, _grid(_cells(p))) for name, p in results.items()]
    panels.append(("control bound (kept frames)", _grid(_cells(results[bound_of], "bound"))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.0, 3.8), squeeze=False, layout="constrained")
    im = None
    for k, (ax, (name, (depths, lengths, grid))) in enumerate(zip(axes[0], panels)):
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(depths)), depths)
        ax.set_xlabel("video length (s, 1 FPS)")
        if k == 0:
            ax.set_ylabel("needle depth")
        ax.set_title(f"{name}\n{100 * np.nanmean(grid):.0f}% (cell mean)", fontsize=10)
        for i in range(len(depths)):
            for j in range(len(lengths)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label="accuracy", shrink=0.9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path
