"""The protocol's statistics: a difference between two conditions with its 95 % interval (Welch for independent
seeds, paired t for seed-matched ones), the minimum effect the design could have detected, and Holm's correction
when one question tests several claims.

The minimum detectable effect (MDE) is the true difference that a two-sided t-test at level ``alpha`` would find
with probability ``power``, at the standard error and degrees of freedom the seeds showed (noncentral t). A rule
whose minimum effect is smaller than the MDE could not have seen it: the verdict is "underpowered", never "no
difference".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b): its 95 % interval, two-sided p-value and the MDE, all NaN when the seeds cannot give them.
    ``paired``: the seeds were matched (seed s of a and seed s of b share their starting networks)."""

    diff: float
    low: float
    high: float
    p_value: float
    mde: float
    n: int  # pairs when paired, else the smaller group
    paired: bool


def _finite(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=float)
    return v[np.isfinite(v)]


def difference(a: Sequence[float], b: Sequence[float], paired: bool = False, alpha: float = ALPHA,
               power: float = POWER) -> Difference:
    """The difference of means of ``a`` and ``b`` (paired: of ``a[i] - b[i]``, same length, NaN pairs dropped)."""
    if paired:
        a_arr, b_arr = np.asarray(list(a), float), np.asarray(list(b), float)
        if len(a_arr) != len(b_arr):
            raise ValueError(f"paired samples differ in length ({len(a_arr)} vs {len(b_arr)})")
        d = a_arr - b_arr
        d = d[np.isfinite(d)]
        n = len(d)
        diff = float(d.mean()) if n else math.nan
        se, dof = (float(d.std(ddof=1)) / math.sqrt(n), n - 1) if n >= 2 else (math.nan, 0.0)
    else:
        a_arr, b_arr = _finite(a), _finite(b)
        n = min(len(a_arr), len(b_arr))
        diff = float(a_arr.mean() - b_arr.mean()) if n else math.nan
        se, dof = _welch(a_arr, b_arr) if n >= 2 else (math.nan, 0.0)
    return _with_interval(diff, se, dof, n, paired, alpha, power)


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Standard error of the difference of means and the Welch-Satterthwaite degrees of freedom."""
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se2 = va + vb
    if se2 == 0:
        return 0.0, float(len(a) + len(b) - 2)
    dof = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    return math.sqrt(se2), dof


def _with_interval(diff: float, se: float, dof: float, n: int, paired: bool, alpha: float,
                   power: float) -> Difference:
    if math.isnan(se) or dof <= 0:
        return Difference(diff, math.nan, math.nan, math.nan, math.nan, n, paired)
    if se == 0:  # no spread at all: any non-zero difference is certain, and any effect detectable
        return Difference(diff, diff, diff, 0.0 if diff else 1.0, 0.0, n, paired)
    half = float(stats.t.ppf(1 - alpha / 2, dof)) * se
    p_value = float(2 * stats.t.sf(abs(diff) / se, dof))
    return Difference(diff, diff - half, diff + half, p_value, mde(se, dof, alpha, power), n, paired)


def mde(se: float, dof: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true difference a two-sided t-test (level ``alpha``, ``dof`` degrees of freedom, standard error ``se``)
    detects with probability ``power``: solved on the noncentral t distribution."""
    if not (se > 0 and dof > 0):
        return math.nan if math.isnan(se) or dof <= 0 else 0.0
    crit = float(stats.t.ppf(1 - alpha / 2, dof))

    def shortfall(delta: float) -> float:
        nc = delta / se
        wrong_side = float(stats.nct.cdf(-crit, dof, nc))  # NaN far in the tail, where it is 0
        return float(stats.nct.sf(crit, dof, nc)) + (0.0 if math.isnan(wrong_side) else wrong_side) - power

    upper = se * (crit + 20.0)
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=se * 1e-6))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected at family-wise level ``alpha``. A NaN
    p-value (a claim the seeds could not test) is never rejected but still counts towards the family: leaving it
    out would make the correction of the others less strict."""
    ps = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(ps):
        if p > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected

