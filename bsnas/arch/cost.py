"""`bsnas.cost(spec)`: FLOPs and parameters of an architecture, summed over the leaves of its plan.

The convention of the published BSConv tables: convolution and linear multiply-adds (+1 per output for a
bias), BatchNorm 2 per element, ReLU 1 per element, pooling 1 per input element; hard-swish, hard-sigmoid,
ReLU6, the SE multiply and residual adds count 0. `bsnas.profile` counts the same convention with hooks on a
built model; the tests hold the two equal. No torch: a spec costs well under a millisecond.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from bsnas.arch.plan import (
    Act,
    BatchNorm,
    Concat,
    Conv,
    Flatten,
    Gate,
    GlobalPool,
    Identity,
    Linear,
    MaxPool,
    Node,
    Plan,
    Seq,
    Sum,
    plan,
)
from bsnas.arch.spec import ArchSpec

__all__ = ["Cost", "cost", "plan_cost", "node_cost"]


class Cost(NamedTuple):
    """FLOPs of one image and parameters, integers in the published convention."""

    flops: int
    params: int


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _conv(node: Conv) -> tuple[int, int]:
    kh, kw = (node.kernel_size, node.kernel_size) if isinstance(node.kernel_size, int) else node.kernel_size
    weights = node.out_channels * (node.in_channels // node.groups) * kh * kw
    bias = node.out_channels if node.bias else 0
    return _area(node.out_size) * (weights + bias), weights + bias


def _linear(node: Linear) -> tuple[int, int]:
    total = node.in_features * node.out_features + (node.out_features if node.bias else 0)
    return total, total


# (flops, params) of each kind of leaf
_LEAVES = {
    Conv: _conv,
    BatchNorm: lambda node: (2 * node.channels * _area(node.size), 2 * node.channels),
    Act: lambda node: (node.channels * _area(node.size) if node.kind == "relu" else 0, 0),
    MaxPool: lambda node: (node.channels * _area(node.in_size), 0),
    GlobalPool: lambda node: (node.channels * _area(node.size), 0),
    Linear: _linear,
    Flatten: lambda node: (0, 0),
    Identity: lambda node: (0, 0),
}


@functools.lru_cache(maxsize=1 << 15)
def _cost(node: Node) -> tuple[int, int]:
    """(flops, params) of a node: a leaf's own, a container's summed over its children (plans share their
    sub-nodes, so the cache spares most of the walk)."""
    kind = type(node)
    if kind is Seq:
        children = [child for _, child in node.children]
    elif kind is Sum or kind is Concat:
        children = [branch for _, branch in node.branches]
    elif kind is Gate:
        children = [node.body]
    else:
        return _LEAVES[kind](node)
    flops = params = 0
    for child in children:
        child_flops, child_params = _cost(child)
        flops += child_flops
        params += child_params
    return flops, params


def _total(nodes: list[Node]) -> Cost:
    flops = params = 0
    for node in nodes:
        node_flops, node_params = _cost(node)
        flops += node_flops
        params += node_params
    return Cost(flops, params)


def node_cost(node: Node) -> Cost:
    """Cost of one plan node: the sum over the leaves inside it."""
    return _total([node])


def plan_cost(network: Plan) -> Cost:
    """Cost of a whole plan."""
    return _total([network.input_bn, network.stem, *network.blocks, network.head, network.classifier])


def cost(spec: ArchSpec, input_size: tuple[int, int, int] | None = None) -> Cost:
    """(FLOPs, params) of `spec` for one image of `input_size` (C, H, W; default the spec's own input size)."""
    return plan_cost(plan(spec, input_size))
