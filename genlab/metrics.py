"""Metrics as pure functions on arrays: latent statistics, and sample quality in a classifier's feature space.

What is fitted to features (linear probes, AUROC, CKA) is genlab.linear_probes; whether a run converged is
genlab.convergence."""

from __future__ import annotations

import math

import numpy as np
import torch

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


# ---------------------------------------------------------------- the latent space's shape (P1Q2)

# A unit's mean KL over the images bounds what it tells about them: E_x KL(q(z_d|x) || p(z_d)) = I(x; z_d) +
# KL(q(z_d) || p(z_d)). Below 0.01 nats (1/70 of a bit per image) a decoder can get nothing from it. Unlike
# ACTIVE_UNIT_THRESHOLD (the variance of E_q[z|x]) it sees the posterior's own noise: a mean that moves by 0.1
# under a posterior of std 1 passes the variance test, yet carries about 0.005 nats.
KL_ACTIVE_THRESHOLD = 0.01
# Squared bandwidths of mmd2_unbiased's kernel, in units of the latent size D: h^2 = c * D. Two draws of N(0, I_D)
# are 2D apart on average (squared), so c = 1 puts the prior's typical pair at exp(-1); c = 0.2 and 5 look at finer
# (codes spread into clusters with holes between them) and coarser (a shifted or rescaled cloud) scales.
MMD_SCALES = (0.2, 1.0, 5.0)


def kl_active_units(kl_per_dim: np.ndarray, threshold: float = KL_ACTIVE_THRESHOLD) -> int:
    """Number of latent dimensions whose mean KL per image, ``kl_per_dim`` (D,) in nats (losses.kl_per_dim
    averaged over the images), exceeds ``threshold``."""
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    if kl.ndim != 1 or not np.isfinite(kl).all():
        raise ValueError(f"kl_active_units needs a finite (D,) array, got shape {kl.shape}")
    return int((kl > threshold).sum())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, scales: tuple[float, ...] = MMD_SCALES) -> float:
    """The unbiased estimate (a U-statistic: the within-sample sums leave out i = j; Gretton et al. 2012) of the
    squared maximum mean discrepancy between the samples ``x`` (N, D) and ``y`` (M, D), with the kernel
    k(a, b) = mean over c in ``scales`` of exp(-|a - b|^2 / (2 c D)). 0 in expectation when both come from one
    distribution (an estimate can then be slightly negative), at most 2.

    The bandwidths are fixed multiples of the latent size, not chosen from the data (median heuristic): every run
    of one latent size is measured with the same kernel, so the numbers compare across runs. Memory is a few
    N x M float32 matrices: callers subsample."""
    a = torch.from_numpy(np.asarray(check_features(x, "samples (x)"), dtype=np.float32))
    b = torch.from_numpy(np.asarray(check_features(y, "samples (y)"), dtype=np.float32))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"mmd2_unbiased: x has {a.shape[1]} dimensions, y {b.shape[1]}")
    dim = a.shape[1]

    def kernel_sums(p: torch.Tensor, q: torch.Tensor) -> tuple[float, float]:
        # float32 kernel values (half the time of float64), float64 sums: the MMD is a small difference of sums
        d2 = torch.cdist(p, q).pow_(2)
        k = torch.zeros_like(d2)
        for c in scales:
            k.add_(torch.exp(d2 / (-2.0 * c * dim)))
        k.div_(len(scales))
        return float(k.sum(dtype=torch.float64)), float(k.diagonal().sum(dtype=torch.float64))

    (xx, xx_diag), (yy, yy_diag), (xy, _) = kernel_sums(a, a), kernel_sums(b, b), kernel_sums(a, b)
    m, n = len(a), len(b)
    return (xx - xx_diag) / (m * (m - 1)) + (yy - yy_diag) / (n * (n - 1)) - 2 * xy / (m * n)


def interp_smoothness(paths: np.ndarray) -> float:
    """How evenly images change along straight lines in the latent space: ``paths`` (P, S, F) holds the features
    of the S images decoded at evenly spaced points of each of P lines. Per line, the largest step between
    consecutive images (Euclidean, in feature space) over the mean step; the mean over the lines. 1 when every
    step is the same size; S - 1 when the whole change happens in one step. A line whose images do not change
    at all (mean step 0) has no ratio and is left out; NaN when every line is."""
    paths = np.asarray(paths, dtype=np.float64)
    if paths.ndim != 3 or paths.shape[1] < 2 or not np.isfinite(paths).all():
        raise ValueError(f"interp_smoothness needs finite (lines, steps >= 2, features), got shape {paths.shape}")
    steps = np.linalg.norm(np.diff(paths, axis=1), axis=2)  # (P, S - 1)
    mean = steps.mean(axis=1)
    moving = mean > 0
    return float((steps.max(axis=1)[moving] / mean[moving]).mean()) if moving.any() else math.nan


