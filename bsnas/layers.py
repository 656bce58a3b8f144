"""Convolution operators and the small blocks the builder assembles.

`create_conv` is the one factory for the four spatial operators (timm `create_conv2d` style):

- `regular`:  k x k convolution.
- `dsc`:      k x k depthwise, BN, activation, 1 x 1 pointwise (MobileNetV1 order).
- `bsconv_u`: 1 x 1 pointwise M->N, optional BN, k x k depthwise on N channels (Haase & Amthor 2020).
- `bsconv_s`: 1 x 1 pointwise M->M' (M' = min(M, max(min_mid_channels, ceil(p*M)))), optional BN,
  1 x 1 pointwise M'->N, optional BN, k x k depthwise. The first pointwise weight W carries the
  orthonormal loss ||W W^T - I||_F; `reg_loss(model, alpha)` sums these losses over a model.

Padding-free downsampling (second seed paper): a stride-2 depthwise block uses padding k//2 - 1 and
adds a parameter-free MaxPool2d(3, 2) of its input to its output (`MaxPoolBranch`);
`PaddingFreeStem` replaces the first convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "OPS",
    "create_act",
    "create_conv",
    "ConvBNAct",
    "BSConvU",
    "BSConvS",
    "DepthwiseSeparableConv",
    "depthwise_block",
    "MaxPoolBranch",
    "PaddingFreeStem",
    "SqueezeExcite",
    "OrthonormalConv1x1",
    "orthonormal_loss",
    "reg_loss",
    "has_reg_loss",
    "bsconv_s_mid_channels",
    "padding_free_padding",
]

OPS = ("regular", "dsc", "bsconv_u", "bsconv_s")
# Only ReLU runs truly in place under autograd: in-place ReLU6, Hardswish and Hardsigmoid clone their input for
# the backward pass: an extra copy of the largest activations in every training step.
_ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def create_act(name: str | None) -> nn.Module:
    """Activation module by name (`relu`, `relu6`, `hswish`); `None` gives identity."""
    if name is None:
        return nn.Identity()
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(_ACTIVATIONS)}") from None


def orthonormal_loss(weight: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||_F (Frobenius norm, not squared) of a weight viewed as (rows, fan_in)."""
    w = weight.reshape(weight.shape[0], -1)
    gram = w @ w.t()
    return torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=w.dtype, device=w.device))


class OrthonormalConv1x1(nn.Conv2d):
    """A bias-free 1 x 1 convolution whose weight carries the orthonormal regularisation loss."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=False)

    def orthonormal_loss(self) -> torch.Tensor:
        """||W W^T - I||_F of this layer's (out_channels x in_channels) weight."""
        return orthonormal_loss(self.weight)


def reg_loss(model: nn.Module, alpha: float) -> torch.Tensor:
    """`alpha` times the sum of the orthonormal losses of every module of `model` (0 when none)."""
    losses = [m.orthonormal_loss() for m in model.modules() if isinstance(m, OrthonormalConv1x1)]
    if not losses:
        param = next(model.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else None)
    return alpha * torch.stack(losses).sum()


def has_reg_loss(model: nn.Module) -> bool:
    """True when some module of `model` carries an orthonormal loss."""
    return any(isinstance(m, OrthonormalConv1x1) for m in model.modules())


def bsconv_s_mid_channels(in_channels: int, p: float, min_mid_channels: int = 4) -> int:
    """M' = min(M, max(min_mid_channels, ceil(p * M))), the subspace width of BSConv-S."""
    return min(in_channels, max(min_mid_channels, math.ceil(p * in_channels)))


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _same_padding(kernel_size: int | tuple[int, int], dilation: int | tuple[int, int] = 1) -> tuple[int, int]:
    k, d = _pair(kernel_size), _pair(dilation)
    return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)


def _depthwise(channels: int, kernel_size, stride, padding, dilation=1, bias=False) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation, groups=channels, bias=bias)


