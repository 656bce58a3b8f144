"""The warm start: the zoo models of the space's family that are points of the space and fit the budgets, cheapest
first; they take the first slots of a search (`bsnas.search.slots`)."""

from __future__ import annotations

import re

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models, zoo_family
from bsnas.search.budget import Budget
from bsnas.search.candidate import over_budget
from bsnas.space.decode import SearchSpace
from bsnas.space.invert import params_of

__all__ = ["zoo_slots"]


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