def path_length(start: np.ndarray, end: np.ndarray, epsilon: float) -> float:
    """Perceptual path length (Karras et al. 2019, StyleGAN, section 3): the mean over sampled points of a path of
    ``||f(t + epsilon) - f(t)||^2 / epsilon^2``, ``start`` and ``end`` (N, F) holding the embeddings f at t and
    t + epsilon of N points. As in their implementation, the values outside the 1st-99th percentiles are left out
    before the mean, so that a few points where the decoder changes abruptly do not decide it. Lower: the images
    change less, or more evenly, along the paths (an uneven change costs more than an even one of the same total,
    the squared step being convex)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    if start.shape != end.shape or start.ndim != 2 or len(start) == 0 or epsilon <= 0:
        raise ValueError(f"path_length needs two (N, F) arrays of one shape and epsilon > 0, got {start.shape}, "
                         f"{end.shape}, {epsilon}")
    d = ((end - start) ** 2).sum(axis=1) / epsilon ** 2
    low, high = np.percentile(d, [1, 99])
    return float(d[(d >= low) & (d <= high)].mean())


# ---------------------------------------------------------------- sample quality (in a classifier's feature space)
#
# Libraries first: torchmetrics' FID takes eigvals(S1 @ S2), which drifts (and goes complex) when a covariance is
# near-singular, and recomputes the real statistics on every call; its KID draws subsets from torch's global RNG.
# `frechet_distance` below uses the symmetric form on cached statistics, and `kid` a seeded generator; both are
# cross-checked against torchmetrics (and scipy) in tests/test_metrics.py. `prdc` is the reference for
# precision/recall/density/coverage, but it materialises three N x N float64 matrices and argpartitions them
# (and it prints); `prdc` below streams the same comparisons in row chunks with torch, which takes about half the
# CPU time at 10k x 10k (docs/results.md), and matches the package in a test.

KID_SUBSETS = 100      # Binkowski et al. 2018: 100 subsets of 1000
KID_SUBSET_SIZE = 1000
NEAREST_K = 3          # Kynkaanniemi et al. 2019, Naeem et al. 2020
CLASS_SHARE = 0.02     # a class counts as present when it gets at least 2 % of the samples


def check_features(features: np.ndarray, what: str = "samples", min_samples: int = 2) -> np.ndarray:
    """Validate an (N, D) feature array: finite, enough rows. Raises ValueError with a one-line reason."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features of the {what} must be (N, D), got shape {features.shape}")
    bad = int((~np.isfinite(features)).any(axis=1).sum())
    if bad:
        raise ValueError(f"non-finite features for {bad} of {len(features)} {what} (NaN/inf images?)")
    if len(features) < min_samples:
        raise ValueError(f"need at least {min_samples} {what}, got {len(features)}")
    return features


def min_samples_for_fid(feature_dim: int) -> int:
    """Rows needed for a full-rank (D x D) sample covariance: D + 1."""
    return feature_dim + 1


