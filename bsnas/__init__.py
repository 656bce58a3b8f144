"""bsnas: search efficient CNNs built from blueprint separable convolutions (BSConv).

`bsnas.train` is the training sub-package (its loop: `bsnas.train.train`).

The data flow, one sub-package per step: `arch` (architectures as data: specs, zoo, plan, cost; no torch) ->
`nn` (modules built from the plan, profiling, BatchNorm folding, BSConv converters) -> `train` (data in memory,
the training loop, run directories) -> `space` (search spaces decoded into specs) -> `search` (budgets, the
Optuna study, workers, the Pareto front) -> `report` (trials.csv, pareto.png, tables); `cli` is a thin shell.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it; imported on first use, so that `import bsnas.arch` (or `bsnas.space`) does not
# load torch through this package (PEP 562)
_EXPORTS = {
    "ArchSpec": "bsnas.arch.spec",
    "BsnasError": "bsnas.errors",
    "Budget": "bsnas.search.budget",
    "Cost": "bsnas.arch.cost",
    "DataConfig": "bsnas.train.data",
    "ReplaceResult": "bsnas.nn.replace",
    "SearchSpace": "bsnas.space.decode",
    "TrainConfig": "bsnas.train.config",
    "TrainResult": "bsnas.train.loop",
    "build_model": "bsnas.nn.build",
    "cost": "bsnas.arch.cost",
    "create_conv": "bsnas.nn.build",
    "create_model": "bsnas.nn.build",
    "get_spec": "bsnas.arch.zoo",
    "list_models": "bsnas.arch.zoo",
    "load_data": "bsnas.train.data",
    "load_model": "bsnas.train.rundir",
    "load_space": "bsnas.space.load",
    "load_spec": "bsnas.arch.files",
    "parse_budget": "bsnas.search.budget",
    "plan": "bsnas.arch.plan",
    "profile": "bsnas.nn.profile",
    "reg_loss": "bsnas.nn.layers",
    "replace": "bsnas.nn.replace",
    "save_spec": "bsnas.arch.files",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("arch", "nn", "space", "train", "search", "report", "deploy", "cli"):
        return importlib.import_module(f"bsnas.{name}")
    raise AttributeError(f"module 'bsnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
