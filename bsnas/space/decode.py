"""A search space and its decoding: parameters (an Optuna trial, a dict, random draws) to an `ArchSpec`.

A space is a stem, a list of stages and a head, plus model-level choices. Each stage samples `repeats`, then
every block of the stage samples its own fields (per-layer choices), so an Optuna parameter is named after its
place: `width_multiplier`, `stem.act`, `s3.repeats`, `s3.b1.op`, `s3.padding_free`, `head.conv_channels`.

Channel numbers are base widths: the model's `width_multiplier` w scales them with `int(c * w)` as the zoo
does (the head's 1x1 conv only when w > 1); an inverted block's `expansion` e gives
`mid_channels = int(e * in_base * w)` where `in_base` is the base width entering the block. Rules of the
ArchSpec are built in (`field_applies`): `p` only for `bsconv_s` layers of non-inverted blocks, `inner_bn` only for
BSConv layers of non-inverted blocks, the stem's operator, kernel, BN and max-pool only without the padding-free
stem block, `expansion` and `se` only for inverted blocks, `padding_free` only for a stride-2 first block whose
operator has a depthwise conv, `alpha` only when some layer is `bsconv_s` (0 otherwise), the head's `se`/`act` only
with a head conv. Optuna is imported only for type hints.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from bsnas.arch.spec import BSCONV_OPS, PADDING_FREE_STEM_FIXED, ArchSpec, BlockSpec, HeadSpec, StemSpec
from bsnas.arch.zoo import scale_channels
from bsnas.errors import BsnasError
from bsnas.space.choices import Choice

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace", "StageSpace", "BLOCK_FIELDS", "STEM_FIELDS", "HEAD_FIELDS", "MODEL_FIELDS", "fraction",
           "field_applies", "padding_free_applies", "mid_channels", "head_conv_channels", "make_stem", "make_block",
           "make_head", "assignments", "block_assignments"]

# Field -> (validator kind, default). Order is the sampling order: a `when` may refer to earlier fields.
BLOCK_FIELDS: dict[str, tuple[str, Any]] = {
    "op": ("op", "regular"),
    "kernel_size": ("kernel", 3),
    "expansion": ("positive", None),
    "out_channels": ("channels", None),
    "se": ("bool", False),
    "act": ("act", "relu"),
    "p": ("ratio", None),
    "inner_bn": ("bool", False),
}
STEM_FIELDS: dict[str, tuple[str, Any]] = {
    "padding_free": ("bool", False),  # first: the padding-free stem block has no op, kernel, bn or max-pool to choose
    "op": ("op", "regular"),
    "out_channels": ("channels", None),
    "kernel_size": ("kernel", 3),
    "stride": ("stride", 1),
    "act": ("act_or_null", "relu"),
    "bn": ("bool", True),
    "max_pool": ("bool", False),
    "p": ("ratio", None),
    "inner_bn": ("bool", False),
}

HEAD_FIELDS: dict[str, tuple[str, Any]] = {
    "conv_channels": ("channels_or_null", None),
    "bn_act": ("bool", False),
    "se": ("bool", False),
    "act": ("act", "relu"),
}
MODEL_FIELDS: dict[str, tuple[str, Any]] = {
    "block_type": ("block_type", None),
    "width_multiplier": ("positive", 1),
    "alpha": ("alpha", 0.0),
}


@dataclass(frozen=True)
class StageSpace:
    """One stage: a fixed stride, a choice of repeats and per-block field choices."""

    stride: int
    repeats: Choice
    padding_free: Choice
    fields: dict[str, Choice]
    explicit: frozenset = frozenset()  # the fields the file sets (the rest hold their defaults)


# ------------------------------------------------------------------------------------------------- rules


@functools.lru_cache(maxsize=4096)
def fraction(value: Any) -> Fraction:
    """Exact form of a width multiplier or expansion: 0.35 -> 7/20, 3.6666666666666665 -> 11/3."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(str(value)).limit_denominator(1000) if len(str(value)) < 10 else \
        Fraction(value).limit_denominator(1000)


def field_applies(where: str, key: str, choice: Choice, block_type: str, values: dict[str, Any]) -> bool:
    """Whether a field is sampled, given the fields sampled before it: the ArchSpec's rules, then `when`."""
    if where == "block":
        inverted = block_type == "inverted"
        if key in ("expansion", "se"):
            rule = inverted
        elif key == "p":
            rule = not inverted and values.get("op") == "bsconv_s"
        elif key == "inner_bn":
            rule = not inverted and values.get("op") in BSCONV_OPS
        else:
            rule = True
    elif where == "stem":
        if values.get("padding_free") and key in PADDING_FREE_STEM_FIXED:
            rule = False
        elif key == "p":
            rule = values.get("op") == "bsconv_s"
        elif key == "inner_bn":
            rule = values.get("op") in BSCONV_OPS
        else:
            rule = True
    elif key == "se":
        rule = values.get("conv_channels") is not None
    elif key == "act":
        rule = values.get("conv_channels") is not None or bool(values.get("bn_act"))
    else:
        rule = True
    return rule and choice.applies(values)


