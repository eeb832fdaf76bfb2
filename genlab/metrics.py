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


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, max_iter: int = 1000) -> float:
    """Test accuracy (fraction) of a multinomial logistic regression fitted on standardised train features:
    how linearly readable the labels are from a representation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(np.asarray(train_features, dtype=np.float64), np.asarray(train_labels))
    return float(probe.score(np.asarray(test_features, dtype=np.float64), np.asarray(test_labels)))
