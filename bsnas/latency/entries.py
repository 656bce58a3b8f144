"""What a latency table holds: the entries a network's latency is summed over, read off its plan (no torch).

`network_entries(plan)` walks the plan once, in the order the built model runs it, and returns the entries whose
measured times add up to the network's; the same walk over every point of a space (`space_entries`) says what a
table must measure. Two granularities:

- `layer` (the default): a run of consecutive leaves is cut into layers, each a convolution with the BatchNorm
  and activation that follow it (what BatchNorm folding and onnxruntime's Conv+activation fusion make one
  kernel) or a single other leaf; every place where branches meet is a `Combine` (the residual add, the
  squeeze-excitation multiply, the concatenation), and every container module a `Call` (the Python of
  `nn.Sequential` and its kin in PyTorch; nothing in onnxruntime). A space yields tens of thousands of layers.
- `block`: one entry per top-level node (input BatchNorm, stem, each block, head, classifier), measured whole.
  Exact inside a block, but a MobileNet space yields about a million distinct blocks.

Entries are hashable NamedTuples; `entry_key` is their canonical JSON text, the key of a table file.
"""

from __future__ import annotations

import functools
import json
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
)
from bsnas.errors import BsnasError

__all__ = ["GRANULARITIES", "Shape", "Layer", "Combine", "Call", "Block", "Entry", "network_entries",
           "node_entries", "entry_key", "describe_entry", "in_shape"]

GRANULARITIES = ("layer", "block")
Shape = tuple[int, ...]  # (C, H, W) of one image, or (features,) after the flatten
_LEAVES = (Conv, BatchNorm, Act, MaxPool, GlobalPool, Flatten, Linear, Identity)


class Layer(NamedTuple):
    """Consecutive leaves measured together: a convolution with its BatchNorm and activation, or one leaf."""

    leaves: tuple[Node, ...]
    entry: str = "layer"


class Combine(NamedTuple):
    """Where branches meet: `add` (residual, max-pool branch), `mul` (squeeze-excitation gate) or `cat`; `shapes`
    are the operands'."""

    op: str
    shapes: tuple[Shape, ...]
    entry: str = "combine"


class Call(NamedTuple):
    """The call of one container module beyond what it holds and combines (its Python, in PyTorch eager): `seq`,
    `sum`, `concat` or `gate`."""

    container: str
    entry: str = "call"


class Block(NamedTuple):
    """A whole top-level plan node (block granularity)."""

    node: Node
    entry: str = "block"


Entry = Layer | Combine | Call | Block
_CALLS = {Seq: Call("seq"), Sum: Call("sum"), Concat: Call("concat"), Gate: Call("gate")}


def _leaf_out(leaf: Node, shape: Shape) -> Shape:
    kind = type(leaf)
    if kind is Conv:
        return (leaf.out_channels, *leaf.out_size)
    if kind is MaxPool:
        return (leaf.channels, *leaf.out_size)
    if kind is GlobalPool:
        return leaf.channels, 1, 1
    if kind is Flatten:
        return (leaf.features,)
    if kind is Linear:
        return (leaf.out_features,)
    return shape  # BatchNorm, activation, identity


def in_shape(node: Node) -> Shape:
    """The input shape of a plan node: its first leaf's (an identity's size is not in the plan and does not
    matter: 1 x 1)."""
    while type(node) not in _LEAVES:
        node = node.body if type(node) is Gate else (node.children if type(node) is Seq else node.branches)[0][1]
    kind = type(node)
    if kind is Conv:
        return (node.in_channels, *node.in_size)
    if kind is MaxPool:
        return (node.channels, *node.in_size)
    if kind in (BatchNorm, Act, GlobalPool):
        return (node.channels, *node.size)
    if kind is Flatten:
        return node.features, 1, 1
    if kind is Linear:
        return (node.in_features,)
    return node.channels, 1, 1


def _layers(run: list[Node], out: list[Entry]) -> None:
    """Cut a run of consecutive leaves into layers (conv [+ BatchNorm] [+ activation], or one leaf); empties it."""
    i = 0
    while i < len(run):
        j = i + 1
        if type(run[i]) is Conv:
            if j < len(run) and type(run[j]) is BatchNorm:
                j += 1
            if j < len(run) and type(run[j]) is Act:
                j += 1
        out.append(Layer(tuple(run[i:j])))
        i = j
    run.clear()


def _walk(node: Node, shape: Shape, out: list[Entry], run: list[Node]) -> Shape:
    """Append the entries of `node` fed `shape` to `out` (leaves collect in `run` until a branch point); returns
    the output shape."""
    kind = type(node)
    if kind in _LEAVES:
        run.append(node)
        return _leaf_out(node, shape)
    out.append(_CALLS[kind])
    if kind is Seq:
        for _, child in node.children:
            shape = _walk(child, shape, out, run)
        return shape
    _layers(run, out)
    if kind is Gate:
        gate = _branch(node.body, shape, out)
        out.append(Combine("mul", (shape, gate)))
        return shape
    shapes = tuple(_branch(branch, shape, out) for _, branch in node.branches)
    out.append(Combine("add" if kind is Sum else "cat", shapes))
    return shapes[0] if kind is Sum else (sum(s[0] for s in shapes), *shapes[0][1:])


def _branch(node: Node, shape: Shape, out: list[Entry]) -> Shape:
    run: list[Node] = []
    shape = _walk(node, shape, out, run)
    _layers(run, out)
    return shape


@functools.lru_cache(maxsize=1 << 16)
def node_entries(node: Node, granularity: str = "layer") -> tuple[Entry, ...]:
    """The entries of one top-level plan node (input BatchNorm, stem, a block, head, classifier)."""
    if granularity == "block":
        return (Block(node),)
    out: list[Entry] = []
    _branch(node, in_shape(node), out)
    return tuple(out)


def network_entries(network: Plan, granularity: str = "layer") -> list[Entry]:
    """The entries whose times add up to the network's latency (with the table's per-model overhead)."""
    if granularity not in GRANULARITIES:
        raise BsnasError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}.")
    return [entry for node in (network.input_bn, network.stem, *network.blocks, network.head, network.classifier)
            for entry in node_entries(node, granularity)]


def _plain(value):
    """Nested tuples to lists, for JSON."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=1 << 16)
def entry_key(entry: Entry) -> str:
    """The canonical JSON text of an entry: the key of its time in a table file."""
    return json.dumps(_plain(entry), separators=(",", ":"))


def describe_entry(entry: Entry) -> str:
    """An entry in words, for messages: `conv 16->32 k3 s2 at 28x28 + batchnorm + relu`."""
    if isinstance(entry, Combine):
        return f"{entry.op} of {' and '.join('x'.join(map(str, shape)) for shape in entry.shapes)}"
    if isinstance(entry, Call):
        return f"the call of a {entry.container} container"
    if isinstance(entry, Block):
        return f"{getattr(entry.node, 'role', '') or entry.node.node} fed {'x'.join(map(str, in_shape(entry.node)))}"
    parts = []
    for leaf in entry.leaves:
        if isinstance(leaf, Conv):
            groups = f" groups {leaf.groups}" if leaf.groups > 1 else ""
            parts.append(f"conv {leaf.in_channels}->{leaf.out_channels} k{leaf.kernel_size} s{leaf.stride}{groups} "
                         f"at {'x'.join(map(str, leaf.in_size))}")
        else:
            parts.append(leaf.kind if isinstance(leaf, Act) else leaf.node)
    return " + ".join(parts)
