"""The paper's kernel analysis (Haase & Amthor 2020, Section 3.1 and Figure 3), over the weights of any model.

For a k x k convolution (k > 1) with M input slices per filter, each filter F (M x k x k) is split into its M
slices, M samples of k^2 values; a PCA of those samples gives the share of the filter's variance that its first
principal component explains (and its first two). PCA is the paper's, so it is *centered*: the mean slice of the
filter is subtracted before the variance is taken. A share near 1 means the slices are one k x k blueprint scaled
per input channel (plus the mean slice), the intra-kernel correlation that BSConv builds in. With M slices the
centered share is at least 1 / min(M - 1, k^2) (so always 1 for M = 2); `centered=False` measures instead the
share of the filter's energy that the best rank-one fit w_m * B (BSConv's exact form, no mean slice) captures, at
least 1 / min(M, k^2).

The cross-kernel view (the paper's Section 4 and Figure 5) turns the weight around: for each input channel m, the
N slices F^(1)_m ... F^(N)_m across the filters (of m's group). A share near 1 there is the correlation that a
depthwise separable convolution assumes, one k x k kernel per input channel scaled per filter.

BSConv-U and BSConv-S modules are read as their equivalent full kernel F[n, m] = w[n, m] * B[n], with w the
product of their pointwise weights and inner BatchNorms (running statistics, as in eval mode) and B the depthwise
kernel: rank one per filter by construction. Every weight that carries the orthonormal loss (BSConv-S's W, the
projection of a `bsconv_s` inverted block) is reported with its singular values.

A layer's stage is the rank of its output resolution, largest first, measured by one forward pass of a zero
image: the convolutions between two downsamplings form one stage, the stride-2 convolution that starts a stage
included. Layers the pass does not reach (e.g. auxiliary heads in eval mode) are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bsnas.nn.layers import BSConvS, BSConvU, OrthonormalConv1x1, orthonormal_loss

__all__ = [
    "KernelAnalysis",
    "KernelLayer",
    "OrthonormalWeight",
    "analyze_kernels",
    "cross_kernel_shares",
    "equivalent_kernel",
    "intra_kernel_shares",
    "pca_shares",
]

_NO_VARIANCE = 1e-24  # a set whose variance is below this times its squared norm has none (float64 rounding)


def pca_shares(samples: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """The explained-variance ratios of a PCA of each set of samples, largest first.

    `samples` is (..., S, D): sets of S samples of D values; the result is (..., min(S, D)), float64, NaN for a set
    with no variance. `centered` subtracts each set's mean sample first (PCA as the paper uses it).
    """
    x = samples.detach().to(torch.float64)
    energy = x.square().sum((-2, -1), keepdim=True)
    if centered:
        x = x - x.mean(dim=-2, keepdim=True)
    variances = torch.linalg.svdvals(x).square()
    total = variances.sum(-1, keepdim=True)
    shares = variances / total
    return shares.masked_fill(total <= _NO_VARIANCE * energy.squeeze(-1), math.nan)


def intra_kernel_shares(weight: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """(N, min(M, k^2)) PCA shares of each filter's M slices, for a conv weight (N, M, kh, kw) (M per group)."""
    return pca_shares(weight.flatten(2), centered)


