"""Budget parsing, and `bsnas.cost` (the plan's sum) against the hook count of the built model."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsnas.arch.cost import cost
from bsnas.arch.spec import BLOCK_TYPES, OPS, ArchSpec, BlockSpec, HeadSpec, StemSpec
from bsnas.arch.zoo import get_spec, list_models
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model
from bsnas.nn.profile import count_flops
from bsnas.search.budget import Budget, check_budgets, format_cost, parse_budget
from bsnas.space import SHIPPED_SPACES, load_space
from bsnas.space.load import shipped_space_path


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


@pytest.mark.parametrize(("text", "message"), [
    ("100mflops", "--budget '100mflops': prefixes are case-sensitive and FLOPs take k, M or G (m is not one); write "
                  "100MFLOPs."),
    ("1.5mparams", "--budget '1.5mparams': prefixes are case-sensitive and params take k, M or G (m is not one); write "
                   "1.5Mparams."),
    ("100M", "--budget '100M' has no unit: write 100MFLOPs, 100Mparams or a latency such as 4ms."),
    ("20", "--budget '20' has no unit: write 20FLOPs, 20params or a latency such as 4ms."),
])
def test_a_budget_in_the_wrong_case_or_without_a_unit_says_so(text, message):
    """Issue 25: `100mflops` and `100M` got the generic message."""
    with pytest.raises(BsnasError) as error:
        parse_budget(text)
    assert str(error.value) == message


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


def measured(spec: ArchSpec) -> tuple[int, int]:
    """(FLOPs, params) counted with hooks on the built model at the spec's input size (built on the meta device,
    then given uninitialised CPU memory: no weight initialisation to pay for)."""
    with torch.device("meta"):
        model = build_model(spec)
    model = model.to_empty(device="cpu")
    return count_flops(model, spec.input_size), sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_cost_equals_the_built_model_for_every_zoo_name(name):
    spec = get_spec(name, num_classes=100)  # its own input size: 32x32 (cifar_) or 224x224
    assert tuple(cost(spec)) == measured(spec)


def test_padding_free_resnets_are_costed_as_built():
    """The bug of issue 10: the old spec-level count gave 42,205,540 FLOPs for a model of 37,529,924."""
    spec = get_spec("cifar_resnet20_pfd", num_classes=100)
    assert tuple(cost(spec)) == measured(spec) == (37_529_924, 279_050)


def _block(block_type: str, op: str, stride: int, padding_free: bool, se: bool, kernel_size: int) -> BlockSpec:
    return BlockSpec(type=block_type, op=op, out_channels=12, kernel_size=kernel_size, stride=stride,
                     mid_channels=24 if block_type == "inverted" else None, se=se,
                     p=0.5 if op == "bsconv_s" and block_type != "inverted" else None, inner_bn=op == "bsconv_s",
                     padding_free=padding_free)


COMBINATIONS = [combo for combo in itertools.product(BLOCK_TYPES, OPS, (1, 2), (False, True), (False, True), (3, 5))
                if not (combo[3] and combo[2] == 1) and not (combo[4] and combo[0] != "inverted")]


@pytest.mark.parametrize("block_type,op,stride,padding_free,se,kernel_size", COMBINATIONS)
def test_cost_equals_the_built_model_for_every_block_combination(block_type, op, stride, padding_free, se,
                                                                 kernel_size):
    first = _block(block_type, op, stride, padding_free, se, kernel_size)
    same = _block(block_type, op, 1, False, se, 3)  # a second block: residual / identity shortcut
    for stem in (StemSpec(out_channels=8, padding_free=padding_free), StemSpec(out_channels=12, op=op, act="hswish",
                                                                              p=0.5 if op == "bsconv_s" else None)):
        for head in (HeadSpec(), HeadSpec(conv_channels=16, se=True, act="hswish"), HeadSpec(bn_act=True)):
            spec = ArchSpec(name="combo", stem=stem, blocks=(first, same), head=head, num_classes=5, in_channels=1,
                            image_size=15)
            assert tuple(cost(spec)) == measured(spec), (stem, head)


SPACES = {name: load_space(shipped_space_path(name)).for_data(1, 20, 10) for name in SHIPPED_SPACES}


@pytest.mark.parametrize("name", SHIPPED_SPACES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_cost_equals_the_built_model_on_random_points_of_every_space(name, seed):
    spec, _ = SPACES[name].random_spec(random.Random(seed))
    assert tuple(cost(spec)) == measured(spec)
