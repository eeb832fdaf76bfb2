import numpy as np
import pytest

from genlab import convergence, linear_probes, metrics


def test_active_units_on_constructed_case():
    rng = np.random.default_rng(0)
    z = np.zeros((1000, 4))
    z[:, 0] = rng.normal(0, 1.0, 1000)   # variance 1: active
    z[:, 1] = rng.normal(0, 0.3, 1000)   # variance 0.09: active
    z[:, 2] = rng.normal(0, 0.05, 1000)  # variance 0.0025: inactive
    assert metrics.active_units(z) == 2
    with pytest.raises(ValueError):
        metrics.active_units(np.zeros(3))


# ---------------------------------------------------------------- the latent space's shape (P1Q2)

def test_kl_active_units_counts_dimensions_above_the_threshold():
    assert metrics.kl_active_units(np.array([2.0, 0.3, 0.011, 0.009, 0.0])) == 3
    assert metrics.kl_active_units(np.array([2.0, 0.3]), threshold=1.0) == 1
    for bad in (np.zeros((2, 2)), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError):
            metrics.kl_active_units(bad)


def test_mmd2_is_unbiased_for_one_distribution_and_large_for_shifted_or_scaled_ones():
    rng = np.random.default_rng(0)
    # zero in expectation: many small samples, where the biased (V-statistic) estimate would sit near 1/n above 0
    same = [metrics.mmd2_unbiased(rng.normal(size=(20, 3)), rng.normal(size=(20, 3))) for _ in range(400)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) and min(same) < 0
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    assert abs(metrics.mmd2_unbiased(x, y)) < 1e-3
    shifted, scaled = metrics.mmd2_unbiased(x + 1.0, y), metrics.mmd2_unbiased(3.0 * x, y)
    assert shifted > 0.1 and scaled > 0.1
    assert metrics.mmd2_unbiased(y, x + 1.0) == pytest.approx(shifted)  # symmetric
    assert metrics.mmd2_unbiased(x + 100.0, y) > shifted  # farther apart, larger
    # two point masses far apart: each within-sample kernel is 1, the cross kernel 0: the maximum, 2
    assert metrics.mmd2_unbiased(np.zeros((5, 8)), np.full((5, 8), 100.0)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="dimensions"):
        metrics.mmd2_unbiased(x, y[:, :4])


def test_interp_smoothness_is_one_for_even_steps_and_grows_with_a_jump():
    t = np.linspace(0, 1, 16)[None, :, None]
    even = np.concatenate([t * [[1.0, 2.0]], 3 + t * [[-1.0, 0.5]]])  # two lines, evenly spaced points
    assert metrics.interp_smoothness(even) == pytest.approx(1.0)
    jump = np.zeros((1, 16, 2))
    jump[0, 8:] = 1.0  # the whole change in one of 15 steps
    assert metrics.interp_smoothness(jump) == pytest.approx(15.0)
    still = np.zeros((1, 16, 2))  # a line whose images never change has no ratio: left out
    assert metrics.interp_smoothness(np.concatenate([even, still])) == pytest.approx(1.0)
    assert np.isnan(metrics.interp_smoothness(still))
    with pytest.raises(ValueError):
        metrics.interp_smoothness(np.zeros((16, 2)))


# ---------------------------------------------------------------- sample-quality metrics

def random_gaussian(rng, d, n):
    """Well-conditioned mean and covariance, and n samples from them."""
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    sigma = a @ a.T + 0.5 * np.eye(d)
    mu = rng.normal(size=d)
    return mu, sigma, rng.multivariate_normal(mu, sigma, size=n)


def test_frechet_distance_matches_scipy_sqrtm_is_symmetric_and_zero_on_identical_inputs():
    import scipy.linalg

    rng = np.random.default_rng(0)
    for d in (2, 16, 64):
        mu1, s1, _ = random_gaussian(rng, d, 0)
        mu2, s2, _ = random_gaussian(rng, d, 0)
        direct = ((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2)
                  - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
        ours = metrics.frechet_distance(mu1, s1, mu2, s2)
        assert isinstance(ours, float)
        assert abs(ours - direct) / direct < 1e-6
        assert abs(metrics.frechet_distance(mu2, s2, mu1, s1) - ours) / ours < 1e-9
        assert metrics.frechet_distance(mu1, s1, mu1, s1) < 1e-9 * np.trace(s1)


def test_frechet_distance_is_stable_with_singular_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 32))  # rank 3 in 32 dims
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    singular = np.zeros((32, 32))
    for d in (metrics.frechet_distance(mu, sigma, mu, sigma), metrics.frechet_distance(mu, sigma, mu + 1, singular)):
        assert np.isfinite(d) and d >= 0
    # N(mu, S) vs the point mass at mu + 1: |1|^2 * 32 + tr(S)
    assert metrics.frechet_distance(mu, sigma, mu + 1, singular) == pytest.approx(32 + np.trace(sigma), rel=1e-9)


