"""Search spaces: a YAML file of per-block choices that `sample(trial)` turns into an `ArchSpec`.

A space is a stem, a list of stages and a head, plus model-level choices. Every field is either a
fixed value, a list of choices, or a range `{low: .., high: .., step: .., log: ..}`; any field may
carry a condition `{choices: [...], when: {field: value-or-list}}` and is then sampled only when the
condition holds (its default applies otherwise). Each stage samples `repeats`, then every block of
the stage samples its own fields (per-layer choices), so an Optuna parameter is named after its
place: `width_multiplier`, `stem.act`, `s3.repeats`, `s3.b1.op`, `s3.padding_free`, `head.conv_channels`.

Channel numbers are base widths: the model's `width_multiplier` w scales them with `int(c * w)` as
the zoo does (the head's 1x1 conv only when w > 1); an inverted block's `expansion` e gives
`mid_channels = int(e * in_base * w)` where `in_base` is the base width entering the block.
Rules of the ArchSpec are built in: `p` is sampled only for `bsconv_s` layers of non-inverted blocks,
`expansion` and `se` only for inverted blocks, `padding_free` only for a stride-2 first block whose
operator has a depthwise conv, `alpha` only when some layer is `bsconv_s` (0 otherwise), the head's
`se`/`act` only with a head conv. Optuna is imported only for type hints.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsnas.errors import BsnasError
from bsnas.spec import (
    ACTIVATIONS,
    BLOCK_TYPES,
    KERNEL_SIZES,
    OPS,
    ArchSpec,
    BlockSpec,
    FieldChecker,
    HeadSpec,
    StemSpec,
    read_yaml,
)
from bsnas.zoo import scale_channels

if TYPE_CHECKING:
    import optuna

__all__ = ["SPACE_FORMAT_VERSION", "Choice", "SearchSpace", "load_space", "space_from_dict", "random_params"]

SPACE_FORMAT_VERSION = 1
FAMILIES = ("mobilenet", "resnet")

# Field -> (validator kind, default). Order is the sampling order: a `when` may refer to earlier fields.
_BLOCK_FIELDS: dict[str, tuple[str, Any]] = {
    "op": ("op", "regular"),
    "kernel_size": ("kernel", 3),
    "expansion": ("positive", None),
    "out_channels": ("channels", None),
    "se": ("bool", False),
    "act": ("act", "relu"),
    "p": ("ratio", None),
    "inner_bn": ("bool", False),
}
_STAGE_KEYS = ("stride", "repeats", "padding_free", *_BLOCK_FIELDS)
_STEM_FIELDS: dict[str, tuple[str, Any]] = {
    "op": ("op", "regular"),
    "out_channels": ("channels", None),
    "kernel_size": ("kernel", 3),
    "stride": ("stride", 1),
    "act": ("act_or_null", "relu"),
    "bn": ("bool", True),
    "max_pool": ("bool", False),
    "padding_free": ("bool", False),
    "p": ("ratio", None),
    "inner_bn": ("bool", False),
}
_HEAD_FIELDS: dict[str, tuple[str, Any]] = {
    "conv_channels": ("channels_or_null", None),
    "bn_act": ("bool", False),
    "se": ("bool", False),
    "act": ("act", "relu"),
}
_MODEL_FIELDS: dict[str, tuple[str, Any]] = {
    "block_type": ("block_type", None),
    "width_multiplier": ("positive", 1),
    "alpha": ("alpha", 0.0),
}
_TOP_KEYS = ("format_version", "name", "family", "description", "model", "stem", "stages", "head")


# ---------------------------------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class Choice:
    """One field: fixed (`values` of length 1), categorical (`values`), or an int/float range; `when` conditions it."""

    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def is_int(self) -> bool:
        return self.is_range and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    @property
    def fixed(self) -> bool:
        return self.values is not None and len(self.values) == 1

    def count(self) -> float:
        """Number of distinct values (inf for a continuous range)."""
        if self.values is not None:
            return len(self.values)
        if self.is_int:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.step:
            return math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return math.inf

    def enumerate(self) -> list:
        """All values of a finite choice in order."""
        if self.values is not None:
            return list(self.values)
        if self.is_int:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step:
            return [self.low + i * self.step for i in range(int(self.count()))]
        raise ValueError("a continuous range cannot be enumerated")

    def applies(self, context: dict[str, Any]) -> bool:
        return all(context.get(key) in allowed for key, allowed in self.when)

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        if self.values is not None:
            return trial.suggest_categorical(name, list(self.values))
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def random(self, rng: random.Random) -> Any:
        if self.values is not None:
            return rng.choice(self.values)
        if self.is_int or self.step:
            return rng.choice(self.enumerate())
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def contains(self, value: Any) -> bool:
        if self.values is not None:
            return any(value == v and type(value) is type(v) or _close(value, v) for v in self.values)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return self.low - 1e-12 <= value <= self.high + 1e-12

    def describe(self) -> str:
        condition = ""
        if self.when:
            condition = " when " + ", ".join(f"{k} in [{', '.join(_show(x) for x in v)}]" for k, v in self.when)
        if self.values is not None:
            text = _show(self.values[0]) if self.fixed else "[" + ", ".join(_show(v) for v in self.values) + "]"
        else:
            text = f"{_show(self.low)}..{_show(self.high)}" + (f" step {_show(self.step)}" if self.step else "")
            text += " (log)" if self.log else ""
        return text + condition


def _close(a: Any, b: Any) -> bool:
    return (isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool)
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class StageSpace:
    """One stage: a fixed stride, a choice of repeats and per-block field choices."""

    stride: int
    repeats: Choice
    padding_free: Choice
    fields: dict[str, Choice]
    explicit: frozenset = frozenset()  # the fields the file sets (the rest hold their defaults)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; `sample(trial)` gives an ArchSpec. `source` is the file it came from."""

    name: str
    family: str | None
    model: dict[str, Choice]
    stem: dict[str, Choice]
    stages: tuple[StageSpace, ...]
    head: dict[str, Choice]
    description: str = ""
    source: str = "<space>"
    in_channels: int = 3
    num_classes: int = 10
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def for_data(self, in_channels: int, num_classes: int) -> SearchSpace:
        """The same space producing specs for `in_channels` input channels and `num_classes` classes."""
        return dataclasses.replace(self, in_channels=in_channels, num_classes=num_classes)

    # -------------------------------------------------------------------------------------- sampling

    def sample(self, trial: optuna.trial.BaseTrial, width_multiplier: Any = None) -> ArchSpec:
        """Sample an ArchSpec with `trial` (any Optuna trial, FixedTrial included).

        `width_multiplier` overrides the sampled one (used to shrink a candidate into a budget).
        """
        return self._decode(lambda name, choice, hint: choice.suggest(trial, name), width_multiplier)

    def spec_from_params(self, params: dict[str, Any], width_multiplier: Any = None) -> ArchSpec:
        """The ArchSpec of a complete parameter dict (as `trial.params`)."""

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            if name not in params:
                raise BsnasError(f"{self.source}: parameter {name!r} is missing; the trial is not of this space.")
            return params[name]

        return self._decode(choose, width_multiplier)

    def random_spec(self, rng: random.Random) -> tuple[ArchSpec, dict[str, Any]]:
        """A uniformly drawn point (per field) and its parameters, without Optuna."""
        params: dict[str, Any] = {}

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            params[name] = choice.random(rng)
            return params[name]

        return self._decode(choose), params

    def corner_spec(self, largest: bool) -> ArchSpec:
        """The point with the smallest (or largest) value of every field: numbers by value, operators by their usual
        cost (bsconv_s < dsc < bsconv_u < regular), other lists in file order."""

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            if choice.values is not None:
                values = choice.values
                if name.endswith(".op"):
                    values = sorted(values, key=lambda op: _OP_COST[op])
                elif all(isinstance(v, (int, float)) or v is None for v in values):
                    values = sorted(values, key=lambda v: -1 if v is None else v)
                return values[-1] if largest else values[0]
            return choice.high if largest else choice.low

        return self._decode(choose)

    def params_of(self, spec: ArchSpec) -> dict[str, Any] | None:
        """The parameters that sample exactly `spec` (its name aside), or None when it is no point of the space.

        A depth-first search over the choices, pruned block by block against `spec`.
        """
        target = dataclasses.replace(spec, name="")
        if (spec.in_channels, spec.num_classes) != (self.in_channels, self.num_classes):
            return None
        return _search_params(self, target)

    def _decode(self, choose: Callable[[str, Choice, Any], Any], width_multiplier: Any = None,
                check: Callable[[str, Any], None] | None = None) -> ArchSpec:
        """Walk the space in its fixed order, asking `choose(name, choice, hint)` for every non-fixed field."""
        check = check or (lambda where, value: None)

        def pick(name: str, choice: Choice, hint: Any = None) -> Any:
            return choice.values[0] if choice.fixed else choose(name, choice, hint)

        context: dict[str, Any] = {}
        for key in ("block_type", "width_multiplier"):
            context[key] = pick(key, self.model[key], {"where": "model", "key": key})
        if width_multiplier is not None:
            context["width_multiplier"] = width_multiplier
        width = _fraction(context["width_multiplier"])
        block_type = context["block_type"]

        stem_values = self._layer_values("stem", self.stem, dict(context), pick)
        stem_base = stem_values["out_channels"]
        stem_values["out_channels"] = scale_channels(stem_base, width)
        if stem_values["op"] != "bsconv_s":
            stem_values["p"] = None
        stem = StemSpec(**stem_values)
        check("stem", stem)

        blocks: list[BlockSpec] = []
        in_base = stem_base
        for s, stage in enumerate(self.stages):
            repeats = pick(f"s{s}.repeats", stage.repeats, {"where": "repeats", "done": len(blocks)})
            check(f"s{s}.repeats", (len(blocks), repeats))
            for b in range(repeats):
                prefix = f"s{s}.b{b}"
                local = dict(context, type=block_type)
                values = {}
                for key, choice in stage.fields.items():
                    if not _applies(key, block_type, local) or not choice.applies(local):
                        values[key] = _BLOCK_FIELDS[key][1]
                    else:
                        values[key] = pick(f"{prefix}.{key}", choice, {"where": "block", "index": len(blocks),
                                                                       "key": key, "in_base": in_base, "width": width})
                    local[key] = values[key]
                stride = stage.stride if b == 0 else 1
                padding_free = False
                if (b == 0 and stride == 2 and block_type in ("conv", "inverted") and values["op"] != "regular"
                        and stage.padding_free.applies(local)):
                    padding_free = bool(pick(f"s{s}.padding_free", stage.padding_free,
                                             {"where": "block", "index": len(blocks), "key": "padding_free"}))
                out_base = values["out_channels"]
                mid = None
                if block_type == "inverted":
                    mid = max(1, int(_fraction(values["expansion"]) * in_base * width))
                block = BlockSpec(type=block_type, op=values["op"], out_channels=scale_channels(out_base, width),
                                  kernel_size=values["kernel_size"], stride=stride, act=values["act"],
                                  mid_channels=mid, se=bool(values["se"]) if block_type == "inverted" else False,
                                  p=values["p"], inner_bn=bool(values["inner_bn"]), padding_free=padding_free)
                check(f"blocks[{len(blocks)}]", block)
                blocks.append(block)
                in_base = out_base
        check("blocks", len(blocks))
        if not blocks:
            raise BsnasError(f"{self.source}: stages: this point has no blocks; give some stage repeats >= 1.")

        head_values = self._layer_values("head", self.head, dict(context), pick)
        if head_values["conv_channels"] is not None and width > 1:
            head_values["conv_channels"] = scale_channels(head_values["conv_channels"], width)
        head = HeadSpec(**head_values)
        check("head", head)

        uses_s = stem.op == "bsconv_s" or any(block.op == "bsconv_s" for block in blocks)
        alpha = float(pick("alpha", self.model["alpha"], {"where": "model", "key": "alpha"})) if uses_s else 0.0
        check("alpha", alpha)
        spec = ArchSpec(name="", stem=stem, blocks=tuple(blocks), head=head, num_classes=self.num_classes,
                        in_channels=self.in_channels, alpha=alpha)
        return spec

    def _layer_values(self, where: str, fields_: dict[str, Choice], context: dict[str, Any], pick) -> dict:
        values = {}
        table = _STEM_FIELDS if where == "stem" else _HEAD_FIELDS
        for key, choice in fields_.items():
            if not _layer_applies(where, key, context) or not choice.applies(context):
                values[key] = table[key][1]
            else:
                values[key] = pick(f"{where}.{key}", choice, {"where": where, "key": key,
                                                              "width": _fraction(context["width_multiplier"])})
            context[key] = values[key]
        return values

    # --------------------------------------------------------------------------------------- summaries

    def size(self) -> float:
        """Number of distinct parameter assignments (inf when a continuous range is sampled)."""
        total = 0.0
        for block_type in self.model["block_type"].values:
            count = self.model["width_multiplier"].count()
            count *= _count_fields(self.stem, {"block_type": block_type}, "stem")
            for stage in self.stages:
                per_block = _count_block(stage, block_type, first=False)
                first = _count_block(stage, block_type, first=True)
                count *= sum(first * per_block ** (r - 1) if r else 1 for r in stage.repeats.enumerate())
            count *= _count_fields(self.head, {}, "head")
            ops = {v for stage in self.stages for v in (stage.fields["op"].values or ())}
            if "bsconv_s" in ops or "bsconv_s" in (self.stem["op"].values or ()):
                count *= self.model["alpha"].count()
            total += count
        return total

    def parameter_names(self) -> Iterator[str]:
        """Names of the Optuna parameters the space may create."""
        yield from ("block_type", "width_multiplier", "alpha")
        yield from (f"stem.{key}" for key in self.stem)
        for s, stage in enumerate(self.stages):
            yield f"s{s}.repeats"
            yield f"s{s}.padding_free"
            for b in range(max(stage.repeats.enumerate())):
                yield from (f"s{s}.b{b}.{key}" for key in stage.fields)
        yield from (f"head.{key}" for key in self.head)

    def describe(self) -> list[tuple[str, str]]:
        """(field, choices) rows for display."""
        rows = [(f"model.{key}", choice.describe()) for key, choice in self.model.items()]
        rows += [(f"stem.{key}", choice.describe()) for key, choice in self.stem.items()]
        for s, stage in enumerate(self.stages):
            rows.append((f"stages[{s}].stride", str(stage.stride)))
            rows.append((f"stages[{s}].repeats", stage.repeats.describe()))
            if stage.stride == 2:
                rows.append((f"stages[{s}].padding_free", stage.padding_free.describe()))
            rows += [(f"stages[{s}].{key}", choice.describe()) for key, choice in stage.fields.items()
                     if key in stage.explicit]
        rows += [(f"head.{key}", choice.describe()) for key, choice in self.head.items()]
        return rows


