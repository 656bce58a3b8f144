"""What a space holds: its number of points, and the cost of its cheapest point, exactly.

`cost_bounds` is a dynamic programme over the decoding order (stem, the blocks of every stage, the head) whose
state is what the next block sees (base width, channels, feature-map size); every block's cost comes from the
plan (`bsnas.arch.plan`), so the minimum is the minimum over the space's real points, whatever order the file
lists its choices in (a point whose feature map would vanish at the input size is not a point). Visiting every
distinct block of a large space takes long, so `smallest_cost` first finds a cheap point by local search
(`extreme_point`) and lets the programme drop every partial network that already costs more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bsnas.arch.cost import cost, node_cost
from bsnas.arch.plan import Node, PlanError, plan_block, plan_head, plan_input, plan_stem
from bsnas.arch.spec import ArchSpec
from bsnas.arch.zoo import scale_channels
from bsnas.errors import BsnasError
from bsnas.space.choices import Choice
from bsnas.space.decode import (
    BLOCK_FIELDS,
    HEAD_FIELDS,
    STEM_FIELDS,
    SearchSpace,
    StageSpace,
    assignments,
    block_assignments,
    field_applies,
    fraction,
    make_block,
    make_head,
    make_stem,
    padding_free_applies,
)

__all__ = ["CostBounds", "cost_bounds", "extreme_point", "smallest_cost", "space_size"]


@dataclass(frozen=True)
class CostBounds:
    """Smallest and largest FLOPs and parameter counts over all points of a space (for its input size)."""

    min_flops: int
    max_flops: int
    min_params: int
    max_params: int

    def smallest(self, kind: str) -> int:
        return {"flops": self.min_flops, "params": self.min_params}[kind]


def _merge(table: dict, key: Any, value: tuple[int, int, int, int]) -> None:
    """Keep per state the (min flops, max flops, min params, max params) over the paths that reach it."""
    old = table.get(key)
    table[key] = value if old is None else (min(old[0], value[0]), max(old[1], value[1]),
                                            min(old[2], value[2]), max(old[3], value[3]))


def _add(value: tuple[int, int, int, int], flops: int, params: int) -> tuple[int, int, int, int]:
    return value[0] + flops, value[1] + flops, value[2] + params, value[3] + params


def _values(choice: Choice) -> list:
    return choice.enumerate() if choice.count() < math.inf else [choice.low, choice.high]


def cost_bounds(space: SearchSpace, limits: tuple[float, float] = (math.inf, math.inf),
                visit: Callable[[Node], None] | None = None) -> CostBounds | None:
    """Exact min/max FLOPs and parameters over the points of `space` at its input size (`for_data`).

    With `limits` (FLOPs, params) the walk drops every partial network already over a limit: the result
    then says whether any point fits (None when none does) and its minima are exact; this is fast for tight
    limits. Without limits it visits every distinct block of the space (about half a minute for the shipped
    MobileNet space). `visit(node)` sees the plan nodes (input, stem, blocks, head, classifier) of the partial
    networks the walk keeps: every node of every point within the limits (and some of partial networks that
    turn out over them), some more than once.
    """
    visit = visit or (lambda node: None)
    in_channels, height, width_px = space.input_size
    input_bn = plan_input(ArchSpec.input_bn, in_channels, (height, width_px))  # the spaces' specs keep the default
    visit(input_bn)
    start = node_cost(input_bn)
    block_costs: dict = {}

    def block_cost(block, channels: int, size: tuple[int, int]):
        key = (block, channels, size)
        if key not in block_costs:
            try:
                node, out_channels, out_size = plan_block(block, channels, size)
                block_costs[key] = (node, *node_cost(node), out_channels, out_size)
            except PlanError:
                block_costs[key] = None
        return block_costs[key]

    tail = _head_lower_bound(space) if limits != (math.inf, math.inf) else (0, 0)

    def keep(value: tuple[int, int, int, int]) -> bool:
        """Could a network starting like this (and ending with at least the cheapest head) fit the limits?"""
        return value[0] + tail[0] <= limits[0] and value[2] + tail[1] <= limits[1]

    totals: dict = {}
    for block_type in _values(space.model["block_type"]):
        for width_multiplier in _values(space.model["width_multiplier"]):
            context = {"block_type": block_type, "width_multiplier": width_multiplier}
            width = fraction(width_multiplier)
            states: dict = {}  # (in_base, channels, size, has_block) -> (min flops, max flops, min params, max params)
            for values in assignments("stem", space.stem, context):
                try:
                    node, channels, size = plan_stem(make_stem(values, width), in_channels, (height, width_px))
                except PlanError:
                    continue
                flops, params = node_cost(node)
                value = _add((start.flops, start.flops, start.params, start.params), flops, params)
                if keep(value):
                    visit(node)
                    _merge(states, (values["out_channels"], channels, size, False), value)
            for stage in space.stages:
                states = _stage(stage, states, block_type, context, width, block_cost, keep, visit)
            for (_, channels, size, has_block), value in states.items():
                if not has_block:
                    continue
                for values in assignments("head", space.head, context):
                    head, classifier = plan_head(make_head(values, width), channels, size, space.num_classes)
                    flops, params = (a + b for a, b in zip(node_cost(head), node_cost(classifier), strict=True))
                    total = _add(value, flops, params)
                    if total[0] <= limits[0] and total[2] <= limits[1]:
                        visit(head)
                        visit(classifier)
                        _merge(totals, "all", total)
    return CostBounds(*totals["all"]) if totals else None


def _head_lower_bound(space: SearchSpace) -> tuple[int, int]:
    """(FLOPs, params) that every point spends at least on its head and classifier: the cheapest head on a
    1x1 feature map of the fewest channels the last block can give (costs grow with both)."""
    widths = _values(space.model["width_multiplier"])
    last = max((i for i, stage in enumerate(space.stages) if min(stage.repeats.enumerate()) > 0), default=-1)
    bases = [c for stage in space.stages[max(last, 0):] for c in _values(stage.fields["out_channels"])]
    if last < 0:  # no stage is certain to have a block: the head may see the stem
        bases += _values(space.stem["out_channels"])
    channels = min(scale_channels(base, fraction(width)) for base in bases for width in widths)
    best = (math.inf, math.inf)
    for block_type in _values(space.model["block_type"]):
        for width_multiplier in widths:
            context = {"block_type": block_type, "width_multiplier": width_multiplier}
            for values in assignments("head", space.head, context):
                head, classifier = plan_head(make_head(values, fraction(width_multiplier)), channels, (1, 1),
                                             space.num_classes)
                total = [a + b for a, b in zip(node_cost(head), node_cost(classifier), strict=True)]
                best = (min(best[0], total[0]), min(best[1], total[1]))
    return best


def smallest_cost(space: SearchSpace, kind: str) -> int:
    """The exact smallest FLOPs (`kind` flops) or parameter count of the space's points: a greedy point's cost
    bounds a walk over all points that drops every partial network above it (about a second for the shipped
    MobileNet space)."""
    witness = cost(extreme_point(space, kind))[0 if kind == "flops" else 1]
    bounds = cost_bounds(space, (witness, math.inf) if kind == "flops" else (math.inf, witness))
    if bounds is None:
        h, w = space.input_size[1:]
        raise PlanError(f"{space.source}: no point of the space fits a {h}x{w} input; every one runs out of "
                        "feature map")
    return bounds.smallest(kind)


def _options(choice: Choice) -> list:
    """A field's values, numbers smallest first."""
    values = _values(choice)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return values


