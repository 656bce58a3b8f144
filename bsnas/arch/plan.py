"""The plan of an architecture: every derived fact decided once, in one torch-free walk.

`plan(spec)` turns an `ArchSpec` into a tree of nodes. Leaves are single layers with everything a layer
needs (channels, kernel, stride, padding, groups, bias, input and output sizes): `Conv`, `BatchNorm`, `Act`,
`MaxPool`, `GlobalPool`, `Flatten`, `Linear`, `Identity`. Containers say how leaves connect:

- `Seq`: children one after another.
- `Sum`: every branch sees the same input and their outputs are added (a residual with its shortcut; the
  max-pool branch of padding-free downsampling).
- `Concat`: every branch sees the same input and their outputs are concatenated along the channels.
- `Gate`: the input times its body's output (squeeze-excitation).

Every child carries a name (the module name in the built model) and every container a `role` (what it is:
`bsconv_u`, `se`, `inverted`, ...). Nodes are NamedTuples (cheap to make, hashable); each ends with its kind
(`node`), so two nodes are equal only when they are the same kind of node with the same values.

The plan has two readers and neither decides anything itself: `bsnas.nn.build` makes one module per node and
`bsnas.arch.cost` sums the cost of the leaves, so the budget check and the built model cannot disagree.
`plan_operator` plans one operator layer on its own (for `bsnas.create_conv`, where the input size is not
known: sizes are then `None`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from bsnas.arch.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec
from bsnas.errors import BsnasError

__all__ = [
    "Conv", "BatchNorm", "Act", "MaxPool", "GlobalPool", "Flatten", "Linear", "Identity",
    "Seq", "Sum", "Concat", "Gate", "Node", "Plan", "PlanError",
    "plan", "plan_input", "plan_stem", "plan_block", "plan_head", "plan_operator", "plan_squeeze_excite",
    "bsconv_s_mid_channels", "padding_free_padding", "SE_REDUCTION",
]

Size = tuple[int, int] | None  # (height, width); None when an operator is planned without an input
Pair = int | tuple[int, int]

SE_REDUCTION = 4  # squeeze-excitation: channels // 4 in the squeeze, at least 1


class Conv(NamedTuple):
    """A 2-d convolution; `orthonormal` marks the weight that carries BSConv-S's orthonormal loss."""

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    bias: bool
    orthonormal: bool
    in_size: Size
    out_size: Size
    node: str = "conv"


class BatchNorm(NamedTuple):
    channels: int
    size: Size
    node: str = "batchnorm"


class Act(NamedTuple):
    """An activation: relu, relu6, hswish or hsigmoid."""

    kind: str
    channels: int
    size: Size
    node: str = "act"


class MaxPool(NamedTuple):
    kernel_size: int
    stride: int
    padding: int
    channels: int
    in_size: Size
    out_size: Size
    node: str = "maxpool"


class GlobalPool(NamedTuple):
    """Average over the whole feature map, to 1 x 1."""

    channels: int
    size: Size
    node: str = "globalpool"


class Flatten(NamedTuple):
    features: int
    node: str = "flatten"


class Linear(NamedTuple):
    in_features: int
    out_features: int
    bias: bool
    node: str = "linear"


class Identity(NamedTuple):
    channels: int
    node: str = "identity"


class Seq(NamedTuple):
    children: tuple[tuple[str, Node], ...]
    role: str = ""
    node: str = "seq"


class Sum(NamedTuple):
    branches: tuple[tuple[str, Node], ...]
    role: str = ""
    node: str = "sum"


class Concat(NamedTuple):
    branches: tuple[tuple[str, Node], ...]
    role: str = ""
    node: str = "concat"


class Gate(NamedTuple):
    body: Node
    role: str = ""
    node: str = "gate"


Node = Conv | BatchNorm | Act | MaxPool | GlobalPool | Flatten | Linear | Identity | Seq | Sum | Concat | Gate


class Plan(NamedTuple):
    """The whole network: input BatchNorm (or Identity), stem, blocks, head and classifier."""

    input_size: tuple[int, int, int]
    input_bn: Node
    stem: Node
    blocks: tuple[Node, ...]
    head: Node
    classifier: Linear


class PlanError(BsnasError):
    """The input runs out on the way through the network (a feature map would be empty)."""


