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
