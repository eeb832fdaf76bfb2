"""genlab.pictures' grids: where each image lands, the white gaps, and the rows of side_by_side."""

from __future__ import annotations

import numpy as np
import torch

from genlab import pictures


def test_grid_places_images_row_major_with_white_gaps():
    images = torch.stack([torch.full((1, 3, 3), v) for v in (0.0, 0.5, 1.0)])  # black, grey, white
    out = pictures.grid(images, nrow=2, pad=1)
    assert out.dtype == np.uint8 and out.shape == (2 * 4 + 1, 2 * 4 + 1)
    assert (out[1:4, 1:4] == 0).all() and (out[1:4, 5:8] == 128).all()  # first row: images 0 and 1
    assert (out[5:8, 1:4] == 255).all()  # second row: image 2
    assert (out[0] == 255).all() and (out[:, 4] == 255).all()  # the gaps are white
    assert (out[5:8, 5:8] == 255).all()  # the missing fourth image leaves white


def test_grid_clips_and_takes_numpy():
    out = pictures.grid(np.array([[[-1.0, 2.0]]], np.float32), nrow=1, pad=0)
    assert out.tolist() == [[0, 255]]


def test_side_by_side_alternates_rows_of_originals_and_reconstructions():
    originals, recons = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    out = pictures.side_by_side(originals, recons, nrow=2)  # rows: 2 originals, 2 recons, 1 original, 1 recon
    rows = [out[2 + r * 4: 4 + r * 4, 2:4] for r in range(4)]
    assert [int(r.mean()) for r in rows] == [0, 255, 0, 255]
