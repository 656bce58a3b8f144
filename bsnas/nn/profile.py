"""Parameters, FLOPs (the convention of the BSConv tables) and measured latency of a model.

FLOPs convention: convolution and linear multiply-adds (+1 per output for a bias), BatchNorm 2 per
element, ReLU 1 per element, pooling 1 per input element; hard-swish, hard-sigmoid, ReLU6, the SE
multiply and residual adds count 0. ptflops' MAC count is reported beside it as a cross-check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LayerProfile", "LatencyResult", "ProfileResult", "count_flops", "measure_latency", "median_ms", "profile",
           "torch_threads"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class LayerProfile:
    """One leaf module: its dotted name, type, output shape (C, H, W), parameters and FLOPs."""

    name: str
    type: str
    out_shape: tuple[int, ...]
    params: int
    flops: int


@dataclass
class LatencyResult:
    """Median milliseconds per forward pass (one batch), after warm-up."""

    batch_size: int
    median_ms: float
    repeats: int
    device: str
    threads: int | None = None  # CPU only
    backend: str = "torch"  # or onnxruntime (bsnas.deploy.onnx)


@dataclass
class ProfileResult:
    """`params` and `flops` are integers in the published convention; `ptflops_macs` cross-checks."""

    params: int
    flops: int
    input_size: tuple[int, int, int]
    ptflops_macs: int | None = None
    latency: list[LatencyResult] = field(default_factory=list)
    layers: list[LayerProfile] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def _module_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """FLOPs of one leaf module for the batch it saw (the caller uses batch 1)."""
    if isinstance(module, nn.Conv2d):
        flops = output[:, 0].numel() * module.weight.numel()
        return flops + (output.numel() if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        flops = inputs[0].numel() * module.out_features
        return flops + (output.numel() if module.bias is not None else 0)
    if isinstance(module, nn.BatchNorm2d):
        return inputs[0].numel() * (2 if module.affine else 1)
    if isinstance(module, nn.ReLU):
        return output.numel()
    if isinstance(module, _POOLS):
        return inputs[0].numel()
    return 0


def _leaf_profiles(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerProfile]:
    """Run one forward pass of batch 1 with hooks on every leaf module."""
    profiles: list[LayerProfile] = []
    handles = []

    def hook(name: str):
        def record(module, inputs, output):
            params = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
            profiles.append(LayerProfile(name, type(module).__name__, tuple(output.shape[1:]), params,
                                         _module_flops(module, inputs, output)))
        return record

    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return profiles


def count_flops(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """FLOPs of one image in the published convention."""
    return sum(layer.flops for layer in _leaf_profiles(model, input_size))


def _ptflops_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int | None:
    from ptflops import get_model_complexity_info
    from ptflops.pytorch_ops import conv_flops_counter_hook

    from bsnas.nn.layers import OrthonormalConv1x1

    was_training = model.training
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            macs, _ = get_model_complexity_info(
                model, tuple(input_size), as_strings=False, print_per_layer_stat=False, verbose=False,
                custom_modules_hooks={OrthonormalConv1x1: conv_flops_counter_hook})
    finally:
        model.train(was_training)  # ptflops leaves the model in eval mode
    return None if macs is None else int(macs)


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads set to `threads` inside, as they were after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def median_ms(run: Callable[[], object], warmup: int = 5, repeats: int = 20) -> float:
    """Median wall-clock milliseconds of one `run()` over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_latency(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32), batch_size: int = 1,
                    device: str | torch.device = "cpu", threads: int = 1, warmup: int = 5,
                    repeats: int = 20, channels_last: bool = False) -> LatencyResult:
    """Median forward time of one batch in eval mode after `warmup` runs.

    On CPU wall-clock with `threads` intra-op threads (default 1: stable on a shared machine, where
    several threads contend with other processes); on CUDA timed with CUDA events.
    """
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    x = torch.randn(batch_size, *input_size, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    try:
        with torch_threads(threads), torch.inference_mode():
            if device.type == "cuda":
                for _ in range(warmup):
                    model(x)
                times = []
                for _ in range(repeats):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    model(x)
                    end.record()
                    torch.cuda.synchronize(device)
                    times.append(start.elapsed_time(end))
                median = statistics.median(times)
            else:
                median = median_ms(lambda: model(x), warmup, repeats)
    finally:
        model.train(was_training)
    return LatencyResult(batch_size, median, repeats, str(device),
                         threads if device.type == "cpu" else None)


def profile(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32), *, latency: bool = False,
            batch_sizes: tuple[int, ...] = (1, 32), device: str = "cpu", threads: int = 1,
            layers: bool = False, ptflops: bool = True, repeats: int = 20) -> ProfileResult:
    """Parameters and FLOPs of `model` for one image of `input_size` (C, H, W); latency on request."""
    input_size = tuple(int(v) for v in input_size)
    leaves = _leaf_profiles(model, input_size)
    result = ProfileResult(
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=sum(layer.flops for layer in leaves),
        input_size=input_size,
        ptflops_macs=_ptflops_macs(model, input_size) if ptflops else None,
        layers=leaves if layers else [],
    )
    if latency:
        result.latency = [measure_latency(model, input_size, b, device, threads, repeats=repeats)
                          for b in batch_sizes]
    return result
