"""The published BSConv model zoo, each model generated as an ArchSpec from its name.

`GRAMMAR` below lists the valid names. `[cifar_]` selects the CIFAR form (stem stride 1; designed for 32x32
input and 10 classes); without it the ImageNet form (standard strides; 224x224, 1000 classes). Like timm's
pretrained configs, every name carries these defaults (`default_input`), and its spec records them.
`w<N>d<D>` is the width multiplier N/D (w1, w3d4, w1d2, w7d20); `_pfd` applies padding-free
downsampling (stem block and max-pool branches at stride-2 blocks).
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path

from bsnas.arch.files import load_spec
from bsnas.arch.spec import PADDING_FREE_STEM_FIXED, ArchSpec, BlockSpec, HeadSpec, StemSpec
from bsnas.errors import BsnasError
from bsnas.text import regex

__all__ = ["GRAMMAR", "DefaultInput", "default_input", "get_spec", "list_models", "resolve_spec",
           "scale_channels", "zoo_family"]

GRAMMAR = """\
    [cifar_]mobilenetv1_w<N>[d<D>][_bsconvu][_pfd]
    [cifar_]mobilenetv2_w<N>[d<D>][_bsconvs_p1d6][_pfd]
    [cifar_]mobilenetv3_{small,large}_w<N>[d<D>][_bsconvs_p1d6][_pfd]
    cifar_resnet{20,56,110,302,602}[_bsconvu|_bsconvs_p<X>d<Y>][_pfd]
    cifar_preresnet{20,56,110,302,602}[_bsconvu|_bsconvs_p<X>d<Y>]
    [pre]resnet{10,18,26,34,68,102}[_bsconvu|_bsconvs_p<X>d<Y>]
    cifar_wrn{16,28,40}_<k>[_bsconvu|_bsconvs_p<X>d<Y>]"""

_MOBILENET = re.compile(
    r"^(?P<cifar>cifar_)?mobilenet(?P<version>v1|v2|v3_small|v3_large)_w(?P<num>\d+)(?:d(?P<den>\d+))?"
    r"(?P<variant>_bsconvu|_bsconvs_p1d6)?(?P<pfd>_pfd)?$")
_RESNET = re.compile(
    r"^(?:(?P<cifar>cifar_)(?P<cifar_pre>pre)?resnet(?P<cifar_depth>20|56|110|302|602)"
    r"|(?P<pre>pre)?resnet(?P<depth>10|18|26|34|68|102)"
    r"|cifar_wrn(?P<wrn_depth>16|28|40)_(?P<k>\d+))(?P<variant>_bsconvu|_bsconvs_p(?P<pn>\d+)d(?P<pd>\d+))?"
    r"(?P<pfd>_pfd)?$")

_CIFAR_ALPHA, _IMAGENET_ALPHA = 0.01, 0.1  # orthonormal-loss weight of the paper


@dataclasses.dataclass(frozen=True)
class DefaultInput:
    """What a zoo model was designed for: image size (square) and classes."""

    image_size: int
    num_classes: int


_CIFAR_INPUT, _IMAGENET_INPUT = DefaultInput(32, 10), DefaultInput(224, 1000)

# MobileNet tables: per stage (out_channels, mid_channels) of each unit, stage strides (CIFAR, ImageNet).
_V1_STAGES = [[64], [128, 128], [256, 256], [512] * 6, [1024, 1024]]
_V2_STAGES = [[16], [24, 24], [32] * 3, [64] * 4 + [96] * 3, [160] * 3 + [320]]
_V2_MIDS = [[32], [96, 144], [144, 192, 192], [192, 384, 384, 384, 384, 576, 576], [576, 960, 960, 960]]
_V3 = {
    "large": dict(
        stages=[[16], [24, 24], [40] * 3, [80] * 4 + [112] * 2, [160] * 3],
        mids=[[16], [64, 72], [72, 120, 120], [240, 200, 184, 184, 480, 672], [672, 960, 960]],
        se=[[0], [0, 0], [1, 1, 1], [0, 0, 0, 0, 1, 1], [1, 1, 1]],
        kernels=[3, 3, 5, 3, 5], acts=["relu", "relu", "relu", "hswish", "hswish"],
        strides=([1, 1, 2, 2, 2], [1, 2, 2, 2, 2]), head=960, head_se=False),
    "small": dict(
        stages=[[16], [24, 24], [40, 40, 40, 48, 48], [96, 96, 96]],
        mids=[[16], [72, 88], [96, 240, 240, 120, 144], [288, 576, 576]],
        se=[[1], [0, 0], [1] * 5, [1] * 3],
        kernels=[3, 3, 5, 5], acts=["relu", "relu", "hswish", "hswish"],
        strides=([1, 2, 2, 2], [2, 2, 2, 2]), head=576, head_se=True),
}
_MOBILENET_STRIDES = ([1, 1, 2, 2, 2], [1, 2, 2, 2, 2])
_RESNET_UNITS = {20: 3, 56: 9, 110: 18, 302: 50, 602: 100}
_IMAGENET_RESNET_UNITS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 26: [3, 3, 3, 3], 34: [3, 4, 6, 3],
                          68: [3, 4, 23, 3], 102: [3, 8, 36, 3]}
_WRN_UNITS = {16: 2, 28: 4, 40: 6}


def scale_channels(channels: int, width: Fraction) -> int:
    """A channel count times a width multiplier, truncated as in the zoo (`int(c * w)`), at least 1."""
    return max(1, int(channels * width))


def _stage_strides(stages: list[list], strides: list[int]) -> list[int]:
    """Stride of every unit: the stage's stride for its first unit, 1 for the rest."""
    return [stride if i == 0 else 1 for stage, stride in zip(stages, strides, strict=True) for i in range(len(stage))]


