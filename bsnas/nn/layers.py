"""The modules a plan is built from.

Leaves of a plan become torch's own layers (`nn.Conv2d`, `nn.BatchNorm2d`, ...) or `OrthonormalConv1x1`, the
1 x 1 convolution whose weight W carries BSConv-S's orthonormal loss ||W W^T - I||_F. Containers become the
four wiring modules below, `Sequential`-like `Seq` and `Sum`, `Concat`, `Gate`, each subclassed under the name
of what it holds (`BSConvU`, `MaxPoolBranch`, `SqueezeExcite`, ...) so that a printed model reads like the
paper. None of them decides a channel count, a padding or a shape: `bsnas.arch.plan` does.

`reg_loss(model, alpha)` sums the orthonormal losses of any model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "create_act",
    "Seq",
    "Sum",
    "Concat",
    "Gate",
    "BSConvU",
    "BSConvS",
    "DepthwiseSeparableConv",
    "MaxPoolBranch",
    "PaddingFreeStem",
    "SqueezeExcite",
    "OrthonormalConv1x1",
    "orthonormal_loss",
    "reg_loss",
    "has_reg_loss",
]

# Only ReLU runs truly in place under autograd: in-place ReLU6, Hardswish and Hardsigmoid clone their input for
# the backward pass: an extra copy of the largest activations in every training step.
_ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "relu6": nn.ReLU6, "hswish": nn.Hardswish,
                "hsigmoid": nn.Hardsigmoid}


def create_act(name: str | None) -> nn.Module:
    """Activation module by name (`relu`, `relu6`, `hswish`, `hsigmoid`); `None` gives identity."""
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


# ---------------------------------------------------------------------------------------------- wiring


class Seq(nn.Sequential):
    """Children one after another (a plan's `Seq`)."""


class _Branches(nn.Module):
    """Named branches that all see the same input."""

    def __init__(self, branches: Mapping[str, nn.Module]):
        super().__init__()
        for name, branch in branches.items():
            self.add_module(name, branch)


class Sum(_Branches):
    """The sum of the branches' outputs (a plan's `Sum`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = iter(self.children())
        out = next(branches)(x)
        for branch in branches:
            out = out + branch(x)
        return out


class Concat(_Branches):
    """The branches' outputs concatenated along the channels (a plan's `Concat`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], dim=1)


class Gate(nn.Module):
    """The input times its body's output (a plan's `Gate`)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class BSConvU(Seq):
    """BSConv-U: 1 x 1 pointwise (no bias), optional BN, k x k depthwise with the stride."""


class BSConvS(Seq):
    """BSConv-S: pointwise M->M' (orthonormal loss), optional BN, pointwise M'->N, optional BN, depthwise."""


class DepthwiseSeparableConv(Seq):
    """DSC: depthwise block (conv, BN, activation), then a 1 x 1 pointwise conv (no BN after it)."""


class MaxPoolBranch(Sum):
    """`body(x) + MaxPool2d(3, 2)(x)`: the parameter-free branch of padding-free downsampling."""


class PaddingFreeStem(Seq):
    """Padding-free stem block: s = ConvBNAct(3x3); out = ConvBNAct(1x1)(cat[DWConvBNAct(s), MaxPool(3,1,1)(s)])."""


class SqueezeExcite(Gate):
    """Squeeze-excitation (MobileNetV3): pool, 1x1 conv to channels//4, ReLU, 1x1 conv, hard-sigmoid, scale."""