def feature_stats(features: np.ndarray, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64. Needs N >= D + 1 rows (a full-rank covariance)."""
    features = check_features(features, what, min_samples_for_fid(np.shape(features)[-1]))
    f = features.astype(np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64 (squared feature units).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2): S1^1/2 S2 S1^1/2 is symmetric PSD and has
    the eigenvalues of S1 S2, so two `eigh` calls replace `sqrtm` (no complex parts, fine with singular S1 or S2).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape} differ")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"frechet_distance: {name} is not finite")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical inputs


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0, normalise: bool = True) -> tuple[float, float]:
    """Kernel distance: mean and std over random subsets of the unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / D + 1)^3 (Binkowski et al. 2018). ``subset_size`` shrinks to the smaller sample.

    The cubic kernel is not scale-invariant: with ``normalise`` both sets are divided by the RMS value of the real
    features first, so x.y / D is of order 1 as with Inception features (ReLU features of the genlab classifier are
    ~10x larger, and the kernel then amplifies sampling noise by ~1e3). ``normalise=False``: torchmetrics' kernel.
    """
    real = check_features(real, "real samples")
    fake = check_features(fake, "samples")
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(np.mean(np.square(real, dtype=np.float64)))) if normalise else 1.0
    if not scale > 0:
        raise ValueError("kid: the real features are all zero")
    r = torch.from_numpy(np.asarray(real, np.float32) / np.float32(scale))
    f = torch.from_numpy(np.asarray(fake, np.float32) / np.float32(scale))
    gamma = 1.0 / real.shape[1]

    def kernel_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        # float32 kernel values (relative error ~1e-6 each), float64 sums: the MMD is a small difference of sums
        k = (a @ b.T).mul_(gamma).add_(1.0).pow_(3)
        return float(k.sum(dtype=torch.float64)), float(k.diagonal().sum(dtype=torch.float64))

    values = np.empty(subsets)
    for s in range(subsets):
        x = r[torch.from_numpy(rng.choice(len(real), m, replace=False))]
        y = f[torch.from_numpy(rng.choice(len(fake), m, replace=False))]
        xx, xx_diag = kernel_sums(x, x)
        yy, yy_diag = kernel_sums(y, y)
        xy, _ = kernel_sums(x, y)
        values[s] = (xx - xx_diag + yy - yy_diag) / (m * (m - 1)) - 2 * xy / (m * m)
    return float(values.mean()), float(values.std())


def _distance_chunks(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024):
    """Yield (start, Euclidean distances of a[start:start+chunk] to all of b) without an N x M matrix in memory."""
    for start in range(0, len(a), chunk):
        yield start, torch.cdist(a[start:start + chunk], b)


def knn_radii(features: np.ndarray, k: int = NEAREST_K) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (the k-NN ball radius of Kynkaanniemi et al. 2019)."""
    features = check_features(features, "samples", k + 1)
    x = torch.from_numpy(np.asarray(features, np.float32))
    radii = torch.empty(len(x))
    for start, d in _distance_chunks(x, x):
        radii[start:start + len(d)] = d.topk(k + 1, dim=1, largest=False).values[:, k]  # index 0 is the row itself
    return radii.numpy()


def prdc(real: np.ndarray, fake: np.ndarray, k: int = NEAREST_K, real_radii: np.ndarray | None = None,
         ) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) with k-NN balls,
    as in the ``prdc`` package (strict ``<``). ``real_radii`` = knn_radii(real, k), if cached."""
    real = check_features(real, "real samples", k + 1)
    fake = check_features(fake, "samples", k + 1)
    r_real = torch.from_numpy(np.asarray(real_radii if real_radii is not None else knn_radii(real, k), np.float32))
    r_fake = torch.from_numpy(knn_radii(fake, k))
    r, f = torch.from_numpy(np.asarray(real, np.float32)), torch.from_numpy(np.asarray(fake, np.float32))
    fake_in_real_balls = torch.zeros(len(f), dtype=torch.int64)  # how many real balls hold each fake sample
    real_covered_by_fake_balls = torch.zeros(len(r), dtype=torch.bool)
    real_ball_holds_a_fake = torch.zeros(len(r), dtype=torch.bool)
    for start, d in _distance_chunks(r, f):
        radii = r_real[start:start + len(d), None]
        fake_in_real_balls += (d < radii).sum(dim=0)
        real_covered_by_fake_balls[start:start + len(d)] = (d < r_fake[None, :]).any(dim=1)
        real_ball_holds_a_fake[start:start + len(d)] = d.min(dim=1).values < radii[:, 0]
    return {"precision": float((fake_in_real_balls > 0).double().mean()),
            "recall": float(real_covered_by_fake_balls.double().mean()),
            "density": float(fake_in_real_balls.double().mean() / k),
            "coverage": float(real_ball_holds_a_fake.double().mean())}


def class_coverage(logits: np.ndarray, threshold: float = CLASS_SHARE) -> float:
    """Fraction of the classes to which the classifier assigns (argmax) at least ``threshold`` of the samples."""
    logits = check_features(logits, "samples", 1)
    shares = np.bincount(logits.argmax(axis=1), minlength=logits.shape[1]) / len(logits)
    return float((shares >= threshold).mean())


def is_proxy(logits: np.ndarray) -> float:
    """Inception-score analogue: exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x). 1 (one class or
    uniform guesses) .. n_classes (confident and balanced)."""
    logits = check_features(logits, "samples", 1)
    log_p = torch.from_numpy(np.asarray(logits, np.float64)).log_softmax(dim=1)
    log_marginal = log_p.exp().mean(dim=0).log()
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
    return float(kl.mean().exp())