def _mobilenet(version: str, width: Fraction, cifar: bool, variant: str | None) -> tuple[StemSpec, list, HeadSpec]:
    index = 0 if cifar else 1
    if version == "v1":
        op = "bsconv_u" if variant == "_bsconvu" else "dsc"
        outs = [c for stage in _V1_STAGES for c in stage]
        strides = _stage_strides(_V1_STAGES, _MOBILENET_STRIDES[index])
        blocks = [BlockSpec("conv", op, scale_channels(c, width), 3, s) for c, s in zip(outs, strides, strict=True)]
        return StemSpec(scale_channels(32, width), 3, 1 + index), blocks, HeadSpec()
    op = "bsconv_s" if variant else "bsconv_u"
    head_scale = (lambda c: scale_channels(c, width)) if width > 1 else (lambda c: c)
    if version == "v2":
        outs = [c for stage in _V2_STAGES for c in stage]
        mids = [c for stage in _V2_MIDS for c in stage]
        strides = _stage_strides(_V2_STAGES, _MOBILENET_STRIDES[index])
        blocks = [BlockSpec("inverted", op, scale_channels(c, width), 3, s, "relu6", scale_channels(m, width))
                  for c, m, s in zip(outs, mids, strides, strict=True)]
        stem = StemSpec(scale_channels(32, width), 3, 1 + index, act="relu6")
        return stem, blocks, HeadSpec(conv_channels=head_scale(1280), act="relu6")
    table = _V3[version.split("_")[1]]
    blocks = []
    units = zip(table["stages"], table["mids"], table["se"], table["kernels"], table["acts"], table["strides"][index],
                strict=True)
    for outs, mids, ses, kernel, act, stride in units:
        for i, (c, m, se) in enumerate(zip(outs, mids, ses, strict=True)):
            blocks.append(BlockSpec("inverted", op, scale_channels(c, width), kernel, stride if i == 0 else 1, act,
                                    scale_channels(m, width), bool(se)))
    stem = StemSpec(scale_channels(16, width), 3, 1 + index, act="hswish")
    return stem, blocks, HeadSpec(conv_channels=head_scale(table["head"]), se=table["head_se"], act="hswish")


