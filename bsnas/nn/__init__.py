"""Modules from architectures: the layers (`layers`), one module per plan node (`build`), the hook profiler
(`profile`), BatchNorm folding (`fold`) and BSConv put into existing models (`replace`)."""

from __future__ import annotations

from bsnas.nn.build import Network, build_model, create_conv, create_model
from bsnas.nn.fold import fold_batchnorm
from bsnas.nn.layers import reg_loss
from bsnas.nn.profile import ProfileResult, count_flops, measure_latency
from bsnas.nn.replace import ReplaceResult

__all__ = ["Network", "ProfileResult", "ReplaceResult", "build_model", "count_flops", "create_conv", "create_model",
           "fold_batchnorm", "measure_latency", "reg_loss"]
