"""The model side of an anyres image's token grid (design §1.4), shared by the host plan and the
reference: which rows/columns survive unpadding, the base tokens' position ids, and the newlines
of a decayed block. The crops' g x g feature grids form an (nph*g, npw*g) grid; padding is removed
by the original aspect (``unpad``). Sizes are (width, height), as PIL reports them.
"""

from __future__ import annotations

import numpy as np

Size = tuple[int, int]  # (width, height)


def unpad_slices(cur_h: int, cur_w: int, original_size: Size) -> tuple[slice, slice]:
    """Row/column slices removing the padding of a (cur_h, cur_w) grid (LLaVA-NeXT ``unpad_image``)."""
    ow, oh = original_size
    if ow / oh > cur_w / cur_h:  # padding was added above and below
        new_h = int(oh * (cur_w / ow))
        pad = (cur_h - new_h) // 2
        return slice(pad, cur_h - pad), slice(0, cur_w)
    new_w = int(ow * (cur_h / oh))
    pad = (cur_w - new_w) // 2
    return slice(0, cur_h), slice(pad, cur_w - pad)


def torch_linspace_f32(end: float, steps: int) -> np.ndarray:
    """``torch.linspace(0, end, steps)`` in float32, bit for bit (torch fills the first half from
    the start and the second from the end, with fused multiply-adds); the release rounds it to
    pick base-token ids, and a float64 linspace rounds differently for e.g. end = 7, 15, 53."""
    step = np.float64(np.float32(np.float32(end) / np.float32(max(steps - 1, 1))))
    i = np.arange(steps, dtype=np.float64)
    lo = (step * i).astype(np.float32)
    hi = (np.float64(np.float32(end)) - step * (steps - 1 - i)).astype(np.float32)
    return np.where(i < steps // 2, lo, hi)


def base_position_ids(h: int, w: int, g: int) -> np.ndarray:
    """int32[g, g]: each base token reuses the id of its nearest grid token,
    rows = round(linspace(0, h-1, g)), cols = round(linspace(0, w-1, g)) (round half to even)."""
    rows = np.round(torch_linspace_f32(h - 1, g)).astype(np.int64)
    cols = np.round(torch_linspace_f32(w - 1, g)).astype(np.int64)
    return (rows[:, None] * w + cols[None, :]).astype(np.int32)


def insert_row_newlines(ids: np.ndarray, w: int) -> np.ndarray:
    """Sorted grid ids -> the same with -1 (a newline) wherever the row changes, and at the end."""
    out = []
    for n, i in enumerate(ids):
        if n and i // w != ids[n - 1] // w:
            out.append(-1)
        out.append(int(i))
    out.append(-1)
    return np.asarray(out, np.int64)


__all__ = ["Size", "base_position_ids", "insert_row_newlines", "torch_linspace_f32", "unpad_slices"]
