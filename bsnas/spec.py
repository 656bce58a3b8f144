"""Architectures as data: `ArchSpec` holds raw choices only and round-trips YAML exactly.

A network is an input BatchNorm, a stem, a list of blocks and a head. Every block fills its
spatial layer with one of the four operators (`regular`, `dsc`, `bsconv_u`, `bsconv_s`):

- `conv`: one operator layer, then BatchNorm and activation (a MobileNetV1 unit).
- `inverted`: expansion to `mid_channels` and a depthwise conv (or what the operator puts there),
  optional squeeze-excitation, a linear 1x1 projection and a residual when shapes allow
  (MobileNetV2/V3). `bsconv_s` adds the orthonormal loss on the projection weight.
- `basic`: two operator layers with BatchNorm, a residual and a final activation (ResNet).
- `preact`: the pre-activation form of `basic` (WideResNet).

This module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bsnas.errors import BsnasError

__all__ = [
    "FORMAT_VERSION",
    "OPS",
    "BLOCK_TYPES",
    "ACTIVATIONS",
    "StemSpec",
    "BlockSpec",
    "HeadSpec",
    "ArchSpec",
    "spec_to_dict",
    "spec_from_dict",
    "spec_to_yaml",
    "load_spec",
    "read_yaml",
    "FieldChecker",
    "save_spec",
    "spec_hash",
]

FORMAT_VERSION = 1
OPS = ("regular", "dsc", "bsconv_u", "bsconv_s")
BLOCK_TYPES = ("conv", "inverted", "basic", "preact")
ACTIVATIONS = ("relu", "relu6", "hswish")
KERNEL_SIZES = (1, 3, 5, 7)


@dataclass(frozen=True)
class StemSpec:
    """The first layer: a k x k operator layer, optionally with BN, activation and a max-pool.

    `padding_free` replaces it by the padding-free stem block; `max_pool` adds the ImageNet
    ResNet 3x3/2 max-pool. `act: null` (with `bn: false`) gives a bare conv (pre-activation nets).
    """

    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    op: str = "regular"
    act: str | None = "relu"
    bn: bool = True
    max_pool: bool = False
    padding_free: bool = False
    p: float | None = None
    inner_bn: bool = False


@dataclass(frozen=True)
class BlockSpec:
    """One block; `mid_channels` and `se` belong to `inverted` blocks, `p` to `bsconv_s` layers."""

    type: str
    op: str
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    act: str = "relu"
    mid_channels: int | None = None
    se: bool = False
    p: float | None = None
    inner_bn: bool = False
    padding_free: bool = False


@dataclass(frozen=True)
class HeadSpec:
    """After the last block: optional BN+activation (pre-activation nets), optional 1x1 conv with SE,
    global average pooling and a linear classifier."""

    conv_channels: int | None = None
    se: bool = False
    act: str = "relu"
    bn_act: bool = False


@dataclass(frozen=True)
class ArchSpec:
    """A whole architecture: raw choices only, nothing derived, no modules."""

    name: str
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    num_classes: int = 10
    in_channels: int = 3
    input_bn: bool = True
    alpha: float = 0.0
    format_version: int = FORMAT_VERSION


def spec_to_dict(spec: ArchSpec) -> dict[str, Any]:
    """Plain dict of the spec (format_version first), as written to YAML."""
    data = asdict(spec)
    data["blocks"] = [dict(block) for block in data["blocks"]]
    ordered = {"format_version": data.pop("format_version"), "name": data.pop("name")}
    ordered.update(data)
    return ordered


def spec_to_yaml(spec: ArchSpec) -> str:
    """YAML text of the spec; `spec_from_dict(yaml.safe_load(text))` gives the same spec back."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=None, width=1000)


def save_spec(spec: ArchSpec, path: str | Path) -> Path:
    """Write the spec as YAML to `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_to_yaml(spec))
    return path


def read_yaml(path: str | Path, what: str) -> Any:
    """`yaml.safe_load` of a file; an unreadable file or bad YAML is a BsnasError naming the file and `what` it is."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise BsnasError(f"{path}: cannot read the {what} file ({error.strerror}).") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BsnasError(f"{path}: not valid YAML{where}; a {what} file is a YAML mapping.") from None


def load_spec(path: str | Path) -> ArchSpec:
    """Read and validate a spec YAML file; errors name the file and the field."""
    return spec_from_dict(read_yaml(path, "architecture"), source=str(path))


def spec_hash(spec: ArchSpec) -> str:
    """A short stable hash of the architecture (the name excluded), for de-duplication."""
    data = spec_to_dict(spec)
    data.pop("name")
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# validation


