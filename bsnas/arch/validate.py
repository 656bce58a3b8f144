"""Validation of architecture specs: every error names the source file and the field, in one line.

`spec_from_dict` is the only way from plain data (YAML, JSON, a trial's attributes) to an `ArchSpec`. Types
are checked exactly (`kernel_size: 3.0` and `stride: true` are refused, not coerced), sizes are bounded
(`MAX_CHANNELS`, `MAX_CLASSES`, `MAX_IMAGE_SIZE`, `MAX_BLOCKS`) and so is the whole model (`MAX_PARAMS`), so
that a hostile or mistyped file is one clear sentence, never an allocator error deep in torch.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, NoReturn

from bsnas.arch.spec import (
    ACTIVATIONS,
    BLOCK_TYPES,
    BSCONV_OPS,
    FORMAT_VERSION,
    KERNEL_SIZES,
    OPS,
    PADDING_FREE_STEM_FIXED,
    ArchSpec,
    BlockSpec,
    HeadSpec,
    StemSpec,
)
from bsnas.errors import BsnasError

__all__ = ["MAX_CHANNELS", "MAX_CLASSES", "MAX_IMAGE_SIZE", "MAX_BLOCKS", "MAX_PARAMS", "MAX_NAME_LENGTH",
           "FieldChecker", "field_name", "spec_from_dict"]

MAX_CHANNELS = 1 << 16
MAX_CLASSES = 1 << 20
MAX_IMAGE_SIZE = 4096
MAX_BLOCKS = 1024
MAX_PARAMS = 1_000_000_000  # 4 GB of float32 weights
MAX_NAME_LENGTH = 200


class FieldChecker:
    """Raises one-line BsnasErrors that name the source file and a field path such as `blocks[3].op`."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        raise BsnasError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """`value` itself if it is a mapping whose keys are all in `allowed`."""
        if not isinstance(value, dict):
            self.fail(where or "top level",
                      f"expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                self.fail(f"{where}.{field_name(key)}" if where else field_name(key),
                          f"unknown key; allowed keys are {', '.join(allowed)}")
        return value

    def integer(self, value: Any, where: str, minimum: int = 1, maximum: int | None = None) -> int:
        """An int (not a bool, not a float) in [minimum, maximum]."""
        if type(value) is not int or value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            self.fail(where, f"{value!r} is not an integer {bound}")
        return value

    def choice(self, value: Any, where: str, allowed: tuple, nullable: bool = False) -> Any:
        """One of `allowed`, of the same type (so `true` is not 1 and `3.0` is not 3)."""
        if nullable and value is None:
            return None
        if not any(type(value) is type(option) and value == option for option in allowed):
            names = ", ".join(str(a) for a in allowed) + (", null" if nullable else "")
            self.fail(where, f"{value!r} is not one of {names}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"{value!r} is not true or false")
        return value

    def ratio(self, value: Any, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            self.fail(where, f"{value!r} is not a number in (0, 1]")
        return float(value)

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.fail(where, f"{value!r} is not a finite number >= 0")
        return float(value)


def field_name(key: Any) -> str:
    """A key of the input as a field name in a message: as it is when it reads like one, else quoted (so that a key
    with a newline or other control characters cannot break the one-line message)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _check_layer(check: FieldChecker, data: dict[str, Any], where: str, defaults: Any) -> dict[str, Any]:
    """Check the fields shared by stems and blocks; return them with defaults filled in."""
    values = {f.name: data.get(f.name, getattr(defaults, f.name, None)) for f in fields(type(defaults))}
    check.choice(values["op"], f"{where}.op", OPS)
    check.integer(values["out_channels"], f"{where}.out_channels", maximum=MAX_CHANNELS)
    check.choice(values["kernel_size"], f"{where}.kernel_size", KERNEL_SIZES)
    check.choice(values["stride"], f"{where}.stride", (1, 2))
    values["p"] = check.ratio(values["p"], f"{where}.p")
    if values["p"] is not None and values["op"] != "bsconv_s":
        check.fail(f"{where}.p", "only a bsconv_s layer takes p; remove it or set op: bsconv_s")
    check.boolean(values["inner_bn"], f"{where}.inner_bn")
    if values["inner_bn"] and values["op"] not in BSCONV_OPS:
        check.fail(f"{where}.inner_bn", f"only {' and '.join(BSCONV_OPS)} layers have an inner BatchNorm; remove it")
    check.boolean(values["padding_free"], f"{where}.padding_free")
    return values


def _check_stem(check: FieldChecker, data: Any) -> StemSpec:
    data = check.mapping(data, "stem", _field_names(StemSpec))
    if "out_channels" not in data:
        check.fail("stem.out_channels", "missing; the stem needs out_channels")
    values = _check_layer(check, data, "stem", StemSpec(out_channels=1))
    check.choice(values["act"], "stem.act", ACTIVATIONS, nullable=True)
    check.boolean(values["bn"], "stem.bn")
    check.boolean(values["max_pool"], "stem.max_pool")
    if values["op"] == "bsconv_s" and values["p"] is None:
        check.fail("stem.p", "a bsconv_s stem needs p in (0, 1]")
    if values["padding_free"]:
        plain = StemSpec(out_channels=1)
        for key in PADDING_FREE_STEM_FIXED:
            if values[key] != getattr(plain, key):
                check.fail(f"stem.{key}", "the padding-free stem block is a 3x3 regular conv with BN and its own "
                                          f"branches, so it would ignore {key}; remove {key} or padding_free")
    return StemSpec(**values)