# ------------------------------------------------------------------------------------------------- rules


def bsconv_s_mid_channels(in_channels: int, p: float, min_mid_channels: int = 4) -> int:
    """M' = min(M, max(min_mid_channels, ceil(p * M))), the subspace width of BSConv-S."""
    return min(in_channels, max(min_mid_channels, math.ceil(p * in_channels)))


def padding_free_padding(kernel_size: int) -> int:
    """Padding that makes a stride-2 k x k conv match MaxPool2d(3, 2, 0): 0 for 3x3, 1 for 5x5, 2 for 7x7."""
    return kernel_size // 2 - 1


def _padding(kernel_size: Pair, stride: Pair, padding_free: bool, dilation: Pair = 1) -> Pair:
    """Padding-free at stride 2 when asked for, else 'same' padding."""
    if padding_free and stride == 2:
        return padding_free_padding(kernel_size)
    if type(kernel_size) is int and type(dilation) is int:
        return dilation * (kernel_size - 1) // 2
    (kh, kw), (dh, dw) = _pair(kernel_size), _pair(dilation)
    return dh * (kh - 1) // 2, dw * (kw - 1) // 2


def _pair(value: Pair) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _out_size(size: Size, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair = 1) -> Size:
    if size is None:
        return None
    if type(kernel_size) is int and type(stride) is int and type(padding) is int and dilation == 1:
        height = (size[0] + 2 * padding - kernel_size) // stride + 1  # the common case, without pairs
        width = (size[1] + 2 * padding - kernel_size) // stride + 1
    else:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
        height = (size[0] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        width = (size[1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if height < 1 or width < 1:
        raise PlanError(f"a {size[0]}x{size[1]} feature map is too small for a {kernel_size}x{kernel_size} "
                        f"stride-{stride} layer; use a larger image_size or fewer stride-2 layers")
    return height, width


# ------------------------------------------------------------------------------------------------ layers
# Each planner returns (node, out_channels, out_size).


@functools.lru_cache(maxsize=1 << 14)
def _conv(in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair, size: Size, padding: Pair | None = None,
          groups: int = 1, bias: bool = False, orthonormal: bool = False, dilation: Pair = 1):
    if padding is None:
        padding = _padding(kernel_size, stride, False, dilation)
    out = _out_size(size, kernel_size, stride, padding, dilation)
    return (Conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, orthonormal, size,
                 out), out_channels, out)


@functools.lru_cache(maxsize=1 << 14)
def _conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int, act: str | None, size: Size,
                 groups: int = 1, padding: int | None = None, bn: bool = True):
    """Convolution (no bias), optional BatchNorm, optional activation."""
    conv, channels, out = _conv(in_channels, out_channels, kernel_size, stride, size, padding, groups)
    children = [("conv", conv)]
    if bn:
        children.append(("bn", BatchNorm(channels, out)))
    if act is not None:
        children.append(("act", Act(act, channels, out)))
    return Seq(tuple(children)), channels, out


def _max_pool(channels: int, kernel_size: int, stride: int, padding: int, size: Size):
    out = _out_size(size, kernel_size, stride, padding)
    return MaxPool(kernel_size, stride, padding, channels, size, out), channels, out


def _max_pool_branch(body: Node, channels: int, size: Size, body_size: Size):
    """`body(x) + MaxPool2d(3, 2)(x)`: the parameter-free branch of padding-free downsampling."""
    pool, _, pool_size = _max_pool(channels, 3, 2, 0, size)
    _same_size(body_size, pool_size, "the max-pool branch")
    return Sum((("body", body), ("pool", pool)), role="maxpool_branch")


def _same_size(first: Size, second: Size, what: str) -> None:
    if first != second:
        raise PlanError(f"{what}: the branches give {first} and {second}; they must agree to be added")


@functools.lru_cache(maxsize=1 << 14)
def _depthwise_block(channels: int, kernel_size: int, stride: int, act: str | None, padding_free: bool, size: Size):
    """Depthwise conv, BN, activation; padding-free at stride 2 adds the max-pool branch."""
    padding = _padding(kernel_size, stride, padding_free)
    body, _, out = _conv_bn_act(channels, channels, kernel_size, stride, act, size, groups=channels, padding=padding)
    if padding_free and stride == 2:
        return _max_pool_branch(body, channels, size, out), channels, out
    return body, channels, out


def plan_operator(kind: str, in_channels: int, out_channels: int, kernel_size: Pair = 3, stride: Pair = 1,
                  size: Size = None, *, padding: Pair | None = None, dilation: Pair = 1, bias: bool = False,
                  p: float | None = None, inner_bn: bool = False, min_mid_channels: int = 4,
                  act: str | None = "relu", padding_free: bool = False):
    """The spatial operator `kind` (regular | dsc | bsconv_u | bsconv_s) with no BN or activation after it.

    `p`, `inner_bn` and `min_mid_channels` configure BSConv-S (`inner_bn` BSConv-U too); `act` is the
    activation inside DSC; `padding_free` gives a stride-2 layer the padding-free padding (DSC gets the
    max-pool branch too; blocks put it around BSConv's depthwise part, see `_op_bn_act`).
    """
    if padding is None:
        padding = _padding(kernel_size, stride, padding_free, dilation)
    if kind == "regular":
        return _conv(in_channels, out_channels, kernel_size, stride, size, padding, bias=bias, dilation=dilation)
    if kind == "dsc":
        dw, _, dw_size = _depthwise_block(in_channels, kernel_size, stride, act, padding_free, size)
        pw, _, out = _conv(in_channels, out_channels, 1, 1, dw_size)
        return Seq((("dw", dw), ("pw", pw)), role="dsc"), out_channels, out
    if kind == "bsconv_u":
        children = [("pw", _conv(in_channels, out_channels, 1, 1, size)[0])]
        if inner_bn:
            children.append(("bn", BatchNorm(out_channels, size)))
    elif kind == "bsconv_s":
        if p is None:
            raise ValueError("bsconv_s needs p in (0, 1]")
        if not 0 < p <= 1:
            raise ValueError(f"BSConv-S p must be in (0, 1], got {p}")
        mid = bsconv_s_mid_channels(in_channels, p, min_mid_channels)
        children = [("pw1", _conv(in_channels, mid, 1, 1, size, orthonormal=True)[0])]
        if inner_bn:
            children.append(("bn1", BatchNorm(mid, size)))
        children.append(("pw2", _conv(mid, out_channels, 1, 1, size)[0]))
        if inner_bn:
            children.append(("bn2", BatchNorm(out_channels, size)))
    else:
        raise ValueError(f"unknown conv kind {kind!r}; allowed: regular, dsc, bsconv_u, bsconv_s")
    dw, _, out = _conv(out_channels, out_channels, kernel_size, stride, size, padding, groups=out_channels,
                       bias=bias, dilation=dilation)
    children.append(("dw", dw))
    return Seq(tuple(children), role=kind), out_channels, out


def _layer_operator(layer: StemSpec | BlockSpec, in_channels: int, out_channels: int, stride: int, size: Size):
    return plan_operator(layer.op, in_channels, out_channels, layer.kernel_size, stride, size, p=layer.p,
                         inner_bn=layer.inner_bn, act=layer.act, padding_free=layer.padding_free)


def _op_bn_act(layer: BlockSpec, in_channels: int, out_channels: int, stride: int, act: str | None, size: Size):
    """Operator, BN and activation; a padding-free BSConv puts the max-pool branch around its depthwise part."""
    op, channels, out = _layer_operator(layer, in_channels, out_channels, stride, size)
    tail = [("bn", BatchNorm(channels, out))]
    if act is not None:
        tail.append(("act", Act(act, channels, out)))
    if layer.padding_free and stride == 2 and layer.op in ("bsconv_u", "bsconv_s"):
        *pointwise, depthwise = op.children
        branch = _max_pool_branch(Seq((depthwise, *tail)), channels, size, out)
        return Seq((*pointwise, ("branch", branch)), role=layer.op), channels, out
    return Seq((("op", op), *tail)), channels, out


@functools.lru_cache(maxsize=1 << 14)
def plan_squeeze_excite(channels: int, size: Size) -> Gate:
    """Squeeze-excitation (MobileNetV3): pool, 1x1 conv to channels // 4, ReLU, 1x1 conv, hard-sigmoid, scale."""
    squeeze = max(1, channels // SE_REDUCTION)
    one = None if size is None else (1, 1)
    body = Seq((("pool", GlobalPool(channels, size)),
                ("reduce", _conv(channels, squeeze, 1, 1, one, bias=True)[0]),
                ("act", Act("relu", squeeze, one)),
                ("expand", _conv(squeeze, channels, 1, 1, one, bias=True)[0]),
                ("gate", Act("hsigmoid", channels, one))))
    return Gate(body, role="se")


def _shortcut(block: BlockSpec, in_channels: int, size: Size, bn: bool):
    """Residual path: identity, or a 1x1 projection (with BN for post-activation blocks); padding-free blocks
    downsample it with the parameter-free MaxPool2d(3, 2) before a stride-1 projection."""
    if in_channels == block.out_channels and block.stride == 1:
        return Identity(in_channels), in_channels, size
    if block.padding_free:
        pool, _, pooled = _max_pool(in_channels, 3, 2, 0, size)
        projection, channels, out = _conv_bn_act(in_channels, block.out_channels, 1, 1, None, pooled, bn=bn)
        return Seq((("pool", pool), ("proj", projection))), channels, out
    return _conv_bn_act(in_channels, block.out_channels, 1, block.stride, None, size, bn=bn)


# ------------------------------------------------------------------------------------------------ blocks


def _inverted(block: BlockSpec, in_channels: int, size: Size):
    """Expansion + spatial layer, optional SE, linear projection, residual when shapes allow (MobileNetV2/V3).

    The operator decides the expansion: `bsconv_u`/`bsconv_s` pointwise then depthwise (the classic block),
    `regular` one k x k conv (fused), `dsc` depthwise then pointwise; `bsconv_s` puts the orthonormal loss on
    the projection weight.
    """
    mid, k, stride, act, padding_free = block.mid_channels, block.kernel_size, block.stride, block.act, \
        block.padding_free
    if block.op == "regular":
        conv, _, inner = _conv_bn_act(in_channels, mid, k, stride, act, size,
                                      padding=_padding(k, stride, padding_free))
        layers = [("conv", conv)]
    elif block.op == "dsc":
        dw, _, inner = _depthwise_block(in_channels, k, stride, act, padding_free, size)
        pw, _, inner = _conv_bn_act(in_channels, mid, 1, 1, act, inner)
        layers = [("dw", dw), ("pw", pw)]
    else:
        pw, _, inner = _conv_bn_act(in_channels, mid, 1, 1, act, size)
        dw, _, inner = _depthwise_block(mid, k, stride, act, padding_free, inner)
        layers = [("pw", pw), ("dw", dw)]
    if block.se:
        layers.append(("se", plan_squeeze_excite(mid, inner)))
    conv, out_channels, out = _conv(mid, block.out_channels, 1, 1, inner, orthonormal=block.op == "bsconv_s")
    layers.append(("project", Seq((("conv", conv), ("bn", BatchNorm(out_channels, out))))))
    body = Seq(tuple(layers), role="inverted")
    if in_channels == out_channels and stride == 1:
        return Sum((("body", body), ("shortcut", Identity(in_channels))), role="inverted_residual"), out_channels, out
    return body, out_channels, out


def _basic(block: BlockSpec, in_channels: int, size: Size):
    """ResNet basic block: two operator layers with BN, projection shortcut when needed, final activation."""
    first, channels, inner = _op_bn_act(block, in_channels, block.out_channels, block.stride, block.act, size)
    second, channels, out = _op_bn_act(block, channels, channels, 1, None, inner)
    shortcut, _, shortcut_size = _shortcut(block, in_channels, size, bn=True)
    _same_size(out, shortcut_size, "the residual")
    add = Sum((("body", Seq((("conv1", first), ("conv2", second)))), ("shortcut", shortcut)))
    return Seq((("add", add), ("act", Act(block.act, channels, out))), role="basic"), channels, out


def _preact(block: BlockSpec, in_channels: int, size: Size):
    """Pre-activation basic block (WideResNet): BN+act first, the second layer without BN; a projection
    shortcut sees the activated input, the identity the raw one."""
    preact = Seq((("bn", BatchNorm(in_channels, size)), ("act", Act(block.act, in_channels, size))))
    first, channels, inner = _op_bn_act(block, in_channels, block.out_channels, block.stride, block.act, size)
    second, channels, out = _layer_operator(block, channels, channels, 1, inner)
    body = Seq((("conv1", first), ("conv2", second)))
    shortcut, _, shortcut_size = _shortcut(block, in_channels, size, bn=False)
    _same_size(out, shortcut_size, "the residual")
    if isinstance(shortcut, Identity):
        return Sum((("body", Seq((("preact", preact), ("body", body)))), ("shortcut", shortcut)),
                   role="preact"), channels, out
    return Seq((("preact", preact), ("add", Sum((("body", body), ("shortcut", shortcut)))))), channels, out


_BLOCKS = {"conv": lambda block, c, size: _op_bn_act(block, c, block.out_channels, block.stride, block.act, size),
           "inverted": _inverted, "basic": _basic, "preact": _preact}


def plan_block(block: BlockSpec, in_channels: int, size: Size):
    """(node, out_channels, out_size) of one block."""
    return _BLOCKS[block.type](block, in_channels, size)


def plan_stem(stem: StemSpec, in_channels: int, size: Size):
    """(node, out_channels, out_size) of the stem; `padding_free` gives the padding-free stem block:
    s = ConvBNAct(3x3); out = ConvBNAct(1x1)(cat[DepthwiseConvBNAct(s), MaxPool(3, 1, 1)(s)])."""
    if stem.padding_free:
        channels = stem.out_channels
        conv, _, out = _conv_bn_act(in_channels, channels, 3, stem.stride, stem.act, size)
        dw = _conv_bn_act(channels, channels, 3, 1, stem.act, out, groups=channels)[0]
        pool = _max_pool(channels, 3, 1, 1, out)[0]
        fuse = _conv_bn_act(2 * channels, channels, 1, 1, stem.act, out)[0]
        node = Seq((("conv", conv), ("branches", Concat((("dw", dw), ("pool", pool)))), ("fuse", fuse)),
                   role="padding_free_stem")
        return node, channels, out
    op, channels, out = _layer_operator(stem, in_channels, stem.out_channels, stem.stride, size)
    children = [("op", op)]
    if stem.bn:
        children.append(("bn", BatchNorm(channels, out)))
    if stem.act is not None:
        children.append(("act", Act(stem.act, channels, out)))
    if stem.max_pool:
        pool, _, out = _max_pool(channels, 3, 2, 1, out)
        children.append(("pool", pool))
    return Seq(tuple(children)), channels, out


def plan_head(head: HeadSpec, in_channels: int, size: Size, num_classes: int) -> tuple[Node, Linear]:
    """The head (optional BN+act, optional 1x1 conv with SE, global average pool, flatten) and the classifier."""
    children = []
    channels = in_channels
    if head.bn_act:
        children += [("bn", BatchNorm(channels, size)), ("act", Act(head.act, channels, size))]
    if head.conv_channels is not None:
        conv, channels, size = _conv_bn_act(channels, head.conv_channels, 1, 1, head.act, size)
        children.append(("conv", conv))
        if head.se:
            children.append(("se", plan_squeeze_excite(channels, size)))
    children += [("pool", GlobalPool(channels, size)), ("flatten", Flatten(channels))]
    return Seq(tuple(children)), Linear(channels, num_classes, True)


def plan_input(input_bn: bool, channels: int, size: Size) -> Node:
    """The input normalisation: a BatchNorm on the input channels (the zoo's only one), or none."""
    return BatchNorm(channels, size) if input_bn else Identity(channels)


def plan(spec: ArchSpec, input_size: tuple[int, int, int] | None = None) -> Plan:
    """The plan of `spec` for one image of `input_size` (C, H, W; default the spec's own input size).

    A feature map that would become empty is a `PlanError` naming the layer (`blocks[7]: ...`).
    """
    input_size = spec.input_size if input_size is None else tuple(input_size)
    channels, height, width = input_size
    size = (height, width)
    input_bn = plan_input(spec.input_bn, channels, size)
    where = "stem"
    try:
        stem, channels, size = plan_stem(spec.stem, channels, size)
        blocks = []
        for index, block in enumerate(spec.blocks):
            where = f"blocks[{index}]"
            node, channels, size = plan_block(block, channels, size)
            blocks.append(node)
    except PlanError as error:
        raise PlanError(f"{where}: {error}") from None
    head, classifier = plan_head(spec.head, channels, size, spec.num_classes)
    return Plan(input_size, input_bn, stem, tuple(blocks), head, classifier)