def cross_kernel_shares(weight: torch.Tensor, groups: int = 1, centered: bool = True) -> torch.Tensor:
    """(groups * M, ...) PCA shares of each input channel's slices across the filters of its group."""
    out_channels, per_group = weight.shape[:2]
    slices = weight.flatten(2).reshape(groups, out_channels // groups, per_group, -1)
    return pca_shares(slices.transpose(1, 2).reshape(groups * per_group, out_channels // groups, -1), centered)


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    return scale if bn.weight is None else scale * bn.weight.double()


def equivalent_kernel(module: BSConvU | BSConvS) -> torch.Tensor:
    """The full kernel (N, M, k, k), float64, of a BSConv-U/S layer's path to its depthwise conv:
    F[n, m] = w[n, m] * B[n], w the product of its pointwise weights and inner BatchNorm scales (eval mode)."""
    w = None
    for part in module.modules():
        if isinstance(part, nn.Conv2d) and part.groups > 1:  # the depthwise conv: the blueprints
            return w[:, :, None, None] * part.weight.detach().double()
        if isinstance(part, nn.Conv2d):
            pointwise = part.weight.detach().double()[:, :, 0, 0]
            w = pointwise if w is None else pointwise @ w
        elif isinstance(part, nn.BatchNorm2d):
            w = _bn_scale(part)[:, None] * w
    raise ValueError(f"{type(module).__name__} without a depthwise convolution")


@dataclass(frozen=True)
class KernelLayer:
    """One analysed layer: `kind` is `conv` (an nn.Conv2d) or `bsconv_u`/`bsconv_s` (their equivalent kernel).

    `pc1`/`pc2`: per filter, the share explained by the first / first two components (None: no variance);
    `cross_pc1`/`cross_pc2`: the same per input channel across the filters of its group (empty with one filter
    per group).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    out_size: tuple[int, int]
    stage: int
    pc1: list[float | None]
    pc2: list[float | None]
    cross_pc1: list[float | None]
    cross_pc2: list[float | None]


@dataclass(frozen=True)
class OrthonormalWeight:
    """A weight W (rows x cols) that carries the orthonormal loss: its singular values (largest first) and
    ||W W^T - I||_F."""

    name: str
    shape: tuple[int, int]
    singular_values: list[float]
    loss: float


@dataclass(frozen=True)
class KernelAnalysis:
    """The analysed layers in model order and the orthonormal weights; `input_size` is the stage-finding pass's
    image, `centered` whether the PCA subtracted each set's mean slice."""

    input_size: tuple[int, int, int]
    centered: bool
    layers: list[KernelLayer]
    orthonormal: list[OrthonormalWeight]

    def to_dict(self) -> dict:
        return asdict(self)


def _values(shares: torch.Tensor, components: int) -> list[float | None]:
    """Per set, the share of the first `components` (None where undefined)."""
    return [None if math.isnan(v) else v for v in shares[:, :components].sum(-1).tolist()]


def _kernel_layers(model: nn.Module):
    """(name, kind, weight, groups, module) of every layer to analyse, in model order; the convs inside a BSConv are
    read through it."""
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, BSConvU | BSConvS):
            inside.update(id(part) for part in module.modules())
            yield name, "bsconv_u" if isinstance(module, BSConvU) else "bsconv_s", equivalent_kernel(module), 1, module
        elif isinstance(module, nn.Conv2d) and id(module) not in inside:
            per_group = module.in_channels // module.groups
            if max(module.kernel_size) > 1 and per_group >= 2:
                yield name, "conv", module.weight.detach(), module.groups, module


def _out_sizes(model: nn.Module, modules: list[nn.Module], input_size: tuple[int, int, int]) -> dict[int, tuple]:
    """id(module) -> (H, W) of its output in one forward pass of a zero image (eval mode)."""
    sizes = {}

    def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
        sizes.setdefault(id(module), tuple(output.shape[-2:]))

    hooks = [m.register_forward_hook(record) for m in modules]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_size, dtype=parameter.dtype, device=parameter.device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sizes


def analyze_kernels(model: nn.Module, input_size: tuple[int, int, int], centered: bool = True) -> KernelAnalysis:
    """The intra- and cross-kernel PCA of every k x k layer of `model` and the spectra of its orthonormal weights;
    `input_size` (C, H, W) is the image of the forward pass that finds each layer's stage."""
    found = list(_kernel_layers(model))
    sizes = _out_sizes(model, [entry[-1] for entry in found], input_size)
    resolutions = sorted({sizes[id(entry[-1])] for entry in found if id(entry[-1]) in sizes},
                         key=lambda size: (-size[0] * size[1], size))
    stage_of = {size: index + 1 for index, size in enumerate(resolutions)}
    layers = []
    for name, kind, weight, groups, module in found:
        if id(module) not in sizes:
            continue
        intra = intra_kernel_shares(weight, centered)
        cross = cross_kernel_shares(weight, groups, centered) if weight.shape[0] // groups >= 2 else intra[:0]
        size = sizes[id(module)]
        layers.append(KernelLayer(
            name=name, kind=kind, in_channels=weight.shape[1] * groups, out_channels=weight.shape[0], groups=groups,
            kernel_size=tuple(weight.shape[2:]), out_size=size, stage=stage_of[size], pc1=_values(intra, 1),
            pc2=_values(intra, 2), cross_pc1=_values(cross, 1), cross_pc2=_values(cross, 2)))
    orthonormal = [
        OrthonormalWeight(name, tuple(m.weight.shape[:2]),
                          torch.linalg.svdvals(m.weight.detach().double().flatten(1)).tolist(),
                          orthonormal_loss(m.weight.detach().double()).item())
        for name, m in model.named_modules() if isinstance(m, OrthonormalConv1x1)]
    return KernelAnalysis(tuple(input_size), centered, layers, orthonormal)
