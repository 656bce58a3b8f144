"""`build_model(spec)`: the modules of a spec's plan, one module per plan node.

The builder decides nothing: channels, kernels, strides, paddings, groups and the wiring come from
`bsnas.arch.plan`, the same plan `bsnas.cost` sums, so the model always costs what the budget check said.
`create_model(name)` builds a zoo model (timm style), `create_conv(kind, ...)` one operator layer
(timm `create_conv2d` style):

- `regular`:  k x k convolution.
- `dsc`:      k x k depthwise, BN, activation, 1 x 1 pointwise (MobileNetV1 order).
- `bsconv_u`: 1 x 1 pointwise M->N, optional BN, k x k depthwise on N channels (Haase & Amthor 2020).
- `bsconv_s`: 1 x 1 pointwise M->M' (M' = min(M, max(min_mid_channels, ceil(p*M)))), optional BN,
  1 x 1 pointwise M'->N, optional BN, k x k depthwise.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn

from bsnas.arch import plan as nodes
from bsnas.arch.plan import plan_operator
from bsnas.arch.spec import ArchSpec
from bsnas.arch.zoo import get_spec
from bsnas.nn import layers

__all__ = ["Network", "build_model", "build_node", "create_conv", "create_model"]

# container role -> module class (the role names what it holds; the wiring is the container's)
_ROLES = {
    nodes.Seq: {"bsconv_u": layers.BSConvU, "bsconv_s": layers.BSConvS, "dsc": layers.DepthwiseSeparableConv,
            "padding_free_stem": layers.PaddingFreeStem},
    nodes.Sum: {"maxpool_branch": layers.MaxPoolBranch},
    nodes.Concat: {},
    nodes.Gate: {"se": layers.SqueezeExcite},
}
_CONTAINERS = {nodes.Seq: layers.Seq, nodes.Sum: layers.Sum, nodes.Concat: layers.Concat, nodes.Gate: layers.Gate}


def _conv(node: nodes.Conv) -> nn.Conv2d:
    if node.orthonormal:
        return layers.OrthonormalConv1x1(node.in_channels, node.out_channels)
    return nn.Conv2d(node.in_channels, node.out_channels, node.kernel_size, node.stride, node.padding, node.dilation,
                     node.groups, node.bias)


_LEAVES = {
    nodes.Conv: _conv,
    nodes.BatchNorm: lambda node: nn.BatchNorm2d(node.channels),
    nodes.Act: lambda node: layers.create_act(node.kind),
    nodes.MaxPool: lambda node: nn.MaxPool2d(node.kernel_size, node.stride, node.padding),
    nodes.GlobalPool: lambda node: nn.AdaptiveAvgPool2d(1),
    nodes.Flatten: lambda node: nn.Flatten(1),
    nodes.Linear: lambda node: nn.Linear(node.in_features, node.out_features, node.bias),
    nodes.Identity: lambda node: nn.Identity(),
}


def build_node(node: nodes.Node) -> nn.Module:
    """The module of one plan node (and of everything inside it)."""
    kind = type(node)
    if kind in _LEAVES:
        return _LEAVES[kind](node)
    module = _ROLES[kind].get(node.role, _CONTAINERS[kind])
    if kind is nodes.Gate:
        return module(build_node(node.body))
    children = node.children if kind is nodes.Seq else node.branches
    return module(OrderedDict((name, build_node(child)) for name, child in children))


class Network(nn.Module):
    """A model built from an ArchSpec: input BN, stem, blocks, head, classifier.

    `spec` is the ArchSpec it was built from and `alpha` the spec's orthonormal-loss weight.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        network = nodes.plan(spec)
        self.spec = spec
        self.alpha = spec.alpha
        self.input_bn = build_node(network.input_bn)
        self.stem = build_node(network.stem)
        self.blocks = nn.Sequential(*(build_node(block) for block in network.blocks))
        self.head = build_node(network.head)
        self.classifier = build_node(network.classifier)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier."""
        return self.head(self.blocks(self.stem(self.input_bn(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def build_model(spec: ArchSpec, num_classes: int | None = None, in_channels: int | None = None) -> Network:
    """Build the `torch.nn.Module` of a spec; `num_classes`/`in_channels` override the spec's."""
    changes = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
    return Network(dataclasses.replace(spec, **changes) if changes else spec)


def create_model(name: str, num_classes: int | None = None, in_channels: int = 3) -> Network:
    """Build a zoo model (timm-style `create_model`) through its ArchSpec."""
    return build_model(get_spec(name, num_classes, in_channels))


def create_conv(kind: str, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                stride: int | tuple[int, int] = 1, *, padding=None, dilation=1, bias: bool = False,
                p: float | None = None, inner_bn: bool = False, min_mid_channels: int = 4,
                act: str | None = "relu", padding_free: bool = False) -> nn.Module:
    """The spatial operator `kind` (regular | dsc | bsconv_u | bsconv_s) with no BN/activation after it.

    `p`, `inner_bn` and `min_mid_channels` configure BSConv-S (`inner_bn` BSConv-U too); `act` is the
    activation inside DSC; `padding_free` gives stride-2 depthwise convs the padding-free padding (DSC gets
    the max-pool branch too).
    """
    node, _, _ = plan_operator(kind, in_channels, out_channels, kernel_size, stride, padding=padding,
                               dilation=dilation, bias=bias, p=p, inner_bn=inner_bn,
                               min_mid_channels=min_mid_channels, act=act, padding_free=padding_free)
    return build_node(node)
