"""The exact cost bounds of a space against brute force, and the search's check that a space fits its budget."""

from __future__ import annotations

import copy

import pytest

from bsnas.arch.cost import cost
from bsnas.errors import BsnasError
from bsnas.search.budget import parse_budget
from bsnas.search.workers import check_space_fits
from bsnas.space import load_space, space_from_dict, space_size
from bsnas.space.summary import cost_bounds, extreme_point, smallest_cost

SPACE = {
    "name": "tiny",
    "model": {"block_type": ["inverted", "conv"], "width_multiplier": [0.5, 1.0], "alpha": [0.01]},
    "stem": {"out_channels": 8, "op": ["regular", "bsconv_s"], "p": [0.5], "act": ["relu", "hswish"]},
    "stages": [
        {"stride": 1, "repeats": 1, "out_channels": [8, 16], "op": ["regular", "dsc", "bsconv_s"],
         "p": [0.5], "act": ["relu", "relu6"], "expansion": [1, 4]},
        {"stride": 2, "repeats": {"low": 0, "high": 1}, "padding_free": [False, True], "out_channels": [16, 24],
         "op": ["dsc", "bsconv_u"], "kernel_size": [3, 5], "expansion": [2], "se": [False, True]},
    ],
    "head": {"conv_channels": [None, 32], "act": ["relu", "hswish"]},
}


def all_points(space):
    """Every point of a space: decode, branching on each question in turn."""

    class Branch(Exception):
        def __init__(self, options):
            self.options = options

    def run(prefix):
        asked = 0

        def choose(name, choice, hint):
            nonlocal asked
            asked += 1
            if asked <= len(prefix):
                return prefix[asked - 1]
            raise Branch(choice.enumerate())

        try:
            yield space.decode(choose)
        except Branch as branch:
            for value in branch.options:
                yield from run([*prefix, value])
        except BsnasError:  # no block, or a feature map that vanishes
            return

    yield from run([])


@pytest.fixture(scope="module")
def tiny():
    space = space_from_dict(SPACE).for_data(1, 12, 10)
    costs = [cost(spec) for spec in all_points(space)]
    assert len(costs) == space_size(space) > 5_000
    return space, costs


def test_cost_bounds_equal_brute_force(tiny):
    space, costs = tiny
    bounds = cost_bounds(space)
    assert (bounds.min_flops, bounds.max_flops) == (min(c.flops for c in costs), max(c.flops for c in costs))
    assert (bounds.min_params, bounds.max_params) == (min(c.params for c in costs), max(c.params for c in costs))
    assert smallest_cost(space, "flops") == bounds.min_flops and smallest_cost(space, "params") == bounds.min_params


def test_limits_prune_but_keep_the_exact_minimum(tiny):
    space, costs = tiny
    cheapest = min(c.flops for c in costs)
    assert cost_bounds(space, (cheapest, float("inf"))).min_flops == cheapest
    assert cost_bounds(space, (cheapest - 1, float("inf"))) is None


def test_the_cheapest_point_does_not_depend_on_the_order_of_the_choices():
    """Issue 10: with the first-listed choices as the 'smallest' point, [inverted, conv] and [conv, inverted] gave
    different answers, and a search could be refused although feasible points existed."""
    mobilenet = load_space("search_spaces/mobilenet.yaml").raw
    answers = []
    for order in (["inverted", "conv"], ["conv", "inverted"]):
        raw = copy.deepcopy(mobilenet)
        raw["model"]["block_type"] = order
        answers.append(smallest_cost(space_from_dict(raw).for_data(1, 28, 10), "flops"))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("order", [["inverted", "conv"], ["conv", "inverted"]])
def test_a_budget_just_above_the_true_minimum_is_accepted_and_just_below_refused(tiny, order):
    space, costs = tiny
    raw = copy.deepcopy(SPACE)
    raw["model"]["block_type"] = order
    space = space_from_dict(raw).for_data(1, 12, 10)
    cheapest = min(c.flops for c in costs)
    check_space_fits(space, (parse_budget(f"{cheapest}FLOPs"),))
    with pytest.raises(BsnasError, match=f"cheapest point of the space has {cheapest / 1e3:.3g} kFLOPs"):
        check_space_fits(space, (parse_budget(f"{cheapest - 1}FLOPs"),))


def test_local_search_finds_cheap_and_costly_points(tiny):
    space, costs = tiny
    assert cost(extreme_point(space, "flops")).flops <= sorted(c.flops for c in costs)[len(costs) // 100]
    assert cost(extreme_point(space, "flops", largest=True)).flops >= sorted(c.flops for c in costs)[-len(costs) // 100]