def test_frechet_distance_agrees_with_torchmetrics_fid():
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x

    rng = np.random.default_rng(2)
    _, _, real = random_gaussian(rng, 8, 2000)
    _, _, fake = random_gaussian(rng, 8, 1500)
    fid = FrechetInceptionDistance(feature=Identity())
    fid.update(torch.from_numpy(real), real=True)
    fid.update(torch.from_numpy(fake), real=False)
    ours = metrics.frechet_distance(*metrics.feature_stats(real), *metrics.feature_stats(fake))
    assert ours == pytest.approx(float(fid.compute()), rel=1e-6)


def test_feature_stats_rejects_too_few_samples_and_non_finite_features():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="at least 129"):
        metrics.feature_stats(rng.normal(size=(128, 128)))
    features = rng.normal(size=(300, 16))
    features[[5, 7]] = np.nan
    with pytest.raises(ValueError, match="non-finite features for 2 of 300"):
        metrics.feature_stats(features)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.prdc(features, features)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.kid(features, rng.normal(size=(300, 16)))


def test_kid_matches_torchmetrics_mmd_and_orders_distributions():
    import torch
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(4)
    real, near, far = rng.normal(size=(400, 16)), rng.normal(0.1, 1, (400, 16)), rng.normal(1.0, 1, (400, 16))
    # one subset holding every sample: the same unbiased estimator as torchmetrics
    mean, std = metrics.kid(real, far, subsets=1, subset_size=400, normalise=False)
    expected = float(poly_mmd(torch.from_numpy(real), torch.from_numpy(far)))
    assert mean == pytest.approx(expected, rel=1e-5) and std == 0.0
    same = metrics.kid(real[:200], real[200:], subsets=20, subset_size=150)
    small = metrics.kid(real, near, subsets=20, subset_size=150)
    large = metrics.kid(real, far, subsets=20, subset_size=150)
    assert abs(same[0]) < 3 * same[1] + 1e-3  # unbiased: about 0 for one distribution
    assert same[0] < small[0] < large[0] and large[1] > 0
    assert metrics.kid(real, far, subsets=5, subset_size=100, seed=7) == metrics.kid(real, far, subsets=5,
                                                                                      subset_size=100, seed=7)
    # normalised: invariant to the scale of the features (the real features' RMS value is divided out)
    assert metrics.kid(10 * real, 10 * far, subsets=5, subset_size=100) == pytest.approx(
        metrics.kid(real, far, subsets=5, subset_size=100), rel=1e-5)


def test_prdc_matches_the_prdc_package():
    import contextlib
    import io

    from prdc import compute_prdc

    rng = np.random.default_rng(5)
    real = rng.normal(size=(500, 16)).astype(np.float32)
    for fake in (rng.normal(0.3, 1.0, (400, 16)).astype(np.float32), rng.normal(0, 0.5, (300, 16)).astype(np.float32)):
        with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
            expected = compute_prdc(real, fake, nearest_k=3)
        ours = metrics.prdc(real, fake, k=3)
        cached = metrics.prdc(real, fake, k=3, real_radii=metrics.knn_radii(real, 3))
        assert ours == cached
        for key in ("precision", "recall", "density", "coverage"):
            # float32 distances vs the package's float64: at most one comparison in 300 may flip
            assert ours[key] == pytest.approx(float(expected[key]), abs=1 / 300 + 1e-12), key


def test_prdc_collapse_of_a_single_mode():
    rng = np.random.default_rng(6)
    centres = rng.normal(0, 10, (10, 16))
    real = (centres[np.arange(1000) % 10] + rng.normal(size=(1000, 16))).astype(np.float32)
    one_mode = (centres[0] + rng.normal(size=(300, 16))).astype(np.float32)
    result = metrics.prdc(real, one_mode)
    assert result["precision"] > 0.7 and result["recall"] < 0.15 and result["coverage"] < 0.2


