"""The published BSConv model zoo: every row of the reference table is computed, never looked up."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from bsnas import create_model, get_spec, list_models
from bsnas.cli import main
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


@pytest.mark.parametrize(("name", "nearest"), [
    ("cifar_mobilenetv4_w1", "cifar_mobilenetv1_w1"), ("cifar_resnet21", "cifar_resnet20"),
    ("wrn16_2", "cifar_wrn16_2"), ("cifar_mobilenetv2_w1_pfdx", "cifar_mobilenetv2_w1_pfd"), ("alexnet", None)])
def test_an_unknown_name_is_one_line_with_the_nearest_names(name, nearest, capsys):
    """Issue 25: it listed the grammar, but neither the nearest names nor `bsnas zoo list`."""
    with pytest.raises(BsnasError) as info:
        get_spec(name)
    message = str(info.value)
    assert message.startswith(f"unknown model name {name!r}: ") and "\n" not in message
    near = message.partition(": ")[2].partition(";")[0]
    assert (nearest in near.removeprefix("the nearest zoo names are ").split(", ")) if nearest else \
        near == "no zoo name is close to it"
    assert message.endswith("`bsnas zoo list` shows them all, `bsnas zoo list --help` how names are made.")
    with pytest.raises(SystemExit):
        main(["zoo", "list", "--help"])
    assert "cifar_wrn{16,28,40}_<k>" in capsys.readouterr().out  # the grammar is there


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


def _preact_resnet_params(stem: tuple[int, int, bool], widths: list[int], units: list[int], classes: int) -> int:
    """Parameters of a pre-activation ResNet as the reference package defines it, counted by hand: input BN;
    stem conv (k x k, BN only in the ImageNet form); per unit BN(in), conv3x3 + BN, conv3x3, a 1x1 projection
    where channels or stride change; BN before the pool; the classifier."""
    channels, kernel, stem_bn = stem
    params = 2 * 3 + 3 * channels * kernel * kernel + (2 * channels if stem_bn else 0)
    for stage, (width, n) in enumerate(zip(widths, units, strict=True)):
        for unit in range(n):
            stride = 2 if unit == 0 and stage > 0 else 1
            params += 2 * channels + channels * width * 9 + 2 * width + width * width * 9
            params += channels * width if (channels != width or stride != 1) else 0
            channels = width
    return params + 2 * channels + channels * classes + classes


@pytest.mark.parametrize("name,stem,widths,units", [
    ("cifar_preresnet20", (16, 3, False), [16, 32, 64], [3, 3, 3]),
    ("cifar_preresnet56", (16, 3, False), [16, 32, 64], [9, 9, 9]),
    ("preresnet10", (64, 7, True), [64, 128, 256, 512], [1, 1, 1, 1]),
    ("preresnet34", (64, 7, True), [64, 128, 256, 512], [3, 4, 6, 3]),
])
def test_preact_resnets_match_the_reference_definition(name, stem, widths, units):
    spec = get_spec(name, num_classes=100)
    assert {b.type for b in spec.blocks} == {"preact"} and spec.head.bn_act
    assert spec.stem.bn == stem[2] and spec.stem.max_pool == stem[2]
    model = create_model(name, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == _preact_resnet_params(stem, widths, units, 100)


def test_preact_resnet_variants_and_forms():
    names = list_models("preresnet")
    assert len(names) == (5 + 6) * 3 and "cifar_preresnet602_bsconvs_p1d4" in names and "preresnet102_bsconvu" in names
    plain, bsconvu = get_spec("cifar_preresnet20"), get_spec("cifar_preresnet20_bsconvu")
    assert {b.op for b in bsconvu.blocks} == {"bsconv_u"} and bsconvu.stem.op == "bsconv_u"
    assert get_spec("preresnet18_bsconvu").stem.op == "regular"  # the 7x7 stem stays
    assert get_spec("cifar_preresnet20_bsconvs_p1d8").alpha == 0.01 and plain.alpha == 0.0
    assert plain.image_size == 32 and get_spec("preresnet18").image_size == 224
    model = create_model("cifar_preresnet20_bsconvs_p1d4", in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(BsnasError, match="_pfd applies to the MobileNets and cifar_resnet models only"):
        get_spec("cifar_preresnet20_pfd")
