"""Zoo models as points of a space: the parameters that decode to a given `ArchSpec`, if any.

A depth-first search over the space's decisions, replaying `SearchSpace.decode` with a growing prefix of
choices and pruned block by block against the target: a field's candidates are the values whose decoded
result (through the decoder's own rules: `scale_channels`, `mid_channels`, `head_conv_channels`) matches the
target, so only real ambiguities branch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from bsnas.arch.spec import ArchSpec
from bsnas.arch.zoo import scale_channels
from bsnas.space.choices import Choice, close
from bsnas.space.decode import SearchSpace, head_conv_channels, mid_channels

__all__ = ["params_of"]


class _Branch(Exception):
    def __init__(self, chosen: list, values: list):
        self.chosen, self.values = chosen, values  # the decisions so far, the candidates of the next one


class _Mismatch(Exception):
    """The target cannot be produced along this path of decisions."""


def params_of(space: SearchSpace, spec: ArchSpec) -> dict[str, Any] | None:
    """The parameters that make `space` decode exactly `spec` (its name aside), or None when it is no point."""
    target = dataclasses.replace(spec, name="")
    if (spec.in_channels, spec.image_size, spec.num_classes) != (space.in_channels, space.image_size,
                                                                 space.num_classes):
        return None

    def check(where: str, value: Any) -> None:
        if where == "stem":
            ok = value == target.stem
        elif where.startswith("blocks["):
            index = int(where[7:-1])
            ok = index < len(target.blocks) and value == target.blocks[index]
        elif where.endswith(".repeats"):
            done, repeats = value
            ok = done + repeats <= len(target.blocks)
        elif where == "blocks":
            ok = value == len(target.blocks)
        elif where == "head":
            ok = value == target.head
        elif where == "alpha":
            ok = math.isclose(value, target.alpha, rel_tol=1e-9, abs_tol=1e-12)
        else:
            ok = True
        if not ok:
            raise _Mismatch

    def wanted(hint: dict) -> Callable[[Any], bool]:
        """A predicate on the candidate values of one field, from the target spec."""
        where, key = hint["where"], hint.get("key")
        if where == "repeats":
            return lambda r: hint["done"] + r <= len(target.blocks)
        if where == "model":
            if key == "block_type":
                return lambda t: t == target.blocks[0].type
            if key == "alpha":
                return lambda a: math.isclose(a, target.alpha, rel_tol=1e-9, abs_tol=1e-12)
            return lambda w: True
        if where == "block":
            if hint["index"] >= len(target.blocks):
                return lambda v: False
            layer = target.blocks[hint["index"]]
        else:
            layer = target.stem if where == "stem" else target.head
        width = hint.get("width")
        if key == "out_channels":
            return lambda c: scale_channels(c, width) == layer.out_channels
        if key == "expansion":
            return lambda e: mid_channels(e, hint["in_base"], width) == layer.mid_channels
        if key == "conv_channels":
            return lambda c: head_conv_channels(c, width) == layer.conv_channels
        return lambda v: v == getattr(layer, key) or close(v, getattr(layer, key))

    def hint_values(choice: Choice, hint: dict) -> list:
        accept = wanted(hint)
        if choice.count() < math.inf:
            return [v for v in choice.enumerate() if accept(v)]
        # a continuous range: only fields copied straight into the spec can be matched
        guess = target.alpha if hint.get("key") == "alpha" else None
        if hint["where"] == "block" and hint["index"] < len(target.blocks):
            guess = getattr(target.blocks[hint["index"]], hint["key"], None)
        elif hint["where"] in ("stem", "head"):
            guess = getattr(target.stem if hint["where"] == "stem" else target.head, hint["key"], None)
        return [guess] if guess is not None and choice.contains(guess) and accept(guess) else []

    def attempt(prefix: list) -> dict[str, Any] | None:
        params: dict[str, Any] = {}
        chosen: list = []

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            if len(chosen) < len(prefix):
                value = prefix[len(chosen)]
            else:
                values = hint_values(choice, hint)
                if not values:
                    raise _Mismatch
                if len(values) > 1:  # only real ambiguities branch; the rest decode in one pass
                    raise _Branch(list(chosen), values)
                value = values[0]
            chosen.append(value)
            params[name] = value
            return value

        try:
            space.decode(choose, check=check)
        except _Mismatch:
            return None
        except _Branch as branch:
            for value in branch.values:
                found = attempt([*branch.chosen, value])
                if found is not None:
                    return found
            return None
        return params

    return attempt([])