def test_class_coverage_and_is_proxy():
    logits = np.full((100, 10), -10.0)
    logits[np.arange(100), np.arange(100) % 10] = 10.0  # confident and balanced
    assert metrics.class_coverage(logits) == 1.0
    assert metrics.is_proxy(logits) == pytest.approx(10.0, rel=1e-3)
    collapsed = logits.copy()
    collapsed[:, :] = -10.0
    collapsed[:, 3] = 10.0
    collapsed[0, 3], collapsed[0, 4] = -10.0, 10.0  # one sample of class 4: 1 % < 2 %
    assert metrics.class_coverage(collapsed) == 0.1
    assert metrics.is_proxy(np.zeros((50, 10))) == pytest.approx(1.0)  # uniform guesses


# ---------------------------------------------------------------- the linear probe (P1Q2 and P2Q2)

def test_linear_probe_settings_budget_dtype_and_warnings():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(1)
    labels = np.arange(900) % 3
    features = (rng.normal(size=(900, 8)) + 1.5 * np.eye(8)[labels]).astype(np.float32)
    train, test = slice(0, 600), slice(600, None)

    def accuracy(**settings):
        return linear_probes.linear_probe_accuracy(features[train], labels[train], features[test], labels[test], **settings)

    full = accuracy()
    assert 0.6 < full <= 1.0 and abs(accuracy(cast_float64=False, seed=0) - full) <= 0.01  # float32: rounding only
    with pytest.warns(ConvergenceWarning):
        one_step = accuracy(max_iter=1)
    assert one_step < full  # the budget is part of the number
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert accuracy(max_iter=1, quiet_unconverged=True, cast_float64=False, seed=0) < full


# ---------------------------------------------------------------- P2Q2's readouts: AUROC, CKA, linear decoder, PCA

def test_auroc_perfect_separator_identical_sets_ties_and_bad_input():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(50), np.zeros(70)].astype(int)
    assert linear_probes.auroc(np.r_[rng.uniform(2, 3, 50), rng.uniform(0, 1, 70)], labels) == 1.0
    assert linear_probes.auroc(np.r_[rng.uniform(0, 1, 50), rng.uniform(2, 3, 70)], labels) == 0.0
    same = rng.normal(size=60)
    assert linear_probes.auroc(np.r_[same, same], np.r_[np.ones(60), np.zeros(60)].astype(int)) == 0.5  # ties count 1/2
    assert linear_probes.auroc(np.zeros(120), labels) == 0.5
    alike = linear_probes.auroc(rng.normal(size=4000), rng.integers(0, 2, 4000))  # two draws of one distribution
    assert abs(alike - 0.5) < 0.03
    for _ in range(3):  # many ties between and within the classes: the Mann-Whitney count with average ranks
        scores, y = rng.integers(0, 4, 300).astype(float), rng.integers(0, 2, 300)
        assert linear_probes.auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    for scores, y in ((np.ones(3), np.ones(3)), (np.ones(3), np.array([0, 1, 2])), (np.array([np.nan, 1.0]), [0, 1]),
                      (np.ones(3), np.ones(2))):
        with pytest.raises(ValueError):
            linear_probes.auroc(scores, np.asarray(y))


def test_linear_cka_is_one_on_itself_and_invariant_to_rotations_and_isotropic_scaling():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))  # correlated features
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_probes.linear_cka(x, x) == pytest.approx(1.0)
    assert linear_probes.linear_cka(x, x @ rotation) == pytest.approx(1.0)
    assert linear_probes.linear_cka(x, 7.5 * x + 3.0) == pytest.approx(1.0)  # and to a shift: it centres
    y = np.c_[x @ rotation, np.zeros((400, 4))]  # another width: only the shared inputs matter
    assert linear_probes.linear_cka(x, y) == pytest.approx(1.0)
    assert linear_probes.linear_cka(x, y) == pytest.approx(linear_probes.linear_cka(y, x))
    # not invariant to an anisotropic scaling, and small between independent representations
    assert linear_probes.linear_cka(x, x * np.r_[10.0, np.ones(11)]) < 0.99
    assert linear_probes.linear_cka(x, rng.normal(size=(400, 12))) < 0.1
    assert np.isnan(linear_probes.linear_cka(x, np.ones((400, 3))))
    with pytest.raises(ValueError):
        linear_probes.linear_cka(x, x[:10])


