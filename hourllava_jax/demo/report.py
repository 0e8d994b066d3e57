"""The demo's results from the evaluation runner's records: a plain-text table, a JSON summary
and one PNG of needle heatmaps.

Each record is one held-out question as ``launch/evaluate.py --benchmark needle`` scored it
(``categories = {depth, length}``, ``correct``). ``kept`` says whether the question's needle
frame survives uniform temporal forgetting: the control can read only those. Cells are
(needle depth, video length) as in :mod:`hourllava_jax.eval.tasks.needle`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hourllava_jax.eval.tasks.needle import accuracy_grid

Record = Mapping[str, Any]


def _acc(rs: Sequence[Record], value: str = "correct") -> float:
    return float(np.mean([float(r[value]) for r in rs])) if rs else float("nan")


def _length(r: Record) -> int:
    return int(r["categories"]["length"])


def bound_records(records: Sequence[Record], chance: float = 0.25) -> list[dict[str, Any]]:
    """Each record scored with its best accuracy under forgetting: 1 if its needle is kept, else chance."""
    return [{**r, "correct": 1.0 if r["kept"] else chance} for r in records]


def summary(results: Mapping[str, Sequence[Record]], bound_of: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{variant: {accuracy, kept/dropped-needle accuracy, accuracy per length, n}}, the control's
    bound (overall and per length), and ``extra``."""
    out: dict[str, Any] = dict(extra or {})
    bound = bound_records(results[bound_of])
    rows = {**{name: list(rs) for name, rs in results.items()}, "control bound": bound}
    lengths = sorted({_length(r) for r in bound})
    for name, rs in rows.items():
        out[name] = {
            "accuracy": _acc(rs), "accuracy_needle_kept": _acc([r for r in rs if r["kept"]]),
            "accuracy_needle_dropped": _acc([r for r in rs if not r["kept"]]), "n": len(rs),
            "by_length": {str(n): _acc([r for r in rs if _length(r) == n]) for n in lengths},
        }
    out["control_bound"] = out["control bound"]["accuracy"]
    return out


def table(s: Mapping[str, Any], variants: Sequence[str]) -> str:
    """Fixed-width results table (accuracy in %), one column per video length."""
    pct = lambda x: "  -  " if x != x else f"{100 * x:5.1f}"  # noqa: E731  (NaN -> "-")
    lengths = list(s[variants[0]]["by_length"])
    head = f"{'variant':<16}{'all':>7}{'kept':>7}{'dropped':>9}" + "".join(f"{n + ' s':>9}" for n in lengths) + f"{'n':>6}"
    rows = [head]
    for v in (*variants, "control bound"):
        r = s[v]
        rows.append(f"{v:<16}{pct(r['accuracy']):>7}{pct(r['accuracy_needle_kept']):>7}"
                    f"{pct(r['accuracy_needle_dropped']):>9}" + "".join(f"{pct(r['by_length'][n]):>9}" for n in lengths)
                    + f"{r['n']:>6}")
    rows.append("(kept/dropped: the needle's frame survives/does not survive temporal forgetting; "
                "control bound = kept needles + chance on the rest)")
    return "\n".join(rows)


def _grid(records: Sequence[Record]) -> tuple[list[str], list[str], np.ndarray]:
    # accuracy_grid counts bool(correct); the bound needs fractional scores, so average directly.
    depths, lengths, _ = accuracy_grid(records)
    grid = np.full((len(depths), len(lengths)), np.nan)
    for i, d in enumerate(depths):
        for j, n in enumerate(lengths):
            v = [float(r["correct"]) for r in records if r["categories"] == {"depth": d, "length": n}]
            if v:
                grid[i, j] = np.mean(v)
    return depths, lengths, grid


def write_heatmaps(results: Mapping[str, Sequence[Record]], path: str | Path, *, bound_of: str) -> Path:
    """PNG: one depth x length heatmap per variant plus the control's bound."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    panels = [(name, _grid(rs)) for name, rs in results.items()]
    panels.append(("control bound (kept frames)", _grid(bound_records(results[bound_of]))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 3.8), squeeze=False, layout="constrained")
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