def _padding_free(stem: StemSpec, blocks: list[BlockSpec]) -> tuple[StemSpec, list[BlockSpec]]:
    """Padding-free downsampling: the stem block (which decides its own conv, so a BSConv stem's operator goes) and
    a max-pool branch at every stride-2 block."""
    plain = StemSpec(out_channels=stem.out_channels)
    stem = dataclasses.replace(stem, padding_free=True, **{key: getattr(plain, key) for key in PADDING_FREE_STEM_FIXED})
    blocks = [dataclasses.replace(b, padding_free=True) if b.stride == 2 else b for b in blocks]
    return stem, blocks


def _resnet(match: re.Match) -> tuple[StemSpec, list, HeadSpec, bool]:
    """ResNets; pre-activation ResNets and WideResNets (`preact` units: BN-ReLU before each unit's convolutions,
    BN-ReLU before the pool; their CIFAR stem convolution has neither, the ImageNet stem keeps both)."""
    k = int(match["k"] or 1)
    if k < 1:
        raise BsnasError(f"model name {match.string!r}: the WRN width k must be >= 1")
    preact = bool(match["pre"] or match["cifar_pre"] or match["k"])
    if match["depth"]:
        units = _IMAGENET_RESNET_UNITS[int(match["depth"])]
        stem, widths = StemSpec(64, 7, 2, max_pool=True), [64, 128, 256, 512]
    else:
        n = _RESNET_UNITS[int(match["cifar_depth"])] if match["cifar_depth"] else _WRN_UNITS[int(match["wrn_depth"])]
        units, widths = [n] * 3, [16 * k, 32 * k, 64 * k]
        stem = StemSpec(16, 3, 1, act=None, bn=False) if preact else StemSpec(16, 3, 1)
    block_type = "preact" if preact else "basic"
    blocks = [BlockSpec(block_type, "regular", width, 3, 2 if (i == 0 and stage > 0) else 1)
              for stage, (width, n) in enumerate(zip(widths, units, strict=True)) for i in range(n)]
    return stem, blocks, HeadSpec(bn_act=preact), match["depth"] is None


def _bsconv_layer(layer, variant: str, p: float | None):
    """Replace a 3x3/5x5 regular layer's operator by BSConv-U (no inner BN) or BSConv-S (inner BN)."""
    if layer.op != "regular" or layer.kernel_size not in (3, 5):
        return layer
    if variant == "_bsconvu":
        return dataclasses.replace(layer, op="bsconv_u", inner_bn=False)
    return dataclasses.replace(layer, op="bsconv_s", p=p, inner_bn=True)


def default_input(name: str) -> DefaultInput:
    """The input size and classes a zoo name was designed for (32x32 and 10 for CIFAR forms, else 224x224 and
    1000); an unknown name is a BsnasError showing the grammar."""
    return _CIFAR_INPUT if get_spec(name).image_size == 32 else _IMAGENET_INPUT