def test_linear_recon_nats_rewards_features_that_keep_the_image():
    rng = np.random.default_rng(4)
    codes = rng.normal(size=(1200, 6))
    images = 1 / (1 + np.exp(-(codes @ rng.normal(size=(6, 784)))))  # grey values a 6-number code determines
    train, test = slice(0, 800), slice(800, None)

    def nats(features):
        return linear_probes.linear_recon_nats(features[train], images[train], features[test], images[test])

    keeps, half, none = nats(codes), nats(codes[:, :3]), nats(rng.normal(size=(1200, 6)))
    # the best a Bernoulli model can do on grey values: their own entropy
    floor = float(-(images[test] * np.log(images[test]) + (1 - images[test]) * np.log1p(-images[test])).sum(1).mean())
    assert floor < keeps < half < none and np.isfinite(none)
    # noise features: about the mean image's cross-entropy (the intercept alone)
    mean = np.clip(images[train].mean(0), linear_probes.RECON_CLAMP, 1 - linear_probes.RECON_CLAMP)
    blank = float(-(images[test] * np.log(mean) + (1 - images[test]) * np.log1p(-mean)).sum(1).mean())
    assert none == pytest.approx(blank, rel=0.02)
    # images as (N, 1, 28, 28) arrays give the same number; a constant feature is harmless
    assert nats(codes) == pytest.approx(linear_probes.linear_recon_nats(codes[train], images[train].reshape(-1, 1, 28, 28),
                                                                  codes[test], images[test]))
    assert np.isfinite(nats(np.c_[codes, np.ones(1200)]))


def test_linear_probe_auroc_and_pca_projection():
    rng = np.random.default_rng(5)
    labels = np.arange(800) % 2
    separable = rng.normal(size=(800, 10)) + 4.0 * labels[:, None] * np.eye(10)[0]
    assert linear_probes.linear_probe_auroc(separable[:400], labels[:400], separable[400:], labels[400:], seed=0) > 0.99
    noise = rng.normal(size=(800, 10))
    assert abs(linear_probes.linear_probe_auroc(noise[:400], labels[:400], noise[400:], labels[400:], seed=0) - 0.5) < 0.1
    # PCA on train only: k columns, the train projection centred, its variances in decreasing order
    wide = rng.normal(size=(500, 8)) * np.arange(8, 0, -1)
    train, test = linear_probes.pca_project(wide[:300], wide[300:], 3)
    assert train.shape == (300, 3) and test.shape == (200, 3) and np.allclose(train.mean(0), 0)
    assert list(np.argsort(-train.var(0))) == [0, 1, 2] and train.var(0)[0] > 40
    assert linear_probes.pca_project(wide[:300], wide[300:], 20)[0].shape == (300, 8)  # no more axes than features


@pytest.mark.parametrize("values, expected", [
    ([10.0, 5.0], 0.5),  # one epoch: the tail is that epoch, against the value before training
    ([100.0, 50.0, 40.0, 39.0, 38.0, 37.6], (38.0 - 37.6) / 38.0),  # 5 epochs: the tail is the last one
    ([100.0, 50.0, 40.0, 41.0, 42.0, 43.0], -(43.0 - 40.0) / 40.0),  # worse in the tail: negative
    ([100.0] + [90.0 - i for i in range(10)], (83.0 - 81.0) / 83.0),  # 10 epochs: the last 2
])
def test_rel_improvement_tail(values, expected):
    assert convergence.rel_improvement_tail(values) == pytest.approx(expected)


def test_convergence_gate_flips_at_the_threshold():
    assert convergence.convergence([100.0, 50.0, 49.6])["converged"] == 1.0  # 0.8 % < 1 %
    assert convergence.convergence([100.0, 50.0, 49.4])["converged"] == 0.0  # 1.2 %
    with pytest.raises(ValueError):
        convergence.rel_improvement_tail([1.0])


