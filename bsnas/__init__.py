"""bsnas: search efficient CNNs built from blueprint separable convolutions (BSConv)."""

from __future__ import annotations

from bsnas.budget import Budget, parse_budget
from bsnas.build import build_model
from bsnas.checkpoint import load_model
from bsnas.data import DataConfig, load_data
from bsnas.errors import BsnasError
from bsnas.layers import create_conv, reg_loss
from bsnas.profile import profile
from bsnas.replace import ReplaceResult, replace
from bsnas.space import SearchSpace, load_space
from bsnas.spec import ArchSpec, load_spec, save_spec
from bsnas.train import TrainConfig, TrainResult, train
from bsnas.zoo import create_model, get_spec, list_models

__all__ = [
    "ArchSpec",
    "BsnasError",
    "Budget",
    "DataConfig",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "create_conv",
    "create_model",
    "get_spec",
    "list_models",
    "load_data",
    "load_model",
    "load_space",
    "load_spec",
    "parse_budget",
    "profile",
    "ReplaceResult",
    "SearchSpace",
    "replace",
    "reg_loss",
    "save_spec",
    "train",
]
__version__ = "0.1.0"
