import numpy as np
import pytest

from genlab import metrics


def test_active_units_on_constructed_case():
    rng = np.random.default_rng(0)
    z = np.zeros((1000, 4))
    z[:, 0] = rng.normal(0, 1.0, 1000)   # variance 1: active
    z[:, 1] = rng.normal(0, 0.3, 1000)   # variance 0.09: active
    z[:, 2] = rng.normal(0, 0.05, 1000)  # variance 0.0025: inactive
    assert metrics.active_units(z) == 2
    with pytest.raises(ValueError):
        metrics.active_units(np.zeros(3))
