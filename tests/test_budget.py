"""Budget parsing and the analytic cost of a spec (checked against the built model)."""

from __future__ import annotations

import random

import pytest
import torch

from bsnas.budget import Budget, check_budgets, format_cost, parse_budget, spec_cost
from bsnas.build import build_model
from bsnas.errors import BsnasError
from bsnas.profile import count_flops
from bsnas.space import load_space
from bsnas.zoo import get_spec


@pytest.mark.parametrize(("text", "kind", "limit"), [
    ("100MFLOPs", "flops", 100e6),
    ("100 MFLOPs", "flops", 100e6),
    ("2.5GFLOPS", "flops", 2.5e9),
    ("300kflops", "flops", 300e3),
    ("1.5Mparams", "params", 1.5e6),
    ("800kparams", "params", 800e3),
    ("1e6params", "params", 1e6),
    ("4ms", "latency", 4.0),
    ("500us", "latency", 0.5),
])
def test_parse_budget_units(text, kind, limit):
    budget = parse_budget(text)
    assert budget.kind == kind
    assert budget.limit == pytest.approx(limit)


@pytest.mark.parametrize("text", ["100", "100MB", "100mFLOPs", "MFLOPs", "-5ms", "0MFLOPs", "4Gms", "1.5 M params",
                                  "100MFLOPs extra", ""])
def test_malformed_budget_is_one_clear_error(text):
    with pytest.raises(BsnasError) as error:
        parse_budget(text)
    message = str(error.value)
    assert repr(text) in message and "\n" not in message


def test_one_budget_per_kind():
    assert check_budgets([parse_budget("1MFLOPs"), parse_budget("2ms")])
    with pytest.raises(BsnasError, match="twice"):
        check_budgets([parse_budget("1MFLOPs"), parse_budget("2MFLOPs")])


def test_violation_sign_and_format():
    budget = Budget("flops", 100e6)
    assert budget.violation(50e6) < 0 < budget.violation(120e6)
    assert budget.violation(100e6) == 0
    assert format_cost("flops", 95.3e6) == "95.3 MFLOPs"
    assert format_cost("params", 1.52e6) == "1.52 Mparams"
    assert format_cost("latency", 0.25) == "250 us"


def _measured(spec, input_size):
    with torch.device("meta"):
        model = build_model(spec)
    model = model.to_empty(device="cpu")
    return count_flops(model, input_size), sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["cifar_mobilenetv1_w1d4_bsconvu_pfd", "cifar_mobilenetv2_w1d4_bsconvs_p1d6_pfd",
                                  "cifar_mobilenetv3_small_w7d20_pfd", "cifar_mobilenetv3_large_w7d20_bsconvs_p1d6",
                                  "cifar_resnet20_bsconvs_p1d4", "cifar_resnet20_bsconvu", "cifar_wrn16_1_bsconvu",
                                  "resnet10", "cifar_mobilenetv1_w1d4"])
def test_spec_cost_equals_counted_model(name):
    spec = get_spec(name)
    size = (3, 32, 32) if name.startswith("cifar_") else (3, 64, 64)
    assert spec_cost(spec, size) == _measured(spec, size)


@pytest.mark.parametrize("space_file", ["search_spaces/mobilenet.yaml", "search_spaces/resnet.yaml"])
def test_spec_cost_equals_counted_model_on_random_points(space_file):
    space = load_space(space_file).for_data(1, 10)
    rng = random.Random(7)
    for _ in range(4):
        spec, _ = space.random_spec(rng)
        assert spec_cost(spec, (1, 20, 20)) == _measured(spec, (1, 20, 20))
