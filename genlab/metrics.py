"""Metrics as pure functions on arrays: latent statistics now, sample quality (FID-proxy and friends) next."""

from __future__ import annotations

import numpy as np

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016


def active_units(z_means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions whose variance over the data of E_q[z|x] exceeds ``threshold``."""
    z_means = np.asarray(z_means, dtype=np.float64)
    if z_means.ndim != 2 or len(z_means) < 2:
        raise ValueError(f"active_units needs an (N>=2, D) array, got shape {z_means.shape}")
    return int((z_means.var(axis=0) > threshold).sum())


def sample_diversity(images: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between images (N, ...) with pixels in [0, 1], over all N(N-1)/2 pairs.

    In pixel units (L2 over the 784 grey values). Falls towards 0 when a generator collapses onto a few modes;
    compare it with the same figure on real images.
    """
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if len(flat) < 2:
        raise ValueError(f"sample_diversity needs at least 2 images, got {len(flat)}")
    sq = (flat ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    n = len(flat)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())