def padding_free_applies(stage: StageSpace, index: int, block_type: str, values: dict[str, Any]) -> bool:
    """`padding_free` is sampled for a stage's stride-2 first block whose operator has a depthwise conv."""
    return (index == 0 and stage.stride == 2 and block_type in ("conv", "inverted") and values["op"] != "regular"
            and stage.padding_free.applies(values))


@functools.lru_cache(maxsize=65536)
def mid_channels(expansion: Any, in_base: int, width: Fraction) -> int:
    """An inverted block's expansion width: int(e * in_base * w), at least 1."""
    return max(1, int(fraction(expansion) * in_base * width))


def head_conv_channels(channels: int | None, width: Fraction) -> int | None:
    """The head's 1x1 conv is scaled by the width only when the width is above 1 (as in the zoo)."""
    return channels if channels is None or width <= 1 else scale_channels(channels, width)


def make_stem(values: dict[str, Any], width: Fraction) -> StemSpec:
    return StemSpec(**dict(values, out_channels=scale_channels(values["out_channels"], width)))


def make_block(values: dict[str, Any], block_type: str, in_base: int, stride: int, padding_free: bool,
               width: Fraction) -> BlockSpec:
    """The BlockSpec of one block's sampled field values."""
    inverted = block_type == "inverted"
    return BlockSpec(type=block_type, op=values["op"], out_channels=scale_channels(values["out_channels"], width),
                     kernel_size=values["kernel_size"], stride=stride, act=values["act"],
                     mid_channels=mid_channels(values["expansion"], in_base, width) if inverted else None,
                     se=bool(values["se"]) if inverted else False, p=values["p"], inner_bn=bool(values["inner_bn"]),
                     padding_free=padding_free)


def make_head(values: dict[str, Any], width: Fraction) -> HeadSpec:
    return HeadSpec(**dict(values, conv_channels=head_conv_channels(values["conv_channels"], width)))