def get_spec(name: str, num_classes: int | None = None, in_channels: int = 3,
             image_size: int | None = None) -> ArchSpec:
    """The ArchSpec of a zoo model; `num_classes` and `image_size` default to what the name was designed for
    (`default_input`): 10 classes at 32x32 for CIFAR forms, 1000 at 224x224 for ImageNet forms."""
    alpha = 0.0
    if match := _MOBILENET.match(name):
        num, den = int(match["num"]), int(match["den"] or 1)
        if num < 1 or den < 1:
            raise BsnasError(f"model name {name!r}: the width w<N>d<D> needs N, D >= 1")
        cifar, variant = bool(match["cifar"]), match["variant"]
        version = match["version"]
        allowed = "_bsconvu" if version == "v1" else "_bsconvs_p1d6"
        if variant not in (None, allowed):
            raise BsnasError(f"model name {name!r}: mobilenet{version} takes the variant {allowed} only")
        stem, blocks, head = _mobilenet(version, Fraction(num, den), cifar, variant)
        if match["pfd"]:
            stem, blocks = _padding_free(stem, blocks)
        if variant == "_bsconvs_p1d6":
            alpha = _CIFAR_ALPHA if cifar else _IMAGENET_ALPHA
    elif match := _RESNET.match(name):
        stem, blocks, head, cifar = _resnet(match)
        variant = match["variant"]
        if variant:
            p = None
            if variant != "_bsconvu":
                pn, pd = int(match["pn"]), int(match["pd"])
                if not 0 < pn <= pd:
                    raise BsnasError(f"model name {name!r}: _bsconvs_p<X>d<Y> needs 0 < X <= Y")
                p = pn / pd
                alpha = _CIFAR_ALPHA if cifar else _IMAGENET_ALPHA
            stem = _bsconv_layer(stem, variant, p)
            blocks = [_bsconv_layer(b, variant, p) for b in blocks]
        if match["pfd"]:
            if not match["cifar_depth"] or match["cifar_pre"]:
                raise BsnasError(f"model name {name!r}: _pfd applies to the MobileNets and cifar_resnet models only")
            stem, blocks = _padding_free(stem, blocks)
    else:
        raise BsnasError(f"unknown model name {name!r}; valid names follow this grammar:\n{GRAMMAR}")
    defaults = _CIFAR_INPUT if cifar else _IMAGENET_INPUT
    return ArchSpec(name=name, stem=stem, blocks=tuple(blocks), head=head,
                    num_classes=defaults.num_classes if num_classes is None else num_classes,
                    in_channels=in_channels, image_size=defaults.image_size if image_size is None else image_size,
                    alpha=alpha)


def zoo_family(name: str) -> str:
    """`mobilenet` or `resnet`: the search-space family a zoo name belongs to."""
    return "mobilenet" if _MOBILENET.match(name) else "resnet"


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the zoo models of the published tables (and their ImageNet and padding-free forms)."""
    widths = {"v1": ["w1", "w3d4", "w1d2", "w1d4"], "v2": ["w1", "w3d4", "w1d2", "w1d4"],
              "v3_small": ["w1", "w3d4", "w1d2", "w7d20"], "v3_large": ["w1", "w3d4", "w1d2", "w7d20"]}
    names = []
    for prefix in ("cifar_", ""):
        for version, ws in widths.items():
            variant = "_bsconvu" if version == "v1" else "_bsconvs_p1d6"
            for w in ws:
                for v in ("", variant):
                    for pfd in ("", "_pfd"):
                        names.append(f"{prefix}mobilenet{version}_{w}{v}{pfd}")
    resnet_variants = ("", "_bsconvu", "_bsconvs_p1d4")
    names += [f"cifar_resnet{d}{v}{pfd}" for d in _RESNET_UNITS for v in resnet_variants for pfd in ("", "_pfd")]
    names += [f"cifar_preresnet{d}{v}" for d in _RESNET_UNITS for v in resnet_variants]
    names += [f"cifar_wrn{d}_{k}{v}" for d in _WRN_UNITS for k in (1, 2, 3, 4, 6, 8, 10, 12)
              for v in resnet_variants]
    names += [f"{pre}resnet{d}{v}" for pre in ("", "pre") for d in _IMAGENET_RESNET_UNITS for v in resnet_variants]
    if pattern:
        names = [n for n in names if regex(pattern, "--pattern").search(n)]
    return names


def resolve_spec(name_or_path: str, num_classes: int | None = None, in_channels: int | None = None,
                 image_size: int | None = None) -> ArchSpec:
    """A zoo name or a spec YAML path to an ArchSpec; `num_classes`, `in_channels`, `image_size` override when
    given (a changed input or class count changes the architecture's parameters or FLOPs)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        spec = load_spec(path)
    else:
        spec = get_spec(name_or_path)
    changes = {key: value for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                                             ("image_size", image_size)) if value is not None}
    return dataclasses.replace(spec, **changes) if changes else spec