class FieldChecker:
    """Raises one-line BsnasErrors that name the source file and a field path such as `blocks[3].op`."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> None:
        raise BsnasError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """`value` itself if it is a mapping whose keys are all in `allowed`."""
        if not isinstance(value, dict):
            self.fail(where or "top level",
                      f"expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else str(key),
                          f"unknown key; allowed keys are {', '.join(allowed)}")
        return value


class _Checker(FieldChecker):
    """Field checks of ArchSpec values."""

    def integer(self, value: Any, where: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, f"{value!r} is not an integer >= {minimum}")
        return value

    def choice(self, value: Any, where: str, allowed: tuple, nullable: bool = False) -> Any:
        if nullable and value is None:
            return None
        if value not in allowed:
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


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _check_layer(check: _Checker, data: dict[str, Any], where: str, defaults: Any) -> dict[str, Any]:
    """Check the fields shared by stems and blocks; return them with defaults filled in."""
    values = {f.name: data.get(f.name, getattr(defaults, f.name, None)) for f in fields(type(defaults))}
    check.choice(values["op"], f"{where}.op", OPS)
    check.integer(values["out_channels"], f"{where}.out_channels")
    check.choice(values["kernel_size"], f"{where}.kernel_size", KERNEL_SIZES)
    check.choice(values["stride"], f"{where}.stride", (1, 2))
    values["p"] = check.ratio(values["p"], f"{where}.p")
    if values["p"] is not None and values["op"] != "bsconv_s":
        check.fail(f"{where}.p", "only a bsconv_s layer takes p; remove it or set op: bsconv_s")
    check.boolean(values["inner_bn"], f"{where}.inner_bn")
    check.boolean(values["padding_free"], f"{where}.padding_free")
    return values


def _check_stem(check: _Checker, data: Any) -> StemSpec:
    data = check.mapping(data, "stem", _field_names(StemSpec))
    if "out_channels" not in data:
        check.fail("stem.out_channels", "missing; the stem needs out_channels")
    values = _check_layer(check, data, "stem", StemSpec(out_channels=1))
    check.choice(values["act"], "stem.act", ACTIVATIONS, nullable=True)
    check.boolean(values["bn"], "stem.bn")
    check.boolean(values["max_pool"], "stem.max_pool")
    if values["op"] == "bsconv_s" and values["p"] is None:
        check.fail("stem.p", "a bsconv_s stem needs p in (0, 1]")
    return StemSpec(**values)


def _check_block(check: _Checker, data: Any, index: int) -> BlockSpec:
    where = f"blocks[{index}]"
    data = check.mapping(data, where, _field_names(BlockSpec))
    for key in ("type", "op", "out_channels"):
        if key not in data:
            check.fail(f"{where}.{key}", "missing; every block needs type, op and out_channels")
    defaults = BlockSpec(type="conv", op="regular", out_channels=1)
    values = _check_layer(check, data, where, defaults)
    check.choice(values["type"], f"{where}.type", BLOCK_TYPES)
    check.choice(values["act"], f"{where}.act", ACTIVATIONS)
    check.boolean(values["se"], f"{where}.se")
    inverted = values["type"] == "inverted"
    if inverted:
        check.integer(values["mid_channels"], f"{where}.mid_channels")
        if values["p"] is not None:
            check.fail(f"{where}.p", "an inverted block's bsconv_s subspace is set by mid_channels; remove p")
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


def _check_head(check: _Checker, data: Any) -> HeadSpec:
    data = check.mapping({} if data is None else data, "head", _field_names(HeadSpec))
    values = {f.name: data.get(f.name, f.default) for f in fields(HeadSpec)}
    if values["conv_channels"] is not None:
        check.integer(values["conv_channels"], "head.conv_channels")
    elif values["se"]:
        check.fail("head.se", "squeeze-excitation in the head needs head.conv_channels")
    check.boolean(values["se"], "head.se")
    check.choice(values["act"], "head.act", ACTIVATIONS)
    check.boolean(values["bn_act"], "head.bn_act")
    return HeadSpec(**values)


def spec_from_dict(data: Any, source: str = "<spec>") -> ArchSpec:
    """Validate a plain dict (e.g. from YAML) and return the ArchSpec; errors name source and field."""
    check = _Checker(source)
    data = check.mapping(data, "", _field_names(ArchSpec))
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        check.fail("format_version", f"{version!r} is not supported; this bsnas reads version {FORMAT_VERSION}")
    for key in ("name", "stem", "blocks"):
        if key not in data:
            check.fail(key, "missing; an architecture needs name, stem and blocks")
    if not isinstance(data["name"], str) or not data["name"]:
        check.fail("name", f"{data['name']!r} is not a non-empty string")
    if not isinstance(data["blocks"], list) or not data["blocks"]:
        check.fail("blocks", "expected a non-empty list of blocks")
    return ArchSpec(
        name=data["name"],
        stem=_check_stem(check, data["stem"]),
        blocks=tuple(_check_block(check, block, i) for i, block in enumerate(data["blocks"])),
        head=_check_head(check, data.get("head")),
        num_classes=check.integer(data.get("num_classes", 10), "num_classes", minimum=2),
        in_channels=check.integer(data.get("in_channels", 3), "in_channels"),
        input_bn=check.boolean(data.get("input_bn", True), "input_bn"),
        alpha=check.number(data.get("alpha", 0.0), "alpha"),
        format_version=FORMAT_VERSION,
    )
