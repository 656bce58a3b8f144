"""The hypervolume of (accuracy, cost) fronts, checked against areas computed by hand."""

from __future__ import annotations

import math

import pytest

from bsnas.search.hypervolume import hypervolume, nondominated


def test_a_single_point_dominates_the_rectangle_up_to_the_budget():
    # cost 5 of a budget of 10: x = 0.5; the rectangle [0.5, 1] x [0, 0.8]
    assert hypervolume([(0.8, 5.0)], budget=10.0) == pytest.approx(0.4)


def test_nothing_dominates_nothing():
    assert hypervolume([], budget=10.0) == 0.0


def test_dominated_points_add_nothing_and_better_ones_add_their_strip():
    assert hypervolume([(0.8, 5.0), (0.7, 6.0), (0.8, 9.0), (0.6, 5.0)], budget=10.0) == pytest.approx(0.4)
    # (0.9, 8) adds the strip above 0.8 from x = 0.8 to 1: 0.8 * 0.3 + 0.9 * 0.2
    assert hypervolume([(0.8, 5.0), (0.9, 8.0)], budget=10.0) == pytest.approx(0.42)
    assert nondominated([(0.8, 5.0), (0.7, 6.0), (0.9, 8.0), (0.9, 9.0)]) == [(0.8, 5.0), (0.9, 8.0)]


def test_points_over_the_budget_add_nothing():
    assert hypervolume([(0.8, 5.0), (0.99, 12.0)], budget=10.0) == pytest.approx(0.4)
    assert hypervolume([(0.99, 10.5)], budget=10.0) == 0.0
    assert hypervolume([(0.5, 10.0)], budget=10.0) == 0.0  # at the budget: a line, no area


def test_the_log_axis_runs_from_its_lower_bound_to_the_budget():
    # budget 100, low 1: cost 10 sits half-way (x = log 10 / log 100 = 0.5)
    assert hypervolume([(0.5, 10.0)], budget=100.0, low=1.0) == pytest.approx(0.25)
    # cost 1 (the bound) and 0.5 (below it, counted at the bound) span the whole axis
    assert hypervolume([(0.5, 1.0)], budget=100.0, low=1.0) == pytest.approx(0.5)
    assert hypervolume([(0.5, 0.5)], budget=100.0, low=1.0) == pytest.approx(0.5)
    # two points: 0.6 from x = log(2)/log(100) to 0.5, then 0.7 to 1
    x = math.log(2) / math.log(100)
    assert hypervolume([(0.6, 2.0), (0.7, 10.0)], budget=100.0, low=1.0) == pytest.approx(0.6 * (0.5 - x) + 0.35)


def test_a_bad_reference_is_refused():
    with pytest.raises(ValueError):
        hypervolume([(0.5, 1.0)], budget=10.0, low=20.0)
