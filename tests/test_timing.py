"""genlab.timing: phases add up, never nest, and an unknown phase is refused."""

import time

import pytest

from genlab import timing


def test_phases_add_up_to_the_total_with_the_rest_as_other():
    timing.reset()
    with timing.phase("data"):
        time.sleep(0.02)
    timing.add("train", 0.01)
    with timing.phase("data"):
        pass
    time.sleep(0.01)
    m = timing.metrics()
    assert set(m) == {"seconds_data", "seconds_train", "seconds_total", "seconds_other"}
    assert m["seconds_data"] >= 0.02 and m["seconds_train"] == pytest.approx(0.01)
    assert m["seconds_total"] >= 0.03 and m["seconds_other"] >= 0  # the sleep outside a phase, less the added 0.01
    assert m["seconds_data"] + m["seconds_train"] + m["seconds_other"] == pytest.approx(m["seconds_total"])
    timing.reset()
    assert set(timing.metrics()) == {"seconds_total", "seconds_other"}


def test_a_phase_inside_another_or_an_unknown_one_is_refused():
    timing.reset()
    with pytest.raises(RuntimeError, match="inside phase 'train'"), timing.phase("train"), timing.phase("pictures"):
        pass
    with pytest.raises(RuntimeError, match="inside phase 'validation'"), timing.phase("validation"):
        timing.add("train", 1.0)
    with pytest.raises(ValueError, match="unknown timing phase 'lunch'"):
        timing.add("lunch", 1.0)
    with timing.phase("models"):  # a failed nesting leaves nothing open
        pass
    timing.reset()
