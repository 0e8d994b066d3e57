"""anyres_max_9 image-side geometry (design §1.4): best resolution, pinpoints, crops; golden values by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hourllava_jax.data.anyres import anyres_grid_shape, anyres_image_crops, expand_to_square, grid_pinpoints, resize_and_pad_image


# ------------------------------------------------------------------ best resolution


@pytest.mark.parametrize("size,want", [
    ((384, 384), (1, 1)),    # exact fit, no waste
    ((100, 50), (1, 1)),     # every candidate holds it whole; 384x384 wastes least
    ((800, 600), (3, 2)),    # needs w >= 800 -> 1152 and h >= 600 -> 768
    ((300, 1000), (1, 3)),   # 384 x 1152: scale 1.152 keeps all 300,000 pixels
    ((4000, 3000), (6, 5)),  # all downscale; w = 2304 gives scale .576 -> 2304x1728; h 1920 wastes least
])
def test_grid_shape_by_hand(size, want):
    assert anyres_grid_shape(size) == want


def test_pinpoints():
    p = grid_pinpoints()
    assert len(p) == 36 and p[0] == (384, 384) and p[1] == (384, 768) and p[-1] == (2304, 2304)


# ------------------------------------------------------------------ preprocessing geometry


def test_resize_and_pad_and_crops():
    img = Image.new("RGB", (800, 600), (255, 255, 255))
    padded = resize_and_pad_image(img, (1152, 768))
    # scale_h 1.28 < scale_w 1.44: height fills 768, width ceil(800*1.28) = 1024, pasted at x = 64.
    arr = np.asarray(padded)
    assert arr.shape == (768, 1152, 3)
    assert arr[:, :64].max() == 0 and arr[:, 1088:].max() == 0 and arr[:, 64:1088].min() == 255
    crops, (npw, nph) = anyres_image_crops(img)
    assert (npw, nph) == (3, 2) and len(crops) == 7 and all(c.size == (384, 384) for c in crops)
    # crop 0 (top-left) starts with the black band; crop 1 (top-middle) is all white.
    assert np.asarray(crops[1])[:, :64].max() == 0 and np.asarray(crops[2]).min() == 255


def test_expand_to_square():
    img = Image.new("RGB", (300, 100), (10, 20, 30))
    sq = np.asarray(expand_to_square(img))
    assert sq.shape == (300, 300, 3)
    assert (sq[:100] == 127).all() and (sq[200:] == 127).all() and (sq[100:200] == [10, 20, 30]).all()
