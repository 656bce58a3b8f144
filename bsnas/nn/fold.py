"""BatchNorm folded into the convolution before it, for fast evaluation."""

from __future__ import annotations

from torch import nn
from torch.fx.experimental.optimization import fuse as fuse_conv_bn
from torch.fx.proxy import TraceError

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` (put in eval mode) with every BatchNorm that follows a convolution folded into it.

    Same outputs up to float rounding, one memory pass fewer per folded BatchNorm (`benchmarks/bench_train.py
    evaluate`). A model torch.fx cannot trace (control flow on tensor values) is returned as it is.
    """
    model.eval()
    try:
        return fuse_conv_bn(model)
    except (TraceError, RuntimeError, TypeError):  # what symbolic tracing raises on untraceable Python
        return model