def test_plateau_calls_a_flat_noisy_tail_converged_and_a_falling_one_not():
    rng = np.random.default_rng(0)
    falling = list(np.linspace(200, 60, 12))  # still falling by ~40 % across its last third
    flat = list(np.linspace(200, 60, 8)) + list(60 + rng.normal(0, 2.4, 8))  # a trained GAN's ~4 % oscillation
    assert convergence.plateau(falling)["converged"] == 0.0 and convergence.plateau(falling)["fid_tail_fall_lower"] > 0.3
    out = convergence.plateau(flat)
    assert out["converged"] == 1.0
    assert out["fid_tail_fall_lower"] <= 0 < out["fid_tail_fall"] + 0.2 and out["fid_tail_fall_upper"] < 0.2
    # a rising tail has stopped improving: converged, though its fall is negative
    assert convergence.plateau(list(np.linspace(200, 40, 8)) + [42.0, 45.0, 49.0, 52.0])["converged"] == 1.0
    # a tail too noisy to see a 20 % fall is not called a plateau, though nothing says it still falls
    noisy = list(np.linspace(200, 60, 8)) + [60, 90, 45, 80, 50]
    out = convergence.plateau(noisy)
    assert out["converged"] == 0.0 and out["fid_tail_fall_lower"] <= 0 and out["fid_tail_fall_upper"] >= 0.2
    assert convergence.plateau([100.0, 90.0, 80.0]) == {"converged": 0.0}  # fewer than 4 points


def test_plateau_flips_at_both_of_its_bounds():
    # an exact line: the interval is the point; falling by 5/97.5 (> the 5 % tolerance) is still improving,
    # rising is not
    down = [100.0, 99.0, 98.0, 97.0, 96.0, 95.0]
    out = convergence.plateau(down, fraction=1.0)
    assert out["fid_tail_fall"] == pytest.approx(5 / 97.5) == pytest.approx(out["fid_tail_fall_lower"])
    assert out["converged"] == 0.0 and convergence.plateau(down[::-1], fraction=1.0)["converged"] == 1.0
    # the lower bound: a noisy falling tail passes or fails as the tolerance crosses its lower bound
    tail = [100.0, 97.0, 98.0, 94.0, 95.0, 92.0]
    lower = convergence.plateau(tail, fraction=1.0)["fid_tail_fall_lower"]
    assert lower > 0
    assert convergence.plateau(tail, fraction=1.0, tolerance=lower + 1e-6)["converged"] == 1.0
    assert convergence.plateau(tail, fraction=1.0, tolerance=lower - 1e-6)["converged"] == 0.0
    # a tail that falls by less than the tolerance, significantly or not, has plateaued
    assert convergence.plateau([100.0, 99.5, 99.0, 98.5, 98.0, 97.5], fraction=1.0)["converged"] == 1.0
    assert convergence.plateau([100.0, 97.0, 98.0, 94.0, 95.0, 97.0], fraction=1.0)["converged"] == 1.0
    # the power bound: the same flat noisy tail passes or fails as `resolves` crosses its upper bound
    flat = [100.0, 104.0, 97.0, 103.0, 98.0, 101.0]
    upper = convergence.plateau(flat, fraction=1.0)["fid_tail_fall_upper"]
    assert convergence.plateau(flat, fraction=1.0, resolves=upper + 1e-6)["converged"] == 1.0
    assert convergence.plateau(flat, fraction=1.0, resolves=upper - 1e-6)["converged"] == 0.0


def test_path_length_is_the_trimmed_mean_squared_step_over_epsilon_squared():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(200, 3))
    step = np.zeros((200, 3))
    step[:, 0] = 1e-3 * np.linspace(1, 2, 200)  # squared steps from 1e-6 to 4e-6
    out = metrics.path_length(start, start + step, 1e-3)
    d = np.linspace(1, 2, 200) ** 2
    assert out == pytest.approx(d[2:-2].mean(), rel=1e-6)  # the 1st-99th percentiles keep all but 2 at each end
    # one abrupt jump does not decide it; doubling every step quadruples it
    jumped = step.copy()
    jumped[0, 0] = 1.0
    assert metrics.path_length(start, start + jumped, 1e-3) == pytest.approx(out, rel=1e-2)
    assert metrics.path_length(start, start + 2 * step, 1e-3) == pytest.approx(4 * out, rel=1e-6)
    with pytest.raises(ValueError):
        metrics.path_length(start, start[:10], 1e-3)
