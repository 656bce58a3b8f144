"""`build_model(spec)`: one builder that threads channels from block to block (timm style)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bsnas.layers import (
    ConvBNAct,
    MaxPoolBranch,
    OrthonormalConv1x1,
    PaddingFreeStem,
    SqueezeExcite,
    create_act,
    create_conv,
    depthwise_block,
    padding_free_padding,
)
from bsnas.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec

__all__ = ["Network", "build_model", "build_block"]


def _op_layer(layer: StemSpec | BlockSpec, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The spec's spatial operator, padding-free where the layer asks for it."""
    return create_conv(layer.op, in_channels, out_channels, layer.kernel_size, stride, p=layer.p,
                       inner_bn=layer.inner_bn, act=layer.act, padding_free=layer.padding_free)


def _op_bn_act(layer: StemSpec | BlockSpec, in_channels: int, out_channels: int, stride: int,
               act: str | None) -> nn.Sequential:
    """Operator, BN and activation. Padding-free BSConv puts the max-pool branch on its depthwise block."""
    op = _op_layer(layer, in_channels, out_channels, stride)
    bn, activation = nn.BatchNorm2d(out_channels), create_act(act)
    if layer.padding_free and stride == 2 and layer.op in ("bsconv_u", "bsconv_s"):
        *pointwise, depthwise = op.children()
        return nn.Sequential(*pointwise, MaxPoolBranch(nn.Sequential(depthwise, bn, activation)))
    return nn.Sequential(op, bn, activation)


class ConvUnit(nn.Sequential):
    """MobileNetV1 unit: operator, BN, activation."""

    def __init__(self, block: BlockSpec, in_channels: int):
        super().__init__(*_op_bn_act(block, in_channels, block.out_channels, block.stride, block.act))


class InvertedResidual(nn.Module):
    """Expansion + spatial layer, optional SE, linear projection, residual when shapes allow.

    The operator decides the expansion: `bsconv_u`/`bsconv_s` pointwise then depthwise (the classic
    block), `regular` one k x k conv (fused), `dsc` depthwise then pointwise. `bsconv_s` puts the
    orthonormal loss on the projection weight.
    """

    def __init__(self, block: BlockSpec, in_channels: int):
        super().__init__()
        mid, out, k, s, act = block.mid_channels, block.out_channels, block.kernel_size, block.stride, block.act
        if block.op == "regular":
            padding = padding_free_padding(k) if block.padding_free and s == 2 else None
            layers = [ConvBNAct(in_channels, mid, k, s, act, padding=padding)]
        elif block.op == "dsc":
            layers = [depthwise_block(in_channels, k, s, act, block.padding_free),
                      ConvBNAct(in_channels, mid, 1, 1, act)]
        else:
            layers = [ConvBNAct(in_channels, mid, 1, 1, act), depthwise_block(mid, k, s, act, block.padding_free)]
        if block.se:
            layers.append(SqueezeExcite(mid))
        self.expand = nn.Sequential(*layers)
        if block.op == "bsconv_s":
            self.project = nn.Sequential(OrthonormalConv1x1(mid, out), nn.BatchNorm2d(out))
        else:
            self.project = ConvBNAct(mid, out, 1, 1, act=None)
        self.use_residual = in_channels == out and s == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.expand(x))
        return x + y if self.use_residual else y


def _shortcut(block: BlockSpec, in_channels: int, bn: bool) -> nn.Module:
    """Residual path: identity, or a 1x1 projection (with BN for post-activation blocks).

    Padding-free blocks downsample it with the parameter-free MaxPool2d(3, 2) before a stride-1 projection.
    """
    if in_channels == block.out_channels and block.stride == 1:
        return nn.Identity()
    if block.padding_free:
        return nn.Sequential(nn.MaxPool2d(3, 2), ConvBNAct(in_channels, block.out_channels, 1, 1, None, bn))
    return ConvBNAct(in_channels, block.out_channels, 1, block.stride, None, bn)


class BasicBlock(nn.Module):
    """ResNet basic block: two operator layers with BN, projection shortcut when needed, final activation."""

    def __init__(self, block: BlockSpec, in_channels: int):
        super().__init__()
        out = block.out_channels
        self.body = nn.Sequential(
            _op_bn_act(block, in_channels, out, block.stride, block.act),
            _op_bn_act(block, out, out, 1, None),
        )
        self.shortcut = _shortcut(block, in_channels, bn=True)
        self.act = create_act(block.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class PreactBlock(nn.Module):
    """Pre-activation basic block (WideResNet): BN+act first, the second layer without BN."""

    def __init__(self, block: BlockSpec, in_channels: int):
        super().__init__()
        out = block.out_channels
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), create_act(block.act))
        self.body = nn.Sequential(
            _op_bn_act(block, in_channels, out, block.stride, block.act),
            _op_layer(block, out, out, 1),
        )
        self.projection = _shortcut(block, in_channels, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.preact(x)
        shortcut = x if isinstance(self.projection, nn.Identity) else self.projection(activated)
        return self.body(activated) + shortcut


_BLOCKS = {"conv": ConvUnit, "inverted": InvertedResidual, "basic": BasicBlock, "preact": PreactBlock}


def build_block(block: BlockSpec, in_channels: int) -> nn.Module:
    """One block module from its spec and the incoming channel count."""
    return _BLOCKS[block.type](block, in_channels)


def _build_stem(stem: StemSpec, in_channels: int) -> nn.Module:
    if stem.padding_free:
        return PaddingFreeStem(in_channels, stem.out_channels, stem.stride, stem.act)
    op = _op_layer(stem, in_channels, stem.out_channels, stem.stride)
    layers = [op]
    if stem.bn:
        layers.append(nn.BatchNorm2d(stem.out_channels))
    if stem.act is not None:
        layers.append(create_act(stem.act))
    if stem.max_pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)


def _build_head(head: HeadSpec, in_channels: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    if head.bn_act:
        layers += [nn.BatchNorm2d(in_channels), create_act(head.act)]
    if head.conv_channels is not None:
        layers.append(ConvBNAct(in_channels, head.conv_channels, 1, 1, head.act))
        in_channels = head.conv_channels
        if head.se:
            layers.append(SqueezeExcite(in_channels))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return nn.Sequential(*layers), in_channels


class Network(nn.Module):
    """A model built from an ArchSpec: input BN, stem, blocks, head, classifier.

    `spec` is the ArchSpec it was built from and `alpha` the spec's orthonormal-loss weight.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        self.alpha = spec.alpha
        self.input_bn = nn.BatchNorm2d(spec.in_channels) if spec.input_bn else nn.Identity()
        self.stem = _build_stem(spec.stem, spec.in_channels)
        channels = spec.stem.out_channels
        blocks = []
        for block in spec.blocks:
            blocks.append(build_block(block, channels))
            channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head, channels = _build_head(spec.head, channels)
        self.classifier = nn.Linear(channels, spec.num_classes)
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
