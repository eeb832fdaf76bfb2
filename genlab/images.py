"""Image grids with numpy alone (no torchvision): float images in [0, 1] -> one uint8 picture."""

from __future__ import annotations

import numpy as np
import torch


def grid(images: torch.Tensor | np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) floats in [0, 1] -> uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad), white gaps."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32).reshape(len(images), *np.shape(images)[-2:])
    n, h, w = images.shape
    rows = -(-n // nrow)
    out = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def side_by_side(originals: torch.Tensor, reconstructions: torch.Tensor, nrow: int = 8) -> np.ndarray:
    """Rows alternate: a row of originals, then the same images reconstructed."""
    pairs = []
    for start in range(0, len(originals), nrow):
        pairs += [originals[start:start + nrow], reconstructions[start:start + nrow]]
    return grid(torch.cat(pairs), nrow=nrow)