def _check_block(check: FieldChecker, data: Any, index: int) -> BlockSpec:
    where = f"blocks[{index}]"
    data = check.mapping(data, where, _field_names(BlockSpec))
    for key in ("type", "op", "out_channels"):
        if key not in data:
            check.fail(f"{where}.{key}", "missing; every block needs type, op and out_channels")
    values = _check_layer(check, data, where, BlockSpec(type="conv", op="regular", out_channels=1))
    check.choice(values["type"], f"{where}.type", BLOCK_TYPES)
    check.choice(values["act"], f"{where}.act", ACTIVATIONS)
    check.boolean(values["se"], f"{where}.se")
    if values["type"] == "inverted":
        check.integer(values["mid_channels"], f"{where}.mid_channels", maximum=MAX_CHANNELS)
        if values["p"] is not None:
            check.fail(f"{where}.p", "an inverted block's bsconv_s subspace is set by mid_channels; remove p")
        if values["inner_bn"]:
            check.fail(f"{where}.inner_bn", "an inverted block's expansion and projection have their BatchNorms "
                                            "already; remove inner_bn")
    else:
        if values["mid_channels"] is not None:
            check.fail(f"{where}.mid_channels", f"only inverted blocks take mid_channels, not {values['type']}")
        if values["se"]:
            check.fail(f"{where}.se", f"only inverted blocks take se, not {values['type']}")
        if values["op"] == "bsconv_s" and values["p"] is None:
            check.fail(f"{where}.p", "a bsconv_s layer needs p in (0, 1]")
    if values["padding_free"] and (values["stride"] != 2 or values["kernel_size"] == 1):
        check.fail(f"{where}.padding_free", "applies only to stride-2 blocks with kernel_size 3, 5 or 7")
    return BlockSpec(**values)


def _check_head(check: FieldChecker, data: Any) -> HeadSpec:
    data = check.mapping({} if data is None else data, "head", _field_names(HeadSpec))
    values = {f.name: data.get(f.name, f.default) for f in fields(HeadSpec)}
    if values["conv_channels"] is not None:
        check.integer(values["conv_channels"], "head.conv_channels", maximum=MAX_CHANNELS)
    elif values["se"]:
        check.fail("head.se", "squeeze-excitation in the head needs head.conv_channels")
    check.boolean(values["se"], "head.se")
    check.choice(values["act"], "head.act", ACTIVATIONS)
    check.boolean(values["bn_act"], "head.bn_act")
    if values["act"] != HeadSpec.act and values["conv_channels"] is None and not values["bn_act"]:
        check.fail("head.act", "there is no head conv or bn_act for it to act on; remove act or add one of them")
    return HeadSpec(**values)


def spec_from_dict(data: Any, source: str = "<spec>") -> ArchSpec:
    """Validate a plain dict (e.g. from YAML) and return the ArchSpec; errors name source and field."""
    check = FieldChecker(source)
    data = check.mapping(data, "", _field_names(ArchSpec))
    version = data.get("format_version", FORMAT_VERSION)
    if type(version) is not int or version != FORMAT_VERSION:
        check.fail("format_version", f"{version!r} is not supported; this bsnas reads version {FORMAT_VERSION}")
    for key in ("name", "stem", "blocks"):
        if key not in data:
            check.fail(key, "missing; an architecture needs name, stem and blocks")
    name = data["name"]
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        check.fail("name", f"{name!r} is not a printable string of 1 to {MAX_NAME_LENGTH} characters")
    blocks = data["blocks"]
    if not isinstance(blocks, list) or not blocks or len(blocks) > MAX_BLOCKS:
        check.fail("blocks", f"expected a list of 1 to {MAX_BLOCKS} blocks")
    spec = ArchSpec(
        name=name,
        stem=_check_stem(check, data["stem"]),
        blocks=tuple(_check_block(check, block, i) for i, block in enumerate(blocks)),
        head=_check_head(check, data.get("head")),
        num_classes=check.integer(data.get("num_classes", 10), "num_classes", minimum=2, maximum=MAX_CLASSES),
        in_channels=check.integer(data.get("in_channels", 3), "in_channels", maximum=MAX_CHANNELS),
        image_size=check.integer(data.get("image_size", 32), "image_size", maximum=MAX_IMAGE_SIZE),
        input_bn=check.boolean(data.get("input_bn", True), "input_bn"),
        alpha=check.number(data.get("alpha", 0.0), "alpha"),
        format_version=FORMAT_VERSION,
    )
    if spec.alpha and all(layer.op != "bsconv_s" for layer in (spec.stem, *spec.blocks)):
        check.fail("alpha", "it weighs the orthonormal loss of bsconv_s layers and there is none; set it to 0")
    check_size(spec, source)
    return spec


def check_size(spec: ArchSpec, source: str = "<spec>") -> ArchSpec:
    """Refuse a spec whose input vanishes on the way through or whose weights would not fit in memory."""
    from bsnas.arch.cost import cost

    try:
        total = cost(spec)
    except BsnasError as error:  # the plan names the layer where the input runs out
        raise BsnasError(f"{source}: {error}") from None
    if total.params > MAX_PARAMS:
        FieldChecker(source).fail("blocks", f"this architecture has {total.params:,} parameters; bsnas builds at "
                                            f"most {MAX_PARAMS:,} ({MAX_PARAMS * 4 // 10**9} GB of float32 weights)")
    return spec
