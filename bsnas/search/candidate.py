"""A sampled architecture and its costs: counted from the plan (microseconds), shrunk into the budgets when the
space allows, latency measured only when a budget or the objective asks for it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bsnas.arch.cost import cost
from bsnas.arch.plan import PlanError
from bsnas.arch.spec import ArchSpec
from bsnas.deploy.onnx import measure_onnx_latency, onnx_bytes
from bsnas.latency.table import load_table
from bsnas.nn.build import build_model
from bsnas.nn.profile import measure_latency
from bsnas.search.budget import Budget, format_cost
from bsnas.space.decode import SearchSpace

if TYPE_CHECKING:
    from bsnas.search.config import SearchConfig

__all__ = ["Candidate", "latency_function", "latency_runner", "measure_candidate", "measure_latency_ms", "over_budget"]


@dataclass
class Candidate:
    """A sampled architecture with its costs; `reason` says why it is infeasible (empty when feasible)."""

    spec: ArchSpec
    flops: int
    params: int
    latency_ms: float | None = None
    width_multiplier: Any = None  # the width it was shrunk to, None when not shrunk
    reason: str = ""

    def cost(self, kind: str) -> float | None:
        return {"flops": self.flops, "params": self.params, "latency": self.latency_ms}[kind]

    @property
    def feasible(self) -> bool:
        return not self.reason


def over_budget(candidate_costs: dict[str, float | None], budgets: tuple[Budget, ...]) -> str:
    reasons = [f"{b.kind} {format_cost(b.kind, candidate_costs[b.kind])} > {b}" for b in budgets
               if candidate_costs.get(b.kind) is not None and candidate_costs[b.kind] > b.limit]
    return "; ".join(reasons)


def latency_runner(spec: ArchSpec, device: str = "cpu", backend: str = "torch") -> Callable[[], float]:
    """The spec built (and exported, for onnxruntime) once: each call measures the median forward time of one
    image (batch 1, eval mode) in milliseconds, with this process's torch threads, in PyTorch on `device` or in
    onnxruntime on the CPU (the exported file as a deployment runs it)."""
    model = build_model(spec)
    threads = torch.get_num_threads()
    if backend == "onnxruntime":
        data = onnx_bytes(model, spec.input_size)
        return lambda: measure_onnx_latency(data, spec.input_size, 1, threads, warmup=3, repeats=15).median_ms
    device = device if device != "auto" else "cpu"
    return lambda: measure_latency(model, spec.input_size, 1, device, threads=threads, warmup=3, repeats=15).median_ms


def measure_latency_ms(spec: ArchSpec, device: str = "cpu", backend: str = "torch") -> float:
    """The latency of a spec measured once, as `latency_runner` measures it (what a search measures)."""
    return latency_runner(spec, device, backend)()


def latency_function(config: SearchConfig, space: SearchSpace) -> Callable[[ArchSpec], float] | None:
    """How a search costs a candidate's latency in milliseconds (None when nothing asks for it): predicted from
    `config.latency_table` (which must cover `space` within the budgets and hold this process's torch threads),
    else measured (`measure_latency_ms`)."""
    if not config.measures_latency:
        return None
    if config.latency_table is None:
        return functools.partial(measure_latency_ms, device=config.device, backend=config.latency_backend)
    table = load_table(config.latency_table)
    table.check_key(config.latency_backend, torch.get_num_threads())
    table.check_covers(space, config.budgets)
    return table.predict_ms


def measure_candidate(space: SearchSpace, spec: ArchSpec, params: dict[str, Any], budgets: tuple[Budget, ...],
                      latency: Callable[[ArchSpec], float] | None = None, fit: bool = True) -> Candidate:
    """Cost the spec (at its input size); shrink its width into the FLOPs/parameter budgets when `fit` and the
    space allows it; measure `latency(spec)` (milliseconds) of a candidate within them when given. A spec whose
    feature map runs out at this input size is infeasible with that reason."""
    try:
        flops, n_params = cost(spec)
    except PlanError as error:
        return Candidate(spec, 0, 0, reason=f"not a network at {spec.image_size}x{spec.image_size}: {error}")
    static = tuple(b for b in budgets if b.kind != "latency")
    candidate = Candidate(spec, flops, n_params)
    if over_budget({"flops": flops, "params": n_params}, static) and fit:
        widths = space.model["width_multiplier"]
        sampled = params.get("width_multiplier", widths.values[0] if widths.values else None)
        if widths.values is not None and len(widths.values) > 1:
            smaller = sorted((w for w in widths.values if w < sampled), reverse=True)
            for width in smaller:
                shrunk = space.spec_from_params(params, width_multiplier=width)
                flops, n_params = cost(shrunk)
                if not over_budget({"flops": flops, "params": n_params}, static):
                    candidate = Candidate(shrunk, flops, n_params, width_multiplier=width)
                    break
    candidate.reason = over_budget({"flops": candidate.flops, "params": candidate.params}, static)
    if not candidate.reason and latency is not None:
        candidate.latency_ms = latency(candidate.spec)
        candidate.reason = over_budget({"latency": candidate.latency_ms}, budgets)
    return candidate


