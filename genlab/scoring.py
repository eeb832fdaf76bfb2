"""Sample quality in a feature classifier's space: the real test split's statistics (cached on disk) and the
`Scorer` that compares images with them (FID-proxy, KID-proxy, precision/recall/density/coverage, class coverage,
IS-proxy). Finding or training the classifier itself is `genlab.train.classifier.get_scorer`'s job.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab import data, files, metrics
from genlab.models.classifier import FEATURE_DIM, Classifier

FEATURE_BATCH = 1000  # images per classifier forward pass
MIN_SAMPLES = metrics.min_samples_for_fid(FEATURE_DIM)  # 129 images for a full-rank feature covariance


def cache_dir() -> Path:
    """``$GENLAB_CACHE_DIR`` or ``<project root>/.cache/genlab`` (created)."""
    path = Path(os.environ.get("GENLAB_CACHE_DIR") or data.PROJECT_ROOT / ".cache" / "genlab")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RealStats:
    """The real test split in the classifier's feature space (what every score compares against)."""

    features: np.ndarray  # (N, 128) float32
    mu: np.ndarray        # (128,) float64
    sigma: np.ndarray     # (128, 128) float64
    radii: np.ndarray     # (N,) float32: distance to the k-th nearest real neighbour (precision, density, coverage)


@torch.no_grad()
def extract_features(model: Classifier, images: torch.Tensor, device: torch.device | str = "cpu",
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) float in [0, 1] -> features (N, 128) float32 and logits (N, 10) float32."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    model.eval()
    feats, logits = [], []
    for start in range(0, len(images), FEATURE_BATCH):
        h, out = model.features_and_logits(images[start:start + FEATURE_BATCH].to(device).float())
        feats.append(h.float().cpu())
        logits.append(out.float().cpu())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


@dataclass
class Scorer:
    """Scores images against the real test split with one classifier (its run id goes in param ``fid_classifier``)."""

    run_id: str
    model: Classifier
    device: torch.device
    real: RealStats
    seed: int = 0  # for the KID subsets

    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return extract_features(self.model, images, self.device)

    def score(self, images: torch.Tensor, prefix: str = "", kid: bool = True, prdc: bool = True,
              ) -> dict[str, float]:
        """``fid_proxy, kid_proxy, kid_proxy_std, precision, recall, density, coverage, class_coverage, is_proxy``
        of ``images`` (N >= 129, float in [0, 1]) against the real test split, keys prefixed by ``prefix``.
        ``kid=False`` leaves out the two KID values, ``prdc=False`` the four k-NN ones: of a GAN evaluation of 5,000
        samples, generation included, their 100 subsets are a third and the k-NN passes a fifth."""
        feats, logits = self.features(_checked(images))
        mu, sigma = metrics.feature_stats(feats)
        out = {"fid_proxy": metrics.frechet_distance(mu, sigma, self.real.mu, self.real.sigma)}
        if kid:
            out["kid_proxy"], out["kid_proxy_std"] = metrics.kid(self.real.features, feats, seed=self.seed)
        if prdc:
            out |= metrics.prdc(self.real.features, feats, real_radii=self.real.radii)
        out |= {"class_coverage": metrics.class_coverage(logits), "is_proxy": metrics.is_proxy(logits)}
        return {f"{prefix}{k}": v for k, v in out.items()}

    def fid_proxy(self, images: torch.Tensor) -> float:
        """``fid_proxy`` of ``images`` alone (as ``score`` computes it), for an image set whose other scores
        nobody reads: it skips the k-NN and KID passes."""
        feats, _ = self.features(_checked(images))
        return metrics.frechet_distance(*metrics.feature_stats(feats), self.real.mu, self.real.sigma)


def _checked(images: torch.Tensor) -> torch.Tensor:
    """``images`` as a tensor, or ValueError (one line) unless there are enough of them, finite, in [0, 1]."""
    images = torch.as_tensor(images)
    if len(images) < MIN_SAMPLES:
        raise ValueError(f"sample-quality metrics need at least {MIN_SAMPLES} images (a full-rank {FEATURE_DIM}-d"
                         f" feature covariance), got {len(images)}")
    bad = int((~torch.isfinite(images.reshape(len(images), -1))).any(dim=1).sum())
    if bad:
        raise ValueError(f"{bad} of {len(images)} images to score are NaN/inf")
    low, high = float(images.min()), float(images.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise ValueError(f"images to score must be in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return images


def real_stats(run_id: str, model: Classifier, splits: data.Splits, device: torch.device | str = "cpu") -> RealStats:
    """Features, mean, covariance and k-NN radii of the test split: read from the cache, or computed and cached."""
    path = cache_dir() / f"real-stats-{run_id}-{splits.digest('test')}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError):  # a missing or damaged cache is recomputed
        with np.load(path, allow_pickle=False) as cached:
            stats = RealStats(cached["features"], cached["mu"], cached["sigma"], cached["radii"])
        if stats.features.shape == (len(splits.test_x), FEATURE_DIM) and np.isfinite(stats.sigma).all():
            return stats
    feats, _ = extract_features(model, data.to_float(splits.test_x), device)
    mu, sigma = metrics.feature_stats(feats, "real test images")
    stats = RealStats(feats, mu, sigma, metrics.knn_radii(feats))
    with files.atomic_write(path) as f:  # a concurrent reader never sees half a file
        np.savez(f, features=stats.features, mu=stats.mu, sigma=stats.sigma, radii=stats.radii)
    return stats
