"""Timing the entries of a latency table, one at a time, as the whole network would run them.

PyTorch eager: each entry runs on its own in eval mode under `torch.inference_mode()`, as `measure_latency` runs
a network: a layer's modules (built from its plan leaves by `bsnas.nn.build`) called one after the other, a
`Combine` as the tensor operation its container does, a `Call` as the call of a container module beyond the call
of what it holds, a `Block` as the module of its plan node.

onnxruntime: each entry is timed between the layers that feed and read it in a network, since onnxruntime
changes a graph as a whole: it converts convolutions to a blocked memory layout once per run of them (a lone
layer converts its input and output itself) and fuses the residual add and the activation after it into the
convolution before. So a depthwise 1x1 convolution is put on each input of the entry and on its output (the side
layers), and half the time of two side layers in a row on that shape is taken off per side: what is left is the
entry's time inside a network. (The network's input BatchNorm is folded into the side layer before it, and so
timed at about nothing; it is in every network, and the per-model overhead holds it.) Timed alone,
the layers of the zoo's deep BSConv-U ResNets summed to 1.6 to 1.7 times the network's time. The graphs are
exported together, many to one file (an export costs about a second however small the model,
`export_onnx_bytes`: BatchNorm folded, the deployment's opset and optimiser), cut apart again into one graph each
(`onnx.utils.Extractor`) and each run in a session of its own as a deployment runs a network (`onnx_session`). A
run's fixed cost (the call into onnxruntime), measured on a one-node graph, is taken off each graph's time, since a
network pays it once (the table's per-model overhead). Inputs and outputs stay bound to preallocated buffers, so a
graph's time holds no copy that a network does not make. A `Call`, and a layer that is only an identity, are no
node of the exported graph and take no time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from bsnas.arch.plan import Identity
from bsnas.latency.entries import Block, Call, Combine, Entry, Layer, Shape, in_shape
from bsnas.nn.build import build_node
from bsnas.nn.layers import Concat, Gate, Seq, Sum
from bsnas.nn.profile import median_ms, torch_threads

__all__ = ["BACKENDS", "measure_entries"]

BACKENDS = ("torch", "onnxruntime")
BUNDLE_PARAMS = 20_000_000  # parameters per exported file of onnxruntime entries (protobuf files stay < 2 GB)
BUNDLE_ENTRIES = 64
CALL_REPEATS = 200


def _input(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(1, *shape, generator=generator)


class _Combine(nn.Module):
    """What a container does where its branches meet, on given operands."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, *operands: torch.Tensor) -> torch.Tensor:
        if self.op == "cat":
            return torch.cat(operands, dim=1)
        out = operands[0]
        for operand in operands[1:]:
            out = out * operand if self.op == "mul" else out + operand
        return out


def _module(entry: Entry) -> nn.Module:
    """The module an entry times (not for a `Call`)."""
    if isinstance(entry, Layer):
        return nn.Sequential(*(build_node(leaf) for leaf in entry.leaves)).eval()
    if isinstance(entry, Block):
        return build_node(entry.node).eval()
    return _Combine(entry.op)