def assignments(where: str, fields_: dict[str, Choice], context: dict[str, Any],
                block_type: str = "") -> Iterator[dict[str, Any]]:
    """Every assignment of a stem's, head's or block's fields (for exact cost bounds): the fields that apply
    in turn (`field_applies`), the rest at their defaults. A continuous range contributes its two ends (costs
    only grow with a width or p)."""
    table = {"stem": STEM_FIELDS, "head": HEAD_FIELDS, "block": BLOCK_FIELDS}[where]
    keys = list(fields_)

    def walk(i: int, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(keys):
            yield {key: values[key] for key in keys}
            return
        key, choice = keys[i], fields_[keys[i]]
        if not field_applies(where, key, choice, block_type, values):
            yield from walk(i + 1, dict(values, **{key: table[key][1]}))
            return
        for value in choice.enumerate() if choice.count() < float("inf") else (choice.low, choice.high):
            yield from walk(i + 1, dict(values, **{key: value}))

    yield from walk(0, dict(context, type=block_type) if where == "block" else dict(context))


def block_assignments(stage: StageSpace, block_type: str, context: dict[str, Any],
                      index: int) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every (field values, padding_free) of the block at `index` of a stage (for exact cost bounds)."""
    for values in assignments("block", stage.fields, context, block_type):
        if padding_free_applies(stage, index, block_type, dict(context, type=block_type, **values)):
            for padding_free in stage.padding_free.enumerate():
                yield values, bool(padding_free)
        else:
            yield values, False


# ------------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; `sample(trial)` gives an ArchSpec. `source` is the file it came from.

    `in_channels`, `image_size` and `num_classes` are the data the specs are made for (`for_data`).
    """

    name: str
    family: str | None
    model: dict[str, Choice]
    stem: dict[str, Choice]
    stages: tuple[StageSpace, ...]
    head: dict[str, Choice]
    description: str = ""
    source: str = "<space>"
    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def for_data(self, in_channels: int, image_size: int, num_classes: int) -> SearchSpace:
        """The same space producing specs for this input (channels, square image size) and class count."""
        return dataclasses.replace(self, in_channels=in_channels, image_size=image_size, num_classes=num_classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.in_channels, self.image_size, self.image_size

    def sample(self, trial: optuna.trial.BaseTrial, width_multiplier: Any = None) -> ArchSpec:
        """Sample an ArchSpec with `trial` (any Optuna trial, FixedTrial included).

        `width_multiplier` overrides the sampled one (used to shrink a candidate into a budget).
        """
        return self.decode(lambda name, choice, hint: choice.suggest(trial, name), width_multiplier)

    def parameters(self) -> dict[str, Choice]:
        """Every parameter `sample` may ask, with its choice, in sampling order: a flat space (for a tool that knows
        no conditions). Each stage lists the blocks of its largest repeats. A point reads only the parameters that
        apply to it (the ArchSpec's rules and `when`, as in `decode`); `spec_from_params` ignores the others."""
        found: dict[str, Choice] = {key: self.model[key] for key in ("block_type", "width_multiplier")}
        found.update({f"stem.{key}": choice for key, choice in self.stem.items()})
        for s, stage in enumerate(self.stages):
            found[f"s{s}.repeats"] = stage.repeats
            for b in range(max(stage.repeats.enumerate())):
                found.update({f"s{s}.b{b}.{key}": choice for key, choice in stage.fields.items()})
            if stage.stride == 2:
                found[f"s{s}.padding_free"] = stage.padding_free
        found.update({f"head.{key}": choice for key, choice in self.head.items()})
        found["alpha"] = self.model["alpha"]
        return {name: choice for name, choice in found.items() if not choice.fixed}

    def spec_from_params(self, params: dict[str, Any], width_multiplier: Any = None) -> ArchSpec:
        """The ArchSpec of a complete parameter dict (as `trial.params`)."""

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            if name not in params:
                raise BsnasError(f"{self.source}: parameter {name!r} is missing; the trial is not of this space.")
            return params[name]

        return self.decode(choose, width_multiplier)

    def random_spec(self, rng: random.Random) -> tuple[ArchSpec, dict[str, Any]]:
        """A uniformly drawn point (per field) and its parameters, without Optuna."""
        params: dict[str, Any] = {}

        def choose(name: str, choice: Choice, hint: Any) -> Any:
            params[name] = choice.random(rng)
            return params[name]

        return self.decode(choose), params

    def decode(self, choose: Callable[[str, Choice, dict], Any], width_multiplier: Any = None,
               check: Callable[[str, Any], None] | None = None) -> ArchSpec:
        """Walk the space in its fixed order, asking `choose(name, choice, hint)` for every non-fixed field.

        `hint` says where the field is (`where`: model, stem, block, repeats, head; `key`, `index`, ...);
        `check(where, value)` sees every finished part (stem, blocks[i], head, ...) as it is made.
        """
        check = check or (lambda where, value: None)

        def pick(name: str, choice: Choice, hint: dict) -> Any:
            return choice.values[0] if choice.fixed else choose(name, choice, hint)

        context: dict[str, Any] = {}
        for key in ("block_type", "width_multiplier"):
            context[key] = pick(key, self.model[key], {"where": "model", "key": key})
        if width_multiplier is not None:
            context["width_multiplier"] = width_multiplier
        width = fraction(context["width_multiplier"])
        block_type = context["block_type"]

        stem_values = self._layer_values("stem", self.stem, dict(context), pick, width)
        stem = make_stem(stem_values, width)
        check("stem", stem)

        blocks: list[BlockSpec] = []
        in_base = stem_values["out_channels"]
        for s, stage in enumerate(self.stages):
            repeats = pick(f"s{s}.repeats", stage.repeats, {"where": "repeats", "done": len(blocks)})
            check(f"s{s}.repeats", (len(blocks), repeats))
            for b in range(repeats):
                values: dict[str, Any] = dict(context, type=block_type)
                for key, choice in stage.fields.items():
                    if field_applies("block", key, choice, block_type, values):
                        hint = {"where": "block", "index": len(blocks), "key": key, "in_base": in_base,
                                "width": width}
                        values[key] = pick(f"s{s}.b{b}.{key}", choice, hint)
                    else:
                        values[key] = BLOCK_FIELDS[key][1]
                padding_free = False
                if padding_free_applies(stage, b, block_type, values):
                    padding_free = bool(pick(f"s{s}.padding_free", stage.padding_free,
                                             {"where": "block", "index": len(blocks), "key": "padding_free"}))
                block = make_block(values, block_type, in_base, stage.stride if b == 0 else 1, padding_free, width)
                check(f"blocks[{len(blocks)}]", block)
                blocks.append(block)
                in_base = values["out_channels"]
        check("blocks", len(blocks))
        if not blocks:
            raise BsnasError(f"{self.source}: stages: this point has no blocks; give some stage repeats >= 1.")

        head = make_head(self._layer_values("head", self.head, dict(context), pick, width), width)
        check("head", head)

        uses_s = stem.op == "bsconv_s" or any(block.op == "bsconv_s" for block in blocks)
        alpha = float(pick("alpha", self.model["alpha"], {"where": "model", "key": "alpha"})) if uses_s else 0.0
        check("alpha", alpha)
        return ArchSpec(name="", stem=stem, blocks=tuple(blocks), head=head, num_classes=self.num_classes,
                        in_channels=self.in_channels, image_size=self.image_size, alpha=alpha)

    @staticmethod
    def _layer_values(where: str, fields_: dict[str, Choice], values: dict[str, Any], pick, width) -> dict:
        table = STEM_FIELDS if where == "stem" else HEAD_FIELDS
        for key, choice in fields_.items():
            if field_applies(where, key, choice, "", values):
                values[key] = pick(f"{where}.{key}", choice, {"where": where, "key": key, "width": width})
            else:
                values[key] = table[key][1]
        return {key: values[key] for key in fields_}

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
