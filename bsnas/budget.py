"""Cost budgets of a search: `100MFLOPs`, `1.5Mparams`, `4ms`, `500us` to `Budget(kind, limit)`.

FLOPs and parameter counts take the SI prefixes k, M, G (x1e3, x1e6, x1e9); latency takes ms or us
(stored in milliseconds). FLOPs are counted in the convention of `bsnas.profile` at the dataset's
input size, latency is the median forward time of one image (batch 1) on the search device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bsnas.errors import BsnasError

__all__ = ["COST_KINDS", "Budget", "parse_budget", "format_cost", "check_budgets", "spec_cost"]

COST_KINDS = ("flops", "params", "latency")
_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_UNITS = {"flops": "flops", "flop": "flops", "params": "params", "param": "params", "p": "params",
          "ms": "latency", "us": "latency", "µs": "latency"}
_PATTERN = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?\s*"
                      r"(?P<prefix>[kKMG]?)(?P<unit>(?i:flops?|params?|ms|us|µs))\s*$")
_EXAMPLES = "e.g. 100MFLOPs, 1.5Mparams, 4ms or 500us"


@dataclass(frozen=True)
class Budget:
    """An upper limit on one cost: `kind` in COST_KINDS, `limit` in FLOPs, parameters or milliseconds."""

    kind: str
    limit: float

    def violation(self, value: float) -> float:
        """Optuna constraint value: relative excess over the limit (<= 0 is within the budget)."""
        return (value - self.limit) / self.limit

    def __str__(self) -> str:
        return format_cost(self.kind, self.limit)


def parse_budget(text: str) -> Budget:
    """Parse one `--budget` value; a malformed one is a BsnasError naming the value and the forms allowed."""
    match = _PATTERN.match(str(text))
    if match is None:
        raise BsnasError(f"--budget {text!r} is not a number with a unit; use {_EXAMPLES}.")
    number = float(match["number"]) * 10.0 ** int(match["exp"] or 0)
    unit = match["unit"].lower()
    kind = _UNITS[unit]
    prefix = match["prefix"]
    if kind == "latency":
        if prefix:
            raise BsnasError(f"--budget {text!r}: a latency takes ms or us without a prefix; use {_EXAMPLES}.")
        limit = number / 1000.0 if unit in ("us", "µs") else number
    else:
        limit = number * _PREFIX[prefix]
    if limit <= 0:
        raise BsnasError(f"--budget {text!r} must be greater than zero.")
    return Budget(kind, limit)


def check_budgets(budgets: list[Budget]) -> list[Budget]:
    """At most one budget per cost kind; returns the list unchanged."""
    seen: set[str] = set()
    for budget in budgets:
        if budget.kind in seen:
            raise BsnasError(f"--budget given twice for {budget.kind}; give at most one budget per cost.")
        seen.add(budget.kind)
    return budgets


def format_cost(kind: str, value: float | None) -> str:
    """Human form of a cost: `95.3 MFLOPs`, `1.52 Mparams`, `3.41 ms`."""
    if value is None:
        return "-"
    if kind == "latency":
        return f"{value:.2f} ms" if value >= 1 else f"{value * 1000:.0f} us"
    unit = "FLOPs" if kind == "flops" else "params"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.0f} {unit}"


# ------------------------------------------------------------------------------------------ analytic cost
# The FLOPs and parameters of a spec computed from the spec alone (microseconds, no torch), in the
# convention of `bsnas.profile` and following `bsnas.build` layer by layer; the tests check that it equals
# `profile.count_flops` and the parameter count of the built model. The search uses it to reject a
# candidate over a FLOPs or parameter budget without building it.


class _Counter:
    """Accumulates FLOPs and parameters while threading (C, H, W) through the layers."""

    def __init__(self) -> None:
        self.flops = 0
        self.params = 0

    def conv(self, shape, out_channels, kernel_size, stride=1, padding=None, groups=1, bias=False):
        channels, height, width = shape
        padding = (kernel_size - 1) // 2 if padding is None else padding
        height = (height + 2 * padding - kernel_size) // stride + 1
        width = (width + 2 * padding - kernel_size) // stride + 1
        weights = out_channels * (channels // groups) * kernel_size * kernel_size
        self.params += weights + (out_channels if bias else 0)
        self.flops += height * width * weights + (out_channels * height * width if bias else 0)
        return out_channels, height, width

    def bn(self, shape):
        self.params += 2 * shape[0]
        self.flops += 2 * shape[0] * shape[1] * shape[2]
        return shape

    def act(self, shape, name):
        if name == "relu":
            self.flops += shape[0] * shape[1] * shape[2]
        return shape

    def pool(self, shape, kernel_size, stride, padding):
        self.flops += shape[0] * shape[1] * shape[2]
        channels, height, width = shape
        return (channels, (height + 2 * padding - kernel_size) // stride + 1,
                (width + 2 * padding - kernel_size) // stride + 1)

    def conv_bn_act(self, shape, out_channels, kernel_size, stride, act, groups=1, padding=None, bn=True):
        shape = self.conv(shape, out_channels, kernel_size, stride, padding, groups)
        if bn:
            shape = self.bn(shape)
        return self.act(shape, act)

    def depthwise_block(self, shape, kernel_size, stride, act, padding_free):
        if padding_free and stride == 2:
            self.pool(shape, 3, 2, 0)
            return self.conv_bn_act(shape, shape[0], kernel_size, stride, act, groups=shape[0],
                                    padding=kernel_size // 2 - 1)
        return self.conv_bn_act(shape, shape[0], kernel_size, stride, act, groups=shape[0])

    def se(self, shape):
        channels = shape[0]
        squeeze = max(1, channels // 4)
        self.flops += channels * shape[1] * shape[2]  # global pool
        self.conv((channels, 1, 1), squeeze, 1, bias=True)
        self.act((squeeze, 1, 1), "relu")
        self.conv((squeeze, 1, 1), channels, 1, bias=True)
        return shape

    def op_layer(self, layer, shape, out_channels, stride, after=None):
        """`create_conv` of the layer's op; `after` (bn, act) runs after its depthwise part (padding-free branch)."""
        op, k = layer.op, layer.kernel_size
        padding_free = layer.padding_free and stride == 2
        if op == "regular":
            return self.conv(shape, out_channels, k, stride)
        if op == "dsc":
            shape = self.depthwise_block(shape, k, stride, layer.act, padding_free)
            return self.conv(shape, out_channels, 1)
        if op == "bsconv_s":
            from bsnas.layers import bsconv_s_mid_channels

            mid = bsconv_s_mid_channels(shape[0], layer.p)
            shape = self.conv(shape, mid, 1)
            if layer.inner_bn:
                shape = self.bn(shape)
        shape = self.conv(shape, out_channels, 1)
        if op == "bsconv_u" and layer.inner_bn or op == "bsconv_s" and layer.inner_bn:
            shape = self.bn(shape)
        if padding_free:
            self.pool(shape, 3, 2, 0)
            return self.conv(shape, out_channels, k, stride, padding=k // 2 - 1, groups=out_channels)
        return self.conv(shape, out_channels, k, stride, groups=out_channels)

    def op_bn_act(self, layer, shape, out_channels, stride, act):
        shape = self.op_layer(layer, shape, out_channels, stride)
        return self.act(self.bn(shape), act)


def spec_cost(spec, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(FLOPs, parameters) of one image of `input_size` (C, H, W) through the model of `spec`."""
    count = _Counter()
    shape = tuple(int(v) for v in input_size)
    if spec.input_bn:
        shape = count.bn(shape)
    stem = spec.stem
    if stem.padding_free:
        channels = stem.out_channels
        shape = count.conv_bn_act(shape, channels, 3, stem.stride, stem.act)
        count.pool(shape, 3, 1, 1)
        count.conv_bn_act(shape, channels, 3, 1, stem.act, groups=channels)
        shape = count.conv_bn_act((2 * channels, *shape[1:]), channels, 1, 1, stem.act)
    else:
        shape = count.op_layer(stem, shape, stem.out_channels, stem.stride)
        if stem.bn:
            shape = count.bn(shape)
        shape = count.act(shape, stem.act)
        if stem.max_pool:
            shape = count.pool(shape, 3, 2, 1)
    for block in spec.blocks:
        shape = _block_cost(count, block, shape)
    head = spec.head
    if head.bn_act:
        shape = count.act(count.bn(shape), head.act)
    if head.conv_channels is not None:
        shape = count.conv_bn_act(shape, head.conv_channels, 1, 1, head.act)
        if head.se:
            count.se(shape)
    count.flops += shape[0] * shape[1] * shape[2]  # global average pool
    count.params += shape[0] * spec.num_classes + spec.num_classes
    count.flops += shape[0] * spec.num_classes + spec.num_classes
    return count.flops, count.params


def _block_cost(count: _Counter, block, shape):
    out, stride, act = block.out_channels, block.stride, block.act
    if block.type == "conv":
        return count.op_bn_act(block, shape, out, stride, act)
    if block.type == "inverted":
        mid, k = block.mid_channels, block.kernel_size
        inner = shape
        if block.op == "regular":
            inner = count.conv_bn_act(inner, mid, k, stride, act)
        elif block.op == "dsc":
            inner = count.depthwise_block(inner, k, stride, act, block.padding_free)
            inner = count.conv_bn_act(inner, mid, 1, 1, act)
        else:
            inner = count.conv_bn_act(inner, mid, 1, 1, act)
            inner = count.depthwise_block(inner, k, stride, act, block.padding_free)
        if block.se:
            count.se(inner)
        return count.bn(count.conv(inner, out, 1))
    if block.type == "basic":
        body = count.op_bn_act(block, shape, out, stride, act)
        body = count.op_bn_act(block, body, out, 1, None)
        if shape[0] != out or stride != 1:
            count.bn(count.conv(shape, out, 1, stride, padding=0))
        return count.act(body, act)
    # preact
    count.act(count.bn(shape), act)
    body = count.op_bn_act(block, shape, out, stride, act)
    body = count.op_layer(block, body, out, 1)
    if shape[0] != out or stride != 1:
        count.conv(shape, out, 1, stride, padding=0)
    return body