def _inputs(entry: Entry, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    if isinstance(entry, Combine):
        return tuple(_input(shape, generator) for shape in entry.shapes)
    first = entry.leaves[0] if isinstance(entry, Layer) else entry.node
    return (_input(in_shape(first), generator),)


def _torch_run(entry: Entry, generator: torch.Generator) -> Callable[[], object]:
    """A callable that does the entry's work once, as the built network does it."""
    inputs = _inputs(entry, generator)
    if isinstance(entry, Layer):
        modules = [build_node(leaf).eval() for leaf in entry.leaves]  # called in turn, as their container does

        def run():
            x = inputs[0]
            for module in modules:
                x = module(x)
            return x
        return run
    module = _module(entry)
    if isinstance(entry, Block):
        return lambda: module(inputs[0])
    return lambda: module.forward(*inputs)  # the operation itself: its container's call is a `Call`


def _call_ms(container: str, warmup: int, repeats: int) -> float:
    """A container's own call: the container of identities less their calls and its operation, on one number."""
    x = torch.zeros(1, 1, 1, 1)
    pair = {"a": nn.Identity(), "b": nn.Identity()}
    module, held = {"seq": (Seq(nn.Identity(), nn.Identity()), 2), "sum": (Sum(pair), 2),
                    "concat": (Concat(pair), 2), "gate": (Gate(nn.Identity()), 1)}[container]
    operation = {"seq": None, "sum": "add", "concat": "cat", "gate": "mul"}[container]
    identity = nn.Identity()
    own = median_ms(lambda: module(x), warmup, repeats) - held * median_ms(lambda: identity(x), warmup, repeats)
    if operation is not None:
        combine = _Combine(operation)
        own -= median_ms(lambda: combine.forward(x, x), warmup, repeats)
    return max(0.0, own)


@torch.inference_mode()
def _torch_times(entries: list[Entry], warmup: int, repeats: int) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    return [(_call_ms(entry.container, warmup, repeats) if isinstance(entry, Call)
             else median_ms(_torch_run(entry, generator), warmup, repeats)) * 1000 for entry in entries]


class _Graph(NamedTuple):
    """What one onnxruntime session times: a module, its inputs, and the shapes of the side layers put around it."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    sides: tuple[Shape, ...] = ()


def _side(shape: Shape) -> nn.Module | None:
    """The layer put on each side of an entry: a depthwise 1x1 convolution on a C x H x W tensor, none on a vector."""
    return nn.Conv2d(shape[0], shape[0], 1, groups=shape[0]) if len(shape) == 3 else None


class _InContext(nn.Module):
    """An entry between a side layer on each input and one on its output (identities where there are none)."""

    def __init__(self, entry: nn.Module, before: list[nn.Module | None], after: nn.Module | None):
        super().__init__()
        self.entry = entry
        self.before = nn.ModuleList(nn.Identity() if layer is None else layer for layer in before)
        self.after = nn.Identity() if after is None else after

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.after(self.entry(*(layer(x) for layer, x in zip(self.before, inputs, strict=True))))


def _in_context(entry: Entry, generator: torch.Generator) -> _Graph:
    """The entry fed by a side layer on each input and read by one on its output."""
    module, inputs = _module(entry), _inputs(entry, generator)
    with torch.no_grad():
        out = tuple(module(*inputs).shape[1:])
    shapes = [*(tuple(x.shape[1:]) for x in inputs), out]
    layers = [_side(shape) for shape in shapes]
    sides = tuple(shape for shape, layer in zip(shapes, layers, strict=True) if layer is not None)
    return _Graph(_InContext(module, layers[:-1], layers[-1]), inputs, sides)


def _pair(shape: Shape, generator: torch.Generator) -> _Graph:
    """Two side layers on `shape`, one after the other: twice what a side of that shape adds to an entry."""
    return _Graph(nn.Sequential(_side(shape), _side(shape)), (_input(shape, generator),))


def _bundles(graphs: list[_Graph]) -> Iterator[list[_Graph]]:
    """Graphs in groups of at most BUNDLE_ENTRIES and about BUNDLE_PARAMS parameters."""
    bundle, params = [], 0
    for graph in graphs:
        size = sum(p.numel() for p in graph.module.parameters())
        if bundle and (len(bundle) == BUNDLE_ENTRIES or params + size > BUNDLE_PARAMS):
            yield bundle
            bundle, params = [], 0
        bundle.append(graph)
        params += size
    if bundle:
        yield bundle


class _Bundle(nn.Module):
    """Many graphs side by side: each takes its own inputs and gives its own output."""

    def __init__(self, parts: list[nn.Module], arity: list[int]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.arity = arity

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, start = [], 0
        for part, count in zip(self.parts, self.arity, strict=True):
            outputs.append(part(*inputs[start:start + count]))
            start += count
        return tuple(outputs)


def _takes_time_in_onnx(entry: Entry) -> bool:
    return not isinstance(entry, Call) and not (isinstance(entry, Layer)
                                                and all(isinstance(leaf, Identity) for leaf in entry.leaves))


def _bound_run(data: bytes, inputs: tuple[torch.Tensor, ...], threads: int) -> Callable[[], object]:
    """One onnxruntime run of a serialized graph with its inputs and outputs bound to preallocated buffers."""
    import numpy
    import onnxruntime

    from bsnas.deploy.onnx import onnx_session

    session = onnx_session(data, threads)
    binding = session.io_binding()
    for meta, value in zip(session.get_inputs(), inputs, strict=True):
        binding.bind_ortvalue_input(meta.name, onnxruntime.OrtValue.ortvalue_from_numpy(value.numpy()))
    for meta in session.get_outputs():
        buffer = onnxruntime.OrtValue.ortvalue_from_shape_and_type([int(d) for d in meta.shape], numpy.float32)
        binding.bind_ortvalue_output(meta.name, buffer)
    return lambda: session.run_with_iobinding(binding)


def _call_cost_ms(threads: int, warmup: int, repeats: int) -> float:
    """The fixed cost of one onnxruntime run: a graph of one identity node on one number (a few microseconds, so
    measured at least CALL_REPEATS times: every graph's time is net of it)."""
    import onnx
    from onnx import TensorProto, helper

    from bsnas.deploy.onnx import OPSET

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return median_ms(_bound_run(model.SerializeToString(), (torch.zeros(1, 1),), threads), warmup,
                     max(repeats, CALL_REPEATS))


def _graph_times(graphs: list[_Graph], threads: int, warmup: int, repeats: int) -> list[float]:
    """Microseconds of one onnxruntime run of each graph, less the fixed cost of a run: exported many to a file
    and cut apart again (`onnx.utils.Extractor`), each timed in a session of its own."""
    import onnx
    import onnx.utils

    from bsnas.deploy.onnx import export_onnx_bytes

    call = _call_cost_ms(threads, warmup, repeats)
    times = []
    for bundle in _bundles(graphs):
        names = [[f"x{i}_{j}" for j in range(len(graph.inputs))] for i, graph in enumerate(bundle)]
        model = _Bundle([graph.module for graph in bundle], [len(graph.inputs) for graph in bundle])
        data = export_onnx_bytes(model, tuple(x for graph in bundle for x in graph.inputs),
                                 [name for group in names for name in group], [f"y{i}" for i in range(len(bundle))])
        extractor = onnx.utils.Extractor(onnx.load_from_string(data))
        for i, graph in enumerate(bundle):
            part = extractor.extract_model(names[i], [f"y{i}"]).SerializeToString()
            times.append((median_ms(_bound_run(part, graph.inputs, threads), warmup, repeats) - call) * 1000)
    return times


def _onnx_times(entries: list[Entry], threads: int, warmup: int, repeats: int) -> list[float]:
    from bsnas.deploy.onnx import require_onnx

    require_onnx()
    generator = torch.Generator().manual_seed(0)
    timed = [index for index, entry in enumerate(entries) if _takes_time_in_onnx(entry)]
    graphs = [_in_context(entries[index], generator) for index in timed]
    shapes = sorted({shape for graph in graphs for shape in graph.sides})
    measured = _graph_times([*graphs, *(_pair(shape, generator) for shape in shapes)], threads, warmup, repeats)
    side = {shape: pair / 2 for shape, pair in zip(shapes, measured[len(graphs):], strict=True)}
    times = [0.0] * len(entries)
    for index, graph, us in zip(timed, graphs, measured[:len(graphs)], strict=True):
        times[index] = max(0.0, us - sum(side[shape] for shape in graph.sides))
    return times


def measure_entries(entries: list[Entry], backend: str = "torch", threads: int = 1, warmup: int = 5,
                    repeats: int = 25) -> list[float]:
    """Microseconds of each entry on this machine's CPU with `threads` threads: the median of `repeats` runs after
    `warmup`, in PyTorch eager or in onnxruntime (see the module docstring)."""
    with torch_threads(threads):
        if backend == "onnxruntime":
            return _onnx_times(entries, threads, warmup, repeats)
        return _torch_times(entries, warmup, repeats)
