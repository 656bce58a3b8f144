"""Timing the entries of a latency table, one at a time, as the whole network would run them.

PyTorch eager: each entry runs on its own in eval mode under `torch.inference_mode()`, as `measure_latency` runs
a network: a layer's modules (built from its plan leaves by `bsnas.nn.build`) called one after the other, a
`Combine` as the tensor operation its container does, a `Call` as the call of a container module beyond the call
of what it holds, a `Block` as the module of its plan node.

onnxruntime: the entries are exported together, many to one file (an export costs about a second however small
the model, `export_onnx_bytes`: BatchNorm folded, the deployment's opset and optimiser), cut apart again into one
graph per entry (`onnx.utils.Extractor`) and each run in a session of its own as a deployment runs a network
(`onnx_session`). A run's fixed cost (the call into onnxruntime), measured on a one-node graph, is taken off each
entry, since a network pays it once (the table's per-model overhead). Inputs and outputs stay bound to
preallocated buffers, so an entry's time holds no copy that a network does not make. A `Call`, and a layer that is
only an identity, are no node of the exported graph and take no time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from bsnas.arch.cost import node_cost
from bsnas.arch.plan import Identity
from bsnas.latency.entries import Block, Call, Combine, Entry, Layer, in_shape
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


def _params(entry: Entry) -> int:
    if isinstance(entry, Layer):
        return sum(node_cost(leaf).params for leaf in entry.leaves)
    return node_cost(entry.node).params if isinstance(entry, Block) else 0


def _bundles(timed: list[tuple[int, Entry]]) -> Iterator[list[tuple[int, Entry]]]:
    """(index, entry) pairs in groups of at most BUNDLE_ENTRIES entries and about BUNDLE_PARAMS parameters."""
    bundle, params = [], 0
    for index, entry in timed:
        size = _params(entry)
        if bundle and (len(bundle) == BUNDLE_ENTRIES or params + size > BUNDLE_PARAMS):
            yield bundle
            bundle, params = [], 0
        bundle.append((index, entry))
        params += size
    if bundle:
        yield bundle


class _Bundle(nn.Module):
    """Many entries side by side: each takes its own inputs and gives its own output."""

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
    measured at least CALL_REPEATS times: every entry's time is net of it)."""
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


def _onnx_times(entries: list[Entry], threads: int, warmup: int, repeats: int) -> list[float]:
    import onnx
    import onnx.utils

    from bsnas.deploy.onnx import export_onnx_bytes, require_onnx

    require_onnx()
    generator = torch.Generator().manual_seed(0)
    call = _call_cost_ms(threads, warmup, repeats)
    times = [0.0] * len(entries)
    for bundle in _bundles([(index, entry) for index, entry in enumerate(entries) if _takes_time_in_onnx(entry)]):
        inputs = [_inputs(entry, generator) for _, entry in bundle]
        names = [[f"x{i}_{j}" for j in range(len(given))] for i, given in enumerate(inputs)]
        model = _Bundle([_module(entry) for _, entry in bundle], [len(given) for given in inputs])
        data = export_onnx_bytes(model, tuple(x for given in inputs for x in given),
                                 [name for group in names for name in group], [f"y{i}" for i in range(len(bundle))])
        extractor = onnx.utils.Extractor(onnx.load_from_string(data))
        for i, ((index, _), given) in enumerate(zip(bundle, inputs, strict=True)):
            part = extractor.extract_model(names[i], [f"y{i}"]).SerializeToString()
            times[index] = max(0.0, median_ms(_bound_run(part, given, threads), warmup, repeats) - call) * 1000
    return times


def measure_entries(entries: list[Entry], backend: str = "torch", threads: int = 1, warmup: int = 5,
                    repeats: int = 25) -> list[float]:
    """Microseconds of each entry on this machine's CPU with `threads` threads: the median of `repeats` runs after
    `warmup`, in PyTorch eager or in onnxruntime (see the module docstring)."""
    with torch_threads(threads):
        if backend == "onnxruntime":
            return _onnx_times(entries, threads, warmup, repeats)
        return _torch_times(entries, warmup, repeats)
