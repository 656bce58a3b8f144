"""Convert an existing model (e.g. a torchvision ResNet or VGG) to BSConv: `replace(model, "bsconv_u")`.

Rules of the reference design: only plain `nn.Conv2d` with groups 1 and a 3x3 or 5x5 kernel are replaced,
the first layer too; 1x1, 7x7, grouped and depthwise convolutions (and `nn.Conv2d` subclasses) are kept.
Stride, padding, dilation, padding mode and the bias carry over to BSConv's depthwise conv, so output
shapes are unchanged; device, dtype and train/eval mode follow the replaced conv. The new layers are
freshly initialised: the converted model needs training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from bsnas.errors import BsnasError
from bsnas.nn.build import create_conv

__all__ = ["KINDS", "ReplaceResult", "replace"]

KINDS = ("bsconv_u", "bsconv_s")
_KERNEL_SIZES = ((3, 3), (5, 5))


@dataclass
class ReplaceResult:
    """The converted model, the dotted names of the replaced convs, the kept convs as `name: reason`,
    and the parameter counts (all parameters) before and after."""

    model: nn.Module
    replaced: list[str]
    kept: list[str]
    params_before: int
    params_after: int


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _keep_reason(conv: nn.Conv2d) -> str | None:
    """Why `conv` is kept, or None when it is replaced."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is a subclass of nn.Conv2d"
    if conv.groups != 1:
        return f"groups={conv.groups} (only groups=1 is replaced)"
    if tuple(conv.kernel_size) not in _KERNEL_SIZES:
        return f"kernel {conv.kernel_size[0]}x{conv.kernel_size[1]} (only 3x3 and 5x5 are replaced)"
    return None


def _bsconv_like(conv: nn.Conv2d, kind: str, p: float | None, with_bn: bool, min_mid_channels: int) -> nn.Module:
    """A new BSConv with `conv`'s channels, kernel, stride, padding, dilation, bias, padding mode, device, dtype."""
    new = create_conv(kind, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None, p=p,
                      inner_bn=with_bn, min_mid_channels=min_mid_channels)
    new.dw.padding_mode = conv.padding_mode
    return new.to(device=conv.weight.device, dtype=conv.weight.dtype).train(conv.training)


def replace(model: nn.Module, kind: str, *, p: float | None = None, with_bn: bool | None = None,
            min_mid_channels: int = 4, inplace: bool = False) -> ReplaceResult:
    """Replace every groups-1 3x3/5x5 `nn.Conv2d` of `model` by BSConv-U or BSConv-S (`kind`).

    `with_bn` is BSConv's inner BatchNorm (default False for bsconv_u, True for bsconv_s); `p` and
    `min_mid_channels` set BSConv-S's subspace width (p default 0.25). A conv shared by several
    parents becomes one shared BSConv. `model` is deep-copied first unless `inplace`.
    """
    if kind not in KINDS:
        raise BsnasError(f"unknown replacement kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "bsconv_u" and p is not None:
        raise BsnasError("p applies to bsconv_s only; leave it unset for bsconv_u")
    if kind == "bsconv_s":
        p = 0.25 if p is None else p
        if not 0 < p <= 1:
            raise BsnasError(f"p must be in (0, 1], got {p}")
    if min_mid_channels < 1:
        raise BsnasError(f"min_mid_channels must be at least 1, got {min_mid_channels}")
    with_bn = kind == "bsconv_s" if with_bn is None else with_bn

    params_before = _count_params(model)
    if not inplace:
        model = copy.deepcopy(model)
    replaced: list[str] = []
    kept: list[str] = []
    new_modules: dict[int, nn.Module] = {}  # id of a replaced conv -> its BSConv, so shared convs stay shared
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not isinstance(module, nn.Conv2d):
            continue
        reason = _keep_reason(module)
        if reason is not None:
            kept.append(f"{name}: {reason}")
            continue
        if id(module) not in new_modules:
            new_modules[id(module)] = _bsconv_like(module, kind, p, with_bn, min_mid_channels)
        if name:
            model.set_submodule(name, new_modules[id(module)])
        else:  # the model itself is the conv
            model = new_modules[id(module)]
        replaced.append(name)
    return ReplaceResult(model, replaced, kept, params_before, _count_params(model))
