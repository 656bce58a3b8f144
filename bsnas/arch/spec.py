"""Architectures as data: `ArchSpec` holds raw choices only and round-trips YAML exactly.

A network is an input BatchNorm, a stem, a list of blocks and a head. Every block fills its
spatial layer with one of the four operators (`regular`, `dsc`, `bsconv_u`, `bsconv_s`):

- `conv`: one operator layer, then BatchNorm and activation (a MobileNetV1 unit).
- `inverted`: expansion to `mid_channels` and a depthwise conv (or what the operator puts there),
  optional squeeze-excitation, a linear 1x1 projection and a residual when shapes allow
  (MobileNetV2/V3). `bsconv_s` adds the orthonormal loss on the projection weight.
- `basic`: two operator layers with BatchNorm, a residual and a final activation (ResNet).
- `preact`: the pre-activation form of `basic` (WideResNet).

A spec also records the input it was designed for (`in_channels`, `image_size`) and its classes.
What these choices mean layer by layer is decided once, in `bsnas.arch.plan`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import yaml

__all__ = [
    "FORMAT_VERSION",
    "OPS",
    "BLOCK_TYPES",
    "ACTIVATIONS",
    "KERNEL_SIZES",
    "BSCONV_OPS",
    "PADDING_FREE_STEM_FIXED",
    "StemSpec",
    "BlockSpec",
    "HeadSpec",
    "ArchSpec",
    "spec_to_dict",
    "spec_to_yaml",
    "spec_hash",
]

FORMAT_VERSION = 1
OPS = ("regular", "dsc", "bsconv_u", "bsconv_s")
BLOCK_TYPES = ("conv", "inverted", "basic", "preact")
ACTIVATIONS = ("relu", "relu6", "hswish")
KERNEL_SIZES = (1, 3, 5, 7)
BSCONV_OPS = ("bsconv_u", "bsconv_s")  # the operators with an inner BatchNorm (`inner_bn`)
# the stem fields the padding-free stem block decides itself (a 3x3 regular conv with BN, then its branches)
PADDING_FREE_STEM_FIXED = ("op", "kernel_size", "bn", "max_pool", "p", "inner_bn")


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
    """A whole architecture: raw choices only, nothing derived, no modules.

    `in_channels` x `image_size` x `image_size` is the input it was designed for: `bsnas profile`,
    `bsnas train` and `bsnas.cost` default to it.
    """

    name: str
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    input_bn: bool = True
    alpha: float = 0.0
    format_version: int = FORMAT_VERSION

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return self.in_channels, self.image_size, self.image_size


def spec_to_dict(spec: ArchSpec) -> dict:
    """Plain dict of the spec (format_version first), as written to YAML."""
    data = asdict(spec)
    data["blocks"] = [dict(block) for block in data["blocks"]]
    ordered = {"format_version": data.pop("format_version"), "name": data.pop("name")}
    ordered.update(data)
    return ordered


def spec_to_yaml(spec: ArchSpec) -> str:
    """YAML text of the spec; `load_spec` of it gives the same spec back."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=None, width=1000)


def spec_hash(spec: ArchSpec) -> str:
    """A short stable hash of the network a spec builds, for de-duplication: of its plan (`bsnas.arch.plan`, every
    layer as built) and of `alpha` where a bsconv_s layer gives it a loss to weigh, so two specs that build the
    same network share it (e.g. BSConv-S p values that give the same subspace width) and the name never counts. A
    spec that builds no network at its input size (a feature map runs out) hashes its fields instead."""
    from bsnas.arch.plan import PlanError, plan

    alpha = spec.alpha if any(layer.op == "bsconv_s" for layer in (spec.stem, *spec.blocks)) else 0.0
    try:
        text = repr(("plan-1", plan(spec), alpha))
    except PlanError:
        data = spec_to_dict(spec)
        data.pop("name")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