_OP_COST = {"bsconv_s": 0, "dsc": 1, "bsconv_u": 2, "regular": 3}


def _applies(key: str, block_type: str, values: dict[str, Any]) -> bool:
    """Built-in rules of the ArchSpec for block fields."""
    inverted = block_type == "inverted"
    if key in ("expansion", "se"):
        return inverted
    if key == "p":
        return not inverted and values.get("op") == "bsconv_s"
    if key == "inner_bn":
        return not inverted
    return True


def _layer_applies(where: str, key: str, values: dict[str, Any]) -> bool:
    """Built-in rules of the ArchSpec for stem and head fields."""
    if where == "stem":
        return key != "p" or values.get("op") == "bsconv_s"
    if key == "se":
        return values.get("conv_channels") is not None
    if key == "act":
        return values.get("conv_channels") is not None or bool(values.get("bn_act"))
    return True


def _count_fields(fields_: dict[str, Choice], context: dict[str, Any], where: str) -> float:
    """Count assignments of stem/head fields, branching on fields that later conditions refer to."""
    keys = list(fields_)

    def count(i: int, ctx: dict[str, Any]) -> float:
        if i == len(keys):
            return 1
        key, choice = keys[i], fields_[keys[i]]
        skip = not choice.applies(ctx) or not _layer_applies(where, key, ctx)
        if skip or choice.fixed:
            default = (_STEM_FIELDS if where == "stem" else _HEAD_FIELDS)[key][1]
            return count(i + 1, dict(ctx, **{key: default if skip else choice.values[0]}))
        if choice.count() == math.inf:
            return math.inf
        return sum(count(i + 1, dict(ctx, **{key: v})) for v in choice.enumerate())

    return count(0, dict(context))


