"""The FLOP convention of the published tables, checked on a model small enough to count by hand."""

from __future__ import annotations

import torch
from torch import nn

from bsnas.arch.plan import plan_squeeze_excite
from bsnas.nn.build import build_node
from bsnas.nn.profile import count_flops, measure_latency, profile


def test_flops_convention_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=True),  # 8*8*4 outputs * 27 MACs + 256 bias
        nn.BatchNorm2d(4),  # 2 per element: 2 * 256
        nn.ReLU(),  # 1 per element: 256
        nn.Hardswish(),  # 0
        nn.ReLU6(),  # 0
        nn.MaxPool2d(2),  # 1 per input element: 256
        nn.AdaptiveAvgPool2d(1),  # 4 * 4 * 4 = 64 input elements
        nn.Flatten(),
        nn.Linear(4, 10),  # 40 MACs + 10 bias
    )
    expected = 256 * 27 + 256 + 2 * 256 + 256 + 256 + 64 + 40 + 10
    assert count_flops(model, (3, 8, 8)) == expected


def test_squeeze_excite_multiply_counts_zero():
    # pool 8*4*4, reduce 8*2+2, relu 2, expand 2*8+8, hard-sigmoid 0, multiply 0
    se = build_node(plan_squeeze_excite(8, None))
    assert count_flops(se, (8, 4, 4)) == 128 + 18 + 2 + 24


def test_profile_restores_training_mode_and_reports_ptflops():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    model.train()
    result = profile(model, (3, 16, 16), layers=True)
    assert model.training
    assert result.params == 3 * 8 * 9 + 8 + 16
    assert [layer.type for layer in result.layers] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert result.ptflops_macs >= 14 * 14 * 8 * 27


def test_latency_is_a_positive_median_per_batch_size():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    result = profile(model, (3, 16, 16), latency=True, batch_sizes=(1, 4), repeats=3, ptflops=False)
    assert [r.batch_size for r in result.latency] == [1, 4]
    assert all(r.median_ms > 0 and r.threads == 1 and r.device == "cpu" for r in result.latency)
    before = torch.get_num_threads()
    measure_latency(model, (3, 16, 16), threads=1, repeats=2)
    assert torch.get_num_threads() == before
