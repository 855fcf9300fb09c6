import pytest

from edgebench.reports.intervals import difference, wilson


def test_wilson_matches_the_textbook_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553 .. 0.3662; 15/148 -> 0.0624 .. 0.1605
    assert wilson(81 / 263, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15 / 148, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    lo, hi = wilson(1.0, 40)  # 40 of 40: the interval still admits errors
    assert hi == 1.0 and lo == pytest.approx(0.9124, abs=1e-4)


def test_difference_matches_newcombe_method_10():
    # Newcombe (1998), table II example (a): 56/70 - 48/80 -> 0.0524 .. 0.3339
    assert difference(56 / 70, 70, 48 / 80, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_one_window_of_forty_is_inside_the_interval_and_thousands_narrow_it():
    lo, hi = difference(39 / 40, 40, 40 / 40, 40)
    assert lo < -0.025 < 0 < hi  # BasicMotions: one series (2.5 points) is noise
    lo2, hi2 = difference(0.95, 2000, 0.96, 2000)
    assert hi2 - lo2 < 0.03 < hi - lo
