"""Every valid combination of block type, operator, stride and padding-free builds and runs."""

from __future__ import annotations

import itertools

import pytest
import torch

from bsnas.arch.spec import BLOCK_TYPES, OPS, ArchSpec, BlockSpec, HeadSpec, StemSpec
from bsnas.nn.build import build_model
from bsnas.nn.layers import has_reg_loss

COMBINATIONS = [combo for combo in itertools.product(BLOCK_TYPES, OPS, (3, 5), (1, 2), (False, True))
                if not (combo[4] and combo[3] == 1)]  # padding-free needs stride 2


def _spec(block_type: str, op: str, kernel_size: int, stride: int, padding_free: bool) -> ArchSpec:
    block = BlockSpec(type=block_type, op=op, out_channels=12, kernel_size=kernel_size, stride=stride,
                      mid_channels=24 if block_type == "inverted" else None, se=block_type == "inverted",
                      p=0.5 if op == "bsconv_s" and block_type != "inverted" else None, inner_bn=True,
                      padding_free=padding_free)
    return ArchSpec(name="combo", stem=StemSpec(out_channels=8, padding_free=padding_free), in_channels=1,
                    blocks=(block, BlockSpec(type=block_type, op=op, out_channels=12, kernel_size=3,
                                             mid_channels=block.mid_channels, p=block.p)),
                    head=HeadSpec(conv_channels=16, se=True, act="hswish"), num_classes=5)


@pytest.mark.parametrize("block_type,op,kernel_size,stride,padding_free", COMBINATIONS)
def test_block_combination_builds_runs_and_backpropagates(block_type, op, kernel_size, stride, padding_free):
    model = build_model(_spec(block_type, op, kernel_size, stride, padding_free))
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 5)
    features = model.blocks(model.stem(model.input_bn(x)))
    expected = {(1, False): 28, (2, False): 14, (2, True): 13}[(stride, padding_free)]
    assert features.shape[-1] == expected
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert has_reg_loss(model) == (op == "bsconv_s")
