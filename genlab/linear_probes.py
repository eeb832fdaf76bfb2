"""Linear read-outs of features, as pure functions on arrays: what a linear model fitted to one network's features
recovers (class, real vs generated, the image itself), how it is scored (AUROC), and how alike two networks'
features are (linear CKA, PCA). P1Q2's latent probe and P2Q2's encoder-vs-discriminator probes use them."""

from __future__ import annotations

import math

import numpy as np

from genlab.metrics import check_features


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                          test_labels: np.ndarray, max_iter: int = 1000, seed: int | None = None,
                          cast_float64: bool = True, quiet_unconverged: bool = False) -> float:
    """Test accuracy (fraction in [0, 1]) of a multinomial logistic regression (lbfgs, at most ``max_iter``
    iterations, ``random_state=seed``) fitted on standardised train features: how linearly readable the labels
    are from a representation (P1Q2's ``z_mean``, P2Q2's encoder and discriminator features).

    ``cast_float64=False`` standardises the features in their own dtype (float32 features give slightly different
    numbers). ``quiet_unconverged`` silences sklearn's ConvergenceWarning, for a caller whose fixed iteration budget
    is part of the result."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) if cast_float64 else np.asarray(x)

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        if quiet_unconverged:
            warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(features(train_features), np.asarray(train_labels))
    return float(probe.score(features(test_features), np.asarray(test_labels)))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 positive, 0 negative): the probability that
    a random positive scores above a random negative, ties counting one half (the Mann-Whitney U statistic over
    n_pos * n_neg, with average ranks for tied scores). ValueError without both classes or with non-finite scores."""
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    if scores.shape != labels.shape or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"auroc needs one 0/1 label per score, got {scores.shape} scores, {labels.shape} labels")
    if not np.isfinite(scores).all():
        raise ValueError("auroc: non-finite scores")
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes, got {n_pos} positive and {n_neg} negative")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # tied scores share the mean of the ranks they span, so a tie between classes counts one half
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two representations of the same N inputs,
    (N, D1) and (N, D2): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), in [0, 1]; 1 for the same representation
    up to an orthogonal transform and an isotropic scaling. NaN when either is constant."""
    x = check_features(np.asarray(x, dtype=np.float64), "inputs (x)")
    y = check_features(np.asarray(y, dtype=np.float64), "inputs (y)")
    if len(x) != len(y):
        raise ValueError(f"linear_cka needs the same inputs in both, got {len(x)} and {len(y)} rows")
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    # the feature-space form: D x D products, never the N x N Gram matrices
    cross = np.linalg.norm(y.T @ x) ** 2
    norms = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norms) if norms > 0 else math.nan


RECON_CLAMP = 1e-4  # predicted grey values kept in [1e-4, 1 - 1e-4]: a linear decoder can overshoot [0, 1]


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in the train set's standard units (a constant feature stays 0 instead of dividing by 0)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def linear_recon_nats(train_features: np.ndarray, train_images: np.ndarray, test_features: np.ndarray,
                      test_images: np.ndarray, ridge: float = 1e-2) -> float:
    """How much of the image a frozen representation keeps, read by a linear decoder: ridge regression from
    standardised features to the 784 grey values (penalty ``ridge`` x N on the weights, not on the intercept),
    fitted on the train pairs; its test predictions, clamped to [RECON_CLAMP, 1 - RECON_CLAMP], scored as the
    Bernoulli cross-entropy summed over the pixels, mean nats per test image (lower keeps more)."""
    x_train, x_test = _standardise(np.asarray(train_features, np.float64), np.asarray(test_features, np.float64))
    y_train = np.asarray(train_images, np.float64).reshape(len(x_train), -1)
    y_test = np.asarray(test_images, np.float64).reshape(len(x_test), -1)
    intercept = y_train.mean(axis=0)  # the features are centred, so the intercept is the mean image
    gram = x_train.T @ x_train + ridge * len(x_train) * np.eye(x_train.shape[1])
    weights = np.linalg.solve(gram, x_train.T @ (y_train - intercept))
    p = np.clip(x_test @ weights + intercept, RECON_CLAMP, 1 - RECON_CLAMP)
    nats = -(y_test * np.log(p) + (1 - y_test) * np.log1p(-p)).sum(axis=1)
    return float(nats.mean())


def linear_probe_auroc(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                       test_labels: np.ndarray, max_iter: int = 1000, seed: int | None = None) -> float:
    """Test AUROC of a binary logistic regression (lbfgs, at most ``max_iter`` iterations) fitted on standardised
    train features: how linearly separable the two classes (0/1 labels) are in a representation (P2Q2: real
    against generated images). Scored on its decision function, so no threshold is chosen."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train, x_test = _standardise(np.asarray(train_features, np.float64), np.asarray(test_features, np.float64))
    probe = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget, as the class probes have
        probe.fit(x_train, np.asarray(train_labels))
    return auroc(probe.decision_function(x_test), np.asarray(test_labels))


def pca_project(train_features: np.ndarray, test_features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sets projected on the first ``k`` principal axes of the centred train features (covariance PCA,
    fitted on train only): a representation cut to ``k`` numbers, for probes that compare equal widths."""
    train = np.asarray(train_features, np.float64)
    mean = train.mean(axis=0)
    centred = train - mean
    k = min(k, centred.shape[1])
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    axes = eigenvectors[:, np.argsort(eigenvalues)[::-1][:k]]
    return centred @ axes, (np.asarray(test_features, np.float64) - mean) @ axes