def _count_block(stage: StageSpace, block_type: str, first: bool) -> float:
    keys = list(stage.fields)

    def count(i: int, ctx: dict[str, Any]) -> float:
        if i == len(keys):
            pf = (first and stage.stride == 2 and block_type in ("conv", "inverted") and ctx.get("op") != "regular"
                  and stage.padding_free.applies(ctx))
            return stage.padding_free.count() if pf else 1
        key, choice = keys[i], stage.fields[keys[i]]
        if not _applies(key, block_type, ctx) or not choice.applies(ctx):
            return count(i + 1, ctx)
        if choice.count() == math.inf:
            return math.inf
        return sum(count(i + 1, dict(ctx, **{key: v})) for v in choice.enumerate())

    return count(0, {"type": block_type, "block_type": block_type})


def _fraction(value: Any) -> Fraction:
    """Exact form of a width multiplier or expansion: 0.35 -> 7/20, 3.6666666666666665 -> 11/3."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(str(value)).limit_denominator(1000) if len(str(value)) < 10 else \
        Fraction(value).limit_denominator(1000)


# ------------------------------------------------------------------------------------ zoo points (inverse)


class _Branch(Exception):
    def __init__(self, chosen: list, values: list):
        self.name, self.values = chosen, values  # the decisions so far, the candidates of the next one


class _Mismatch(Exception):
    """The hints cannot be produced by this space (raised while decoding a spec into parameters)."""


def _search_params(space: SearchSpace, target: ArchSpec) -> dict[str, Any] | None:
    """Depth-first search for the parameters of `target`: replay the decoder with a growing prefix of decisions."""

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

    def wanted(hint: dict) -> Callable[[Any], bool] | Any:
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
            return lambda e: max(1, int(_fraction(e) * hint["in_base"] * width)) == layer.mid_channels
        if key == "conv_channels":
            return lambda c: (c if c is None or width <= 1 else scale_channels(c, width)) == layer.conv_channels
        return lambda v: v == getattr(layer, key) or _close(v, getattr(layer, key))

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
            space._decode(choose, check=check)
        except _Mismatch:
            return None
        except _Branch as branch:
            for value in branch.values:
                found = attempt([*branch.name, value])
                if found is not None:
                    return found
            return None
        return params

    return attempt([])


def random_params(space: SearchSpace, count: int, seed: int = 0) -> list[tuple[ArchSpec, dict[str, Any]]]:
    """`count` random points of the space (for summaries and tests)."""
    rng = random.Random(seed)
    return [space.random_spec(rng) for _ in range(count)]


# ---------------------------------------------------------------------------------------------- validation


class _Checker(FieldChecker):
    """Field checks of search-space values; an omitted (null) section is an empty mapping."""

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict:
        return {} if value is None else super().mapping(value, where, allowed)

    def value(self, value: Any, where: str, kind: str) -> Any:
        """Check one candidate value of a field of the given kind."""
        if kind == "op":
            allowed = OPS
        elif kind == "act":
            allowed = ACTIVATIONS
        elif kind == "act_or_null":
            allowed = (*ACTIVATIONS, None)
        elif kind == "kernel":
            allowed = KERNEL_SIZES
        elif kind == "stride":
            allowed = (1, 2)
        elif kind == "block_type":
            allowed = BLOCK_TYPES
        elif kind == "bool":
            if not isinstance(value, bool):
                self.fail(where, f"{value!r} is not true or false")
            return value
        elif kind in ("channels", "channels_or_null"):
            if value is None and kind == "channels_or_null":
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.fail(where, f"{value!r} is not an integer >= 1")
            return value
        elif kind == "positive":
            if isinstance(value, str) and "/" in value:
                try:
                    value = float(Fraction(value))
                except (ValueError, ZeroDivisionError):
                    self.fail(where, f"{value!r} is not a number or a fraction such as 11/3")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                self.fail(where, f"{value!r} is not a number > 0")
            return value
        elif kind == "ratio":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                self.fail(where, f"{value!r} is not a number in (0, 1]")
            return float(value)
        elif kind == "alpha":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                self.fail(where, f"{value!r} is not a finite number >= 0")
            return float(value)
        else:  # pragma: no cover - programming error
            raise AssertionError(kind)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            names = ", ".join(_show(a) for a in allowed)
            self.fail(where, f"{value!r} is not one of {names}")
        return value

    def choice(self, data: Any, where: str, kind: str, earlier: tuple[str, ...]) -> Choice:
        """A fixed value, a list, a range mapping, or `{choices|low/high.., when: {...}}`."""
        when: tuple = ()
        if isinstance(data, dict) and ("choices" in data or "when" in data or "low" in data):
            allowed = ("choices", "low", "high", "step", "log", "when")
            self.mapping(data, where, allowed)
            if "when" in data:
                when = self.condition(data["when"], f"{where}.when", earlier)
            if "choices" in data:
                if "low" in data or "high" in data:
                    self.fail(where, "give either choices or low/high, not both")
                choice = self.choice(data["choices"], where, kind, earlier)
            elif "low" in data:
                choice = self.range(data, where, kind)
            else:
                self.fail(where, "a conditional field needs choices or low/high besides when")
            return dataclasses.replace(choice, when=when)
        if isinstance(data, list):
            if not data:
                self.fail(where, "an empty list of choices; give at least one value")
            values = tuple(self.value(v, f"{where}[{i}]", kind) for i, v in enumerate(data))
            if len(set(map(repr, values))) != len(values):
                self.fail(where, "a choice is listed twice")
            return Choice(values=values)
        if isinstance(data, dict):
            self.fail(where, "a range needs low and high (and optionally step, log)")
        return Choice(values=(self.value(data, where, kind),))

    def range(self, data: dict, where: str, kind: str) -> Choice:
        if kind not in ("positive", "ratio", "alpha", "channels"):
            self.fail(where, "a range (low/high) is allowed only for numeric fields; give a list instead")
        if "high" not in data:
            self.fail(f"{where}.high", "missing; a range needs low and high")
        low = self.value(data["low"], f"{where}.low", kind) if not (kind == "alpha" and data["low"] == 0) else 0.0
        high = self.value(data["high"], f"{where}.high", kind)
        step = data.get("step")
        log = data.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{where}.log", f"{log!r} is not true or false")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            self.fail(f"{where}.step", f"{step!r} is not a number > 0")
        if high < low:
            self.fail(where, f"high {high!r} is below low {low!r}")
        if log and step is not None:
            self.fail(where, "a log range takes no step")
        if log and low <= 0:
            self.fail(f"{where}.low", "a log range needs low > 0")
        if kind == "channels" and not all(isinstance(v, int) for v in (low, high, step or 1)):
            self.fail(where, "a channel range needs integer low, high and step")
        return Choice(low=low, high=high, step=step, log=log)

    def condition(self, data: Any, where: str, earlier: tuple[str, ...]) -> tuple:
        if not isinstance(data, dict) or not data:
            self.fail(where, "expected a mapping such as {op: bsconv_s}")
        items = []
        for key, allowed in data.items():
            if key not in earlier:
                self.fail(f"{where}.{key}", f"a condition may refer to earlier fields only: {', '.join(earlier)}")
            items.append((key, tuple(allowed) if isinstance(allowed, list) else (allowed,)))
        return tuple(items)


def _int_repeats(check: _Checker, data: Any, where: str) -> Choice:
    if isinstance(data, dict):
        check.mapping(data, where, ("low", "high"))
        for key in ("low", "high"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                check.fail(f"{where}.{key}", f"{value!r} is not an integer >= 0")
        if data["high"] < data["low"]:
            check.fail(where, f"high {data['high']} is below low {data['low']}")
        return Choice(low=data["low"], high=data["high"])
    values = data if isinstance(data, list) else [data]
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            check.fail(f"{where}[{i}]" if isinstance(data, list) else where, f"{value!r} is not an integer >= 0")
    if not values:
        check.fail(where, "an empty list of choices; give at least one value")
    return Choice(values=tuple(sorted(set(values))))


def _fields(check: _Checker, data: dict, where: str, table: dict[str, tuple[str, Any]], context: tuple[str, ...],
            required: tuple[str, ...] = ()) -> tuple[dict[str, Choice], set[str]]:
    result, explicit = {}, set()
    earlier = list(context)
    for key, (kind, default) in table.items():
        if key in data:
            result[key] = check.choice(data[key], f"{where}.{key}", kind, tuple(earlier))
            explicit.add(key)
        elif key in required:
            check.fail(f"{where}.{key}", "missing; it is required here")
        else:
            result[key] = Choice(values=(default,))
        earlier.append(key)
    return result, explicit


def space_from_dict(data: Any, source: str = "<space>") -> SearchSpace:
    """Validate a plain dict (e.g. from YAML) and return the SearchSpace; errors name the source and the field."""
    check = _Checker(source)
    if not isinstance(data, dict):
        check.fail("top level", f"expected a mapping with keys {', '.join(_TOP_KEYS)}")
    check.mapping(data, "", _TOP_KEYS)
    version = data.get("format_version", SPACE_FORMAT_VERSION)
    if version != SPACE_FORMAT_VERSION:
        check.fail("format_version", f"{version!r} is not supported; this bsnas reads version {SPACE_FORMAT_VERSION}")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        check.fail("name", f"{name!r} is not a non-empty string")
    family = data.get("family")
    if family is not None and family not in FAMILIES:
        check.fail("family", f"{family!r} is not one of {', '.join(FAMILIES)}, null")

    model_data = check.mapping(data.get("model"), "model", tuple(_MODEL_FIELDS))
    if "block_type" not in model_data:
        check.fail("model.block_type", f"missing; give one or a list of {', '.join(BLOCK_TYPES)}")
    model, _ = _fields(check, model_data, "model", _MODEL_FIELDS, ())
    for key in ("block_type", "width_multiplier"):
        if model[key].when:
            check.fail(f"model.{key}", "model-level choices take no condition")
    if model["block_type"].is_range:
        check.fail("model.block_type", "expected a block type or a list of them")
    inverted_possible = "inverted" in model["block_type"].values
    plain_possible = any(t != "inverted" for t in model["block_type"].values)

    if "stem" not in data:
        check.fail("stem", "missing; a space needs stem, stages and head")
    stem_data = check.mapping(data["stem"], "stem", tuple(_STEM_FIELDS))
    stem, _ = _fields(check, stem_data, "stem", _STEM_FIELDS, ("block_type", "width_multiplier"),
                      required=("out_channels",))
    if stem["out_channels"].is_range and not stem["out_channels"].is_int:
        check.fail("stem.out_channels", "a channel range needs integers")
    if "bsconv_s" in (stem["op"].values or ()) and "p" not in stem_data:
        check.fail("stem.p", "needed because stem.op may be bsconv_s")

    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        check.fail("stages", "expected a non-empty list of stages")
    stages = []
    for s, stage_data in enumerate(stages_data):
        where = f"stages[{s}]"
        stage_data = check.mapping(stage_data, where, _STAGE_KEYS)
        for key in ("repeats", "out_channels", "op"):
            if key not in stage_data:
                check.fail(f"{where}.{key}", "missing; every stage needs repeats, op and out_channels")
        stride = stage_data.get("stride", 1)
        if stride not in (1, 2) or isinstance(stride, bool):
            check.fail(f"{where}.stride", f"{stride!r} is not one of 1, 2")
        repeats = _int_repeats(check, stage_data["repeats"], f"{where}.repeats")
        fields_, explicit = _fields(check, stage_data, where, _BLOCK_FIELDS, ("block_type", "width_multiplier"))
        padding_free = check.choice(stage_data.get("padding_free", False), f"{where}.padding_free", "bool",
                                    ("block_type", "width_multiplier", *_BLOCK_FIELDS))
        if stride != 2 and "padding_free" in stage_data and padding_free.values != (False,):
            check.fail(f"{where}.padding_free", "applies only to stride-2 stages")
        if inverted_possible and "expansion" not in stage_data:
            check.fail(f"{where}.expansion", "missing; needed because model.block_type may be inverted")
        ops = fields_["op"].values or ()
        if plain_possible and "bsconv_s" in ops and "p" not in stage_data:
            check.fail(f"{where}.p", "needed because op may be bsconv_s (the p of BSConv-S, in (0, 1])")
        for key in ("expansion",):
            if fields_[key].is_range and not fields_[key].step and key == "expansion":
                check.fail(f"{where}.expansion", "give a list of expansions (a continuous range cannot hold "
                           "the zoo's exact widths)")
        stages.append(StageSpace(stride, repeats, padding_free, fields_, frozenset(explicit)))
    if all(max(stage.repeats.enumerate()) == 0 for stage in stages):
        check.fail("stages", "every stage has repeats 0; a point needs at least one block")

    head_data = check.mapping(data.get("head"), "head", tuple(_HEAD_FIELDS))
    head, _ = _fields(check, head_data, "head", _HEAD_FIELDS, ("block_type", "width_multiplier"))
    description = data.get("description", "")
    if not isinstance(description, str):
        check.fail("description", f"{description!r} is not a string")
    return SearchSpace(name=name, family=family, model=model, stem=stem, stages=tuple(stages), head=head,
                       description=description.strip(), source=source, raw=copy.deepcopy(data))


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; errors name the file and the field."""
    return space_from_dict(read_yaml(path, "search-space"), source=str(path))
