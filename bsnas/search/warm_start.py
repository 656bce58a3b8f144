"""The warm start: the zoo models of the space's family that are points of the space and fit the budgets, cheapest
first; they take the first slots of a search (`bsnas.search.slots`), at most half of a short search's."""

from __future__ import annotations

import re

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models, zoo_family
from bsnas.search.budget import Budget
from bsnas.search.candidate import over_budget
from bsnas.space.decode import SearchSpace
from bsnas.space.invert import params_of

__all__ = ["WARM_START_SHARE", "warm_start", "zoo_slots"]

WARM_START_SHARE = 0.5  # the warm start takes at most this share of --trials: a short search samples too


def zoo_slots(space: SearchSpace, budgets: tuple[Budget, ...], pattern: str | None = None) -> list[tuple[str, dict]]:
    """(name, parameters) of the zoo models of the space's family that are points of the space and fit the
    FLOPs/parameter budgets (and match `pattern`), cheapest first."""
    if space.family is None:
        return []
    static = tuple(b for b in budgets if b.kind != "latency")
    found = []
    for name in list_models("^cifar_"):
        if zoo_family(name) != space.family or (pattern and not re.search(pattern, name)):
            continue
        spec = get_spec(name, space.num_classes, space.in_channels, space.image_size)
        flops, n_params = cost(spec)
        if over_budget({"flops": flops, "params": n_params}, static):
            continue
        params = params_of(space, spec)
        if params is not None:
            found.append((flops, name, params))
    return [(name, params) for _, name, params in sorted(found, key=lambda item: item[:2])]


def warm_start(zoo: list[tuple[str, dict]], trials: int | None) -> list[tuple[str, dict]]:
    """The zoo slots (`zoo_slots`, cheapest first) that a search of `trials` trials starts with: all of them, or at
    most `WARM_START_SHARE` of the trials (a 40-trial search under 20 MFLOPs replayed 34 zoo models and sampled 6).
    The ones kept spread over the cost range: the cheapest, the costliest, the middle one, the quarter points, and
    so on, so that a longer search keeps those of a shorter one; still cheapest first."""
    if trials is None or len(zoo) <= trials * WARM_START_SHARE:
        return zoo
    return [zoo[index] for index in sorted(_spread(len(zoo))[:int(trials * WARM_START_SHARE)])]


def _spread(count: int) -> list[int]:
    """0..count-1 ordered so that every prefix spreads over the range: both ends, then midpoints of the gaps."""
    if count <= 2:
        return list(range(count))
    order, gaps = [0, count - 1], [(0, count - 1)]
    while gaps:
        wider = []
        for low, high in gaps:
            if high - low > 1:
                middle = (low + high) // 2
                order.append(middle)
                wider += [(low, middle), (middle, high)]
        gaps = wider
    return order