class _Answers:
    """Answers `decode`'s questions from `decisions` (by parameter name), else with the smallest (or largest)
    value; records every question asked (name -> options) in order."""

    def __init__(self, decisions: dict, largest: bool = False):
        self.decisions, self.asked, self.default = decisions, {}, -1 if largest else 0

    def __call__(self, name: str, choice: Choice, hint: dict) -> Any:
        self.asked[name] = options = _options(choice)
        return self.decisions.get(name, options[self.default])


def extreme_point(space: SearchSpace, kind: str, largest: bool = False) -> ArchSpec:
    """A cheap (or, with `largest`, costly) point found by local search, not always the extreme one: from the
    smallest (largest) value of every field, change one decision at a time to the value that moves the
    network's `kind` (flops or params) furthest, until no single change helps."""
    index, sign = (0 if kind == "flops" else 1), (-1 if largest else 1)

    def price(decisions: dict) -> float:
        try:
            return sign * cost(space.decode(_Answers(decisions, largest)))[index]
        except BsnasError:  # a point whose feature map vanishes, or one without blocks
            return math.inf

    decisions: dict = {}
    best = price(decisions)
    improved = True
    while improved:
        improved = False
        answers = _Answers(decisions, largest)
        try:
            space.decode(answers)
        except BsnasError:
            pass  # the questions asked so far can still be changed
        for name, options in answers.asked.items():
            for value in options:
                trial = dict(decisions, **{name: value})
                trial_price = price(trial)
                if trial_price < best:
                    decisions, best, improved = trial, trial_price, True
    return space.decode(_Answers(decisions, largest))


