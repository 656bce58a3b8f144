"""bsnas: search efficient CNNs built from blueprint separable convolutions (BSConv).

`bsnas.train` is the training sub-package (its loop: `bsnas.train.train`).

The data flow, one sub-package per step: `arch` (architectures as data: specs, zoo, plan, cost; no torch) ->
`nn` (modules built from the plan, profiling, BatchNorm folding, BSConv converters) -> `train` (data in memory,
the training loop, run directories) -> `space` (search spaces decoded into specs) -> `search` (budgets, the
Optuna study, workers, the Pareto front) -> `report` (trials.csv, pareto.png, tables); `cli` is a thin shell.
"""

from __future__ import annotations

from bsnas.environment import check_environment

check_environment()  # before anything imports torch

from bsnas.arch.cost import Cost, cost
from bsnas.arch.files import load_spec, save_spec
from bsnas.arch.plan import plan
from bsnas.arch.spec import ArchSpec
from bsnas.arch.zoo import get_spec, list_models
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model, create_conv, create_model
from bsnas.nn.layers import reg_loss
from bsnas.nn.profile import profile
from bsnas.nn.replace import ReplaceResult, replace
from bsnas.search.budget import Budget, parse_budget
from bsnas.space.decode import SearchSpace
from bsnas.space.load import load_space
from bsnas.train.config import TrainConfig
from bsnas.train.data import DataConfig, load_data
from bsnas.train.loop import TrainResult
from bsnas.train.rundir import load_model

__all__ = [
    "ArchSpec",
    "BsnasError",
    "Budget",
    "Cost",
    "DataConfig",
    "ReplaceResult",
    "SearchSpace",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "cost",
    "create_conv",
    "create_model",
    "get_spec",
    "list_models",
    "load_data",
    "load_model",
    "load_space",
    "load_spec",
    "parse_budget",
    "plan",
    "profile",
    "reg_loss",
    "replace",
    "save_spec",
]
__version__ = "0.1.0"
