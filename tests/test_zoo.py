"""The published BSConv model zoo: every row of the reference table is computed, never looked up."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from bsnas import create_model, get_spec, list_models
from bsnas.errors import BsnasError
from bsnas.nn.layers import has_reg_loss
from bsnas.nn.profile import profile

REFERENCE = Path(__file__).resolve().parent / "data" / "bsconv_zoo_published.csv"  # source: tests/data/README.md


def _rows() -> list[dict]:
    """The published rows; a missing file stops the test run with its path."""
    if not REFERENCE.is_file():
        raise FileNotFoundError(f"{REFERENCE}: the published zoo table is missing; it is part of the repository")
    with REFERENCE.open() as handle:
        return list(csv.DictReader(handle))


ROWS = _rows()


def test_reference_table_is_complete():
    assert len(ROWS) >= 160
    assert {row["dataset"] for row in ROWS} == {"cifar10", "cifar100"}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['dataset']}-{r['model']}" for r in ROWS])
def test_published_params_and_flops(row):
    num_classes = {"cifar10": 10, "cifar100": 100}[row["dataset"]]
    result = profile(create_model(row["model"], num_classes=num_classes), (3, 32, 32), ptflops=False)
    assert round(result.params / 1e6, 2) == float(row["params_m"])
    assert round(result.flops / 1e6, 2) == float(row["flops_m"])


def test_published_padding_free_mobilenetv3_large():
    result = profile(create_model("cifar_mobilenetv3_large_w1_pfd", num_classes=100), (3, 32, 32), ptflops=False)
    assert round(result.params / 1e6, 3) == 3.067
    assert round(result.flops / 1e6, 1) == 54.6
    baseline = profile(create_model("cifar_mobilenetv3_large_w1", num_classes=100), (3, 32, 32), ptflops=False)
    assert result.params - baseline.params == 720


@pytest.mark.parametrize("name", ["cifar_mobilenetv1_w1", "cifar_mobilenetv2_w1", "cifar_mobilenetv3_large_w1",
                                  "cifar_mobilenetv3_small_w1_bsconvs_p1d6"])
def test_ptflops_cross_check_on_mobilenets(name):
    result = profile(create_model(name), (3, 32, 32))
    assert 1.0 <= result.ptflops_macs / result.flops <= 1.025


def test_bsconvs_variants_share_the_baseline_architecture_and_add_the_loss():
    base, bss = create_model("cifar_mobilenetv2_w1d2"), create_model("cifar_mobilenetv2_w1d2_bsconvs_p1d6")
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in bss.parameters())
    assert has_reg_loss(bss) and not has_reg_loss(base)
    assert bss.alpha == 0.01 and get_spec("mobilenetv2_w1_bsconvs_p1d6").alpha == 0.1


def test_spatial_sizes_of_padding_free_cifar_model():
    model = create_model("cifar_mobilenetv1_w1d4_pfd").eval()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in model.blocks]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert sorted(set(sizes), reverse=True) == [32, 15, 7, 3]


@pytest.mark.parametrize("name,size", [("mobilenetv3_small_w1", 224), ("resnet18_bsconvs_p1d4", 224),
                                       ("mobilenetv1_w1d4_bsconvu_pfd", 224)])
def test_imagenet_forms(name, size):
    model = create_model(name).eval()
    assert model.spec.num_classes == 1000
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1000)


def test_imagenet_resnet_keeps_7x7_stem_and_uses_max_pool():
    spec = get_spec("resnet18_bsconvu")
    assert spec.stem.op == "regular" and spec.stem.kernel_size == 7 and spec.stem.max_pool
    assert {b.op for b in spec.blocks} == {"bsconv_u"}


def test_every_listed_name_has_a_spec_and_small_ones_run():
    names = list_models()
    assert len(names) == len(set(names)) > 200
    for name in names:
        assert get_spec(name).name == name
    for name in list_models(r"^cifar_(mobilenetv3_small_w7d20|resnet20|wrn16_1)"):
        model = create_model(name, in_channels=1)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["cifar_mobilenetv4_w1", "cifar_resnet21", "wrn16_2", "cifar_mobilenetv2_w1_pfdx"])
def test_unknown_names_show_the_grammar(name):
    with pytest.raises(BsnasError) as info:
        get_spec(name)
    message = str(info.value)
    assert repr(name) in message and "cifar_wrn{16,28,40}_<k>" in message and "mobilenetv1_w<N>" in message


@pytest.mark.parametrize("name,reason", [
    ("cifar_mobilenetv2_w1_bsconvu", "mobilenetv2 takes the variant _bsconvs_p1d6 only"),
    ("cifar_mobilenetv1_w1_bsconvs_p1d6", "mobilenetv1 takes the variant _bsconvu only"),
    ("cifar_wrn16_0", "k must be >= 1"),
    ("cifar_resnet20_bsconvs_p0d4", "0 < X <= Y"),
    ("cifar_resnet20_bsconvs_p5d4", "0 < X <= Y"),
    ("mobilenetv1_w0", "N, D >= 1"),
])
def test_invalid_parameters_in_valid_grammar(name, reason):
    with pytest.raises(BsnasError, match=reason.replace("(", r"\(")):
        get_spec(name)


def test_padding_free_cifar_resnet():
    base = profile(create_model("cifar_resnet20", num_classes=100), (3, 32, 32), ptflops=False)
    model = create_model("cifar_resnet20_pfd", num_classes=100).eval()
    result = profile(model, (3, 32, 32), ptflops=False)
    assert result.params - base.params == 720  # the stem block; shortcuts keep their 1x1 projections
    assert result.flops < 0.92 * base.flops
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in model.blocks]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    for hook in hooks:
        hook.remove()
    assert sorted(set(sizes), reverse=True) == [32, 15, 7]
    with pytest.raises(BsnasError, match="_pfd applies to the MobileNets and cifar_resnet models only"):
        get_spec("resnet18_pfd")