def _stage(stage: StageSpace, states: dict, block_type: str, context: dict, width, block_cost, keep,
           visit) -> dict:
    """The states after a stage: every repeat count, every block's every assignment."""
    repeats = set(stage.repeats.enumerate())
    exits: dict = {}
    if 0 in repeats:
        for key, value in states.items():
            _merge(exits, key, value)
    current = states
    if not states:
        return exits
    choices = {first: list(block_assignments(stage, block_type, context, 0 if first else 1)) for first in (True, False)}
    for index in range(max(repeats)):
        following: dict = {}
        stride = stage.stride if index == 0 else 1
        for (in_base, channels, size, _), value in current.items():
            for values, padding_free in choices[index == 0]:
                block = make_block(values, block_type, in_base, stride, padding_free, width)
                result = block_cost(block, channels, size)
                if result is None:
                    continue
                node, flops, params, out_channels, out_size = result
                total = _add(value, flops, params)
                if keep(total):
                    visit(node)
                    _merge(following, (values["out_channels"], out_channels, out_size, True), total)
        current = following
        if index + 1 in repeats:
            for key, value in current.items():
                _merge(exits, key, value)
    return exits


def space_size(space: SearchSpace) -> float:
    """Number of distinct parameter assignments (inf when a continuous range is sampled)."""
    total = 0.0
    for block_type in space.model["block_type"].values:
        context = {"block_type": block_type, "width_multiplier": None}
        count = space.model["width_multiplier"].count()
        count *= _count(space.stem, "stem", context, block_type)
        for stage in space.stages:
            later = _count(stage.fields, "block", context, block_type)
            first = _count(stage.fields, "block", context, block_type, stage)
            count *= sum(first * later ** (r - 1) if r else 1 for r in stage.repeats.enumerate())
        count *= _count(space.head, "head", context, block_type)
        ops = {v for stage in space.stages for v in (stage.fields["op"].values or ())}
        if "bsconv_s" in ops or "bsconv_s" in (space.stem["op"].values or ()):
            count *= space.model["alpha"].count()
        total += count
    return total


def _count(fields_: dict[str, Choice], where: str, context: dict, block_type: str,
           first_of: StageSpace | None = None) -> float:
    """Assignments of one part's fields, branching on each value (later conditions may refer to it); with
    `first_of`, the stage's first block, which may sample padding_free too."""
    keys = list(fields_)
    table = {"stem": STEM_FIELDS, "head": HEAD_FIELDS, "block": BLOCK_FIELDS}[where]

    def count(i: int, values: dict[str, Any]) -> float:
        if i == len(keys):
            if first_of is not None and padding_free_applies(first_of, 0, block_type, values):
                return first_of.padding_free.count()
            return 1
        key, choice = keys[i], fields_[keys[i]]
        if not field_applies(where, key, choice, block_type, values):
            return count(i + 1, dict(values, **{key: table[key][1]}))
        if choice.count() == math.inf:
            return math.inf
        return sum(count(i + 1, dict(values, **{key: value})) for value in choice.enumerate())

    return count(0, dict(context, type=block_type) if where == "block" else dict(context))
