"""The protocol's statistics against values computed by hand or by simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from reports import power


def test_paired_interval_is_the_one_sample_t_interval_of_the_differences():
    a, b = [10.0, 12.0, 11.5, 13.0], [9.0, 10.5, 11.0, 11.0]
    d = np.subtract(a, b)
    got = power.difference(a, b, paired=True)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert got.paired and got.n == 4
    assert got.diff == pytest.approx(d.mean())
    assert (got.low, got.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert got.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_pairing_removes_the_shared_seed_noise_that_welch_keeps():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 10, 5)  # each seed's networks: large, shared by both arms
    a, b = seed_effect + 3 + rng.normal(0, 0.3, 5), seed_effect + rng.normal(0, 0.3, 5)
    paired, welch = power.difference(a, b, paired=True), power.difference(a, b)
    assert paired.low > 0 and paired.mde < 3  # seen, and the design could have seen it
    assert welch.low < 0 < welch.high and welch.mde > 3  # the same data unpaired: underpowered
    assert welch.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_mde_has_the_stated_power_by_simulation():
    se_sd, n = 2.0, 4  # paired differences with sd 2 over 4 seeds
    effect = power.mde(se_sd / math.sqrt(n), n - 1)
    rng = np.random.default_rng(1)
    d = rng.normal(effect, se_sd, (20000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    detected = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert detected == pytest.approx(0.8, abs=0.015)
    # the textbook approximation (t_crit + t_power) * se is close but not equal
    assert effect == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * 1.0, rel=0.15)


def test_one_seed_gives_no_interval_and_no_power():
    got = power.difference([1.0], [0.0])
    assert got.diff == 1.0 and math.isnan(got.low) and math.isnan(got.mde) and math.isnan(got.p_value)


def test_no_spread_detects_anything():
    got = power.difference([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], paired=True)
    assert (got.low, got.high, got.mde, got.p_value) == (1.0, 1.0, 0.0, 0.0)


def test_paired_lengths_must_match():
    with pytest.raises(ValueError, match="differ in length"):
        power.difference([1.0, 2.0], [1.0], paired=True)


@pytest.mark.parametrize("p_values, expected", [
    ([0.01, 0.04, 0.03], [True, False, False]),  # 0.01 < 0.05/3; 0.03 > 0.05/2 stops
    ([0.01, 0.02, 0.04], [True, True, True]),  # 0.01 < .0167, 0.02 < .025, 0.04 < .05
    ([0.2, 0.001], [False, True]),
    ([math.nan, 0.03], [False, False]),  # an untestable claim still counts: 0.03 > 0.05 / 2
    ([math.nan, 0.02], [False, True]),
])
def test_holm(p_values, expected):
    assert power.holm(p_values) == expected