class BSConvU(nn.Sequential):
    """BSConv-U: 1 x 1 pointwise (no bias), optional BN, k x k depthwise with the stride."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 bias=False, inner_bn=False):
        super().__init__()
        padding = _same_padding(kernel_size, dilation) if padding is None else padding
        self.pw = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if inner_bn:
            self.bn = nn.BatchNorm2d(out_channels)
        self.dw = _depthwise(out_channels, kernel_size, stride, padding, dilation, bias)


class BSConvS(nn.Sequential):
    """BSConv-S: pointwise M->M' (orthonormal loss), optional BN, pointwise M'->N, optional BN, depthwise."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 bias=False, p=0.25, inner_bn=True, min_mid_channels=4):
        super().__init__()
        if not 0 < p <= 1:
            raise ValueError(f"BSConv-S p must be in (0, 1], got {p}")
        padding = _same_padding(kernel_size, dilation) if padding is None else padding
        mid_channels = bsconv_s_mid_channels(in_channels, p, min_mid_channels)
        self.pw1 = OrthonormalConv1x1(in_channels, mid_channels)
        if inner_bn:
            self.bn1 = nn.BatchNorm2d(mid_channels)
        self.pw2 = nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False)
        if inner_bn:
            self.bn2 = nn.BatchNorm2d(out_channels)
        self.dw = _depthwise(out_channels, kernel_size, stride, padding, dilation, bias)


class MaxPoolBranch(nn.Module):
    """Adds a parameter-free MaxPool2d(3, stride 2) of the input to `body(input)` (padding-free downsampling)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.pool(x)


class ConvBNAct(nn.Sequential):
    """Regular k x k convolution (no bias), optional BN, optional activation."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, act="relu", bn=True, groups=1,
                 padding=None):
        super().__init__()
        padding = _same_padding(kernel_size) if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        if bn:
            self.bn = nn.BatchNorm2d(out_channels)
        if act is not None:
            self.act = create_act(act)


def padding_free_padding(kernel_size: int) -> int:
    """Padding that makes a stride-2 k x k conv match MaxPool2d(3, 2, 0): 0 for 3x3, 1 for 5x5."""
    return kernel_size // 2 - 1


def depthwise_block(channels: int, kernel_size: int, stride: int = 1, act: str | None = "relu",
                   padding_free: bool = False) -> nn.Module:
    """Depthwise conv, BN, activation; padding-free at stride 2 adds the max-pool branch."""
    if padding_free and stride == 2:
        padding = padding_free_padding(kernel_size)
        return MaxPoolBranch(ConvBNAct(channels, channels, kernel_size, stride, act, groups=channels,
                                       padding=padding))
    return ConvBNAct(channels, channels, kernel_size, stride, act, groups=channels)


class DepthwiseSeparableConv(nn.Sequential):
    """DSC: depthwise block (conv, BN, activation), then a 1 x 1 pointwise conv (no BN after it)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, act="relu", padding_free=False):
        super().__init__()
        self.dw = depthwise_block(in_channels, kernel_size, stride, act, padding_free)
        self.pw = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def create_conv(kind: str, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                stride: int | tuple[int, int] = 1, *, padding=None, dilation=1, bias: bool = False,
                p: float | None = None, inner_bn: bool = False, min_mid_channels: int = 4,
                act: str | None = "relu", padding_free: bool = False) -> nn.Module:
    """The spatial operator `kind` (regular | dsc | bsconv_u | bsconv_s) with no BN/activation after it.

    `p`, `inner_bn` and `min_mid_channels` configure BSConv-S (`inner_bn` BSConv-U too); `act` is
    the activation inside DSC; `padding_free` gives stride-2 depthwise convs the padding-free padding
    (DSC gets the max-pool branch too; the builder adds it around BSConv's depthwise block).
    """
    if padding_free and stride == 2:
        padding = padding_free_padding(kernel_size)
    if kind == "regular":
        padding = _same_padding(kernel_size, dilation) if padding is None else padding
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
    if kind == "dsc":
        return DepthwiseSeparableConv(in_channels, out_channels, kernel_size, stride, act, padding_free)
    if kind == "bsconv_u":
        return BSConvU(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, inner_bn)
    if kind == "bsconv_s":
        if p is None:
            raise ValueError("bsconv_s needs p in (0, 1]")
        return BSConvS(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, p, inner_bn,
                       min_mid_channels)
    raise ValueError(f"unknown conv kind {kind!r}; allowed: {', '.join(OPS)}")


class SqueezeExcite(nn.Module):
    """Squeeze-excitation (MobileNetV3): pool, 1x1 conv to channels//4, ReLU, 1x1 conv, hard-sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        squeeze = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, kernel_size=1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class PaddingFreeStem(nn.Module):
    """Padding-free stem block: s = ConvBNAct(3x3); out = ConvBNAct(1x1)(cat[DWConvBNAct(s), MaxPool(3,1,1)(s)])."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, act: str | None = "relu"):
        super().__init__()
        self.conv = ConvBNAct(in_channels, channels, 3, stride, act)
        self.dw = ConvBNAct(channels, channels, 3, 1, act, groups=channels)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.fuse = ConvBNAct(2 * channels, channels, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x)
        return self.fuse(torch.cat([self.dw(s), self.pool(s)], dim=1))
