"""defect_judge/stats.py: the statistics evaluation and comparison share, against hand-computed values."""
from __future__ import annotations

import pytest

from defect_judge.stats import wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 7 of 10: centre (0.7 + z²/20) / (1 + z²/10), half-width z·sqrt(0.021 + z²/400) / (1 + z²/10)
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.396774, abs=1e-5) and high == pytest.approx(0.892209, abs=1e-5)
    assert wilson_interval(0, 4) == pytest.approx((0.0, 0.489891), abs=1e-5)
    assert wilson_interval(4, 4) == pytest.approx((0.510109, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # the estimate stays inside its interval at the ends (no 2.8e-17 > 0.0 from rounding)
    assert wilson_interval(0, 6)[0] == 0.0 and wilson_interval(6, 6)[1] == 1.0
