"""Whether a run converged, as pure functions of its validation curve: the study protocol's gate for VAEs (the
best value stopped improving) and the plateau test for GANs (whose sample-quality curve wanders)."""

from __future__ import annotations

import math

import numpy as np

CONVERGED_BELOW = 0.01  # relative improvement of the validation objective over the tail below which a run converged
TAIL_FRACTION = 0.2  # the tail: the last 20 % of the epochs


def rel_improvement_tail(values: list[float], tail_fraction: float = TAIL_FRACTION) -> float:
    """How much the best validation objective (lower is better) improved during the last ``tail_fraction`` of
    the evaluations, relative to the best before them. ``values[0]`` is the objective before training, then one
    value per evaluation. Zero or negative: the tail brought nothing (the run had stopped improving)."""
    if len(values) < 2:
        raise ValueError("rel_improvement_tail needs the value before training and at least one after")
    tail = max(1, math.ceil(tail_fraction * (len(values) - 1) - 1e-9))
    before, during = min(values[:-tail]), min(values[-tail:])
    return (before - during) / max(abs(before), 1e-12)


def convergence(values: list[float], threshold: float = CONVERGED_BELOW) -> dict[str, float]:
    """``val_rel_improvement_tail`` and ``converged`` (1.0 when the tail improved by less than ``threshold``)."""
    tail = rel_improvement_tail(values)
    return {"val_rel_improvement_tail": tail, "converged": float(tail < threshold)}


# ---------------------------------------------------------------- a GAN's convergence: a plateau test

PLATEAU_FRACTION = 1 / 3  # the tail: the last third of the evaluations after step 0
PLATEAU_MIN_POINTS = 4  # fewer points leave the slope's interval too wide to call anything a plateau
# The fall across the tail the test must be able to see (its one-sided 95 % upper bound stays below this). Not
# smaller: a trained GAN's fid_proxy oscillates by ~4 % from one evaluation to the next (the EMA generator, fixed
# noise: the oscillation is the generator's, not the estimate's), so with 6 tail points even a flat curve's bound
# sits ~10 % above its estimate, and a 5 % bound is out of reach at any evaluation density a study can pay for.
PLATEAU_RESOLVES = 0.2
# The fall across the tail that still counts as a plateau: the smallest difference P2Q1's comparisons count (5 % of
# an arm's mean fid_proxy). A run whose lower bound clears it is still improving by an amount the comparisons would
# see; one below it may drift on, but no faster than the comparisons' own resolution per third of its training.
PLATEAU_TOLERANCE = 0.05


def plateau(values: list[float], fraction: float = PLATEAU_FRACTION, resolves: float = PLATEAU_RESOLVES,
            tolerance: float = PLATEAU_TOLERANCE) -> dict[str, float]:
    """A GAN's convergence on its fid_proxy curve (``values``: one per evaluation after step 0, lower is better).

    A least-squares line through the last ``fraction`` of the evaluations (at least PLATEAU_MIN_POINTS); its
    slope times the tail's span, over the tail's mean, is how much the curve still falls across the tail
    (``fid_tail_fall``, positive = still improving), with the one-sided 95 % t bounds ``fid_tail_fall_lower`` and
    ``fid_tail_fall_upper``. The run ``converged`` when the fall is not significantly larger than ``tolerance``
    (lower bound <= tolerance: no evidence it still improves by more than that; a rising curve has stopped improving
    as surely as a flat one) and the test had the power to see a real fall (upper bound < ``resolves``). A
    best-so-far gate (the VAEs') reads noise here: a GAN's fid_proxy wanders up and down from one evaluation to the
    next, so its best value keeps moving by chance. Too few evaluations: not converged."""
    from scipy import stats

    k = max(PLATEAU_MIN_POINTS, math.ceil(fraction * len(values) - 1e-9))
    if len(values) < k:
        return {"converged": 0.0}
    tail = np.asarray(values[-k:], dtype=np.float64)
    fit = stats.linregress(np.arange(k, dtype=np.float64), tail)
    scale = (k - 1) / max(abs(float(tail.mean())), 1e-12)
    fall = -fit.slope * scale
    half = stats.t.ppf(0.95, k - 2) * fit.stderr * scale
    lower, upper = fall - half, fall + half
    return {"fid_tail_fall": float(fall), "fid_tail_fall_lower": float(lower), "fid_tail_fall_upper": float(upper),
            "converged": float(lower <= tolerance and upper < resolves)}
