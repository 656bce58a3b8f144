"""The kernel analysis (`bsnas.nn.kernels`, `bsnas.report.kernels`) on constructed kernels with known answers."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsnas.arch.validate import spec_from_dict
from bsnas.nn.build import build_model, create_conv, create_model
from bsnas.nn.kernels import (
    analyze_kernels,
    cross_kernel_shares,
    equivalent_kernel,
    intra_kernel_shares,
    pca_shares,
)
from bsnas.nn.layers import BSConvS, BSConvU, OrthonormalConv1x1, orthonormal_loss
from bsnas.report.kernels import THRESHOLD, AnalyzedModel, analysis_json, plot_kernels, stage_summaries


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _orthonormal_rows(count: int, dim: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
    return q[:count]


@pytest.mark.parametrize("centered", [True, False])
def test_rank_one_kernels_are_explained_wholly_by_one_component(centered):
    w, blueprint = torch.randn(6, 16), torch.randn(6, 3, 3)
    kernel = w[:, :, None, None] * blueprint[:, None]  # F[n, m] = w[n, m] * B[n], BSConv's form
    shares = intra_kernel_shares(kernel, centered)
    torch.testing.assert_close(shares[:, 0], torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_orthogonal_slices_of_equal_norm_give_the_lowest_share():
    """M orthogonal slices of one norm: 1/M without centering; centering leaves M - 1 equal directions, 1/(M - 1)."""
    m = 5
    kernel = (3 * _orthonormal_rows(m, 9)).reshape(1, m, 3, 3)
    assert intra_kernel_shares(kernel, centered=False)[0, 0].item() == pytest.approx(1 / m, abs=1e-12)
    assert intra_kernel_shares(kernel, centered=True)[0, 0].item() == pytest.approx(1 / (m - 1), abs=1e-12)


@pytest.mark.parametrize("m", [2, 3, 8, 9, 40])
def test_any_kernel_lies_between_the_bounds(m):
    shares = intra_kernel_shares(torch.randn(50, m, 3, 3))
    assert (shares[:, 0] >= 1 / min(m - 1, 9) - 1e-12).all() and (shares[:, 0] <= 1 + 1e-12).all()
    assert (shares[:, :2].sum(-1) >= shares[:, 0]).all()
    torch.testing.assert_close(shares.sum(-1), torch.ones(50, dtype=torch.float64))
    uncentered = intra_kernel_shares(torch.randn(50, m, 3, 3), centered=False)
    assert (uncentered[:, 0] >= 1 / min(m, 9) - 1e-12).all()


def test_a_known_two_component_mixture():
    """Slices a_m B1 + b_m B2 with orthonormal blueprints and zero-mean, orthogonal a, b: PC1 explains
    sum(a^2) / (sum(a^2) + sum(b^2)) = 0.9, the first two all of it; a mean slice added changes nothing centered."""
    b1, b2 = _orthonormal_rows(2, 9)
    a = torch.tensor([3.0, 3.0, -3.0, -3.0], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    slices = a[:, None] * b1 + b[:, None] * b2
    shares = pca_shares(slices)
    assert shares[0].item() == pytest.approx(0.9, abs=1e-12)
    assert shares[:2].sum().item() == pytest.approx(1.0, abs=1e-12)
    shifted = pca_shares(slices + torch.randn(9, dtype=torch.float64))
    torch.testing.assert_close(shifted, shares)
    assert pca_shares(slices, centered=False)[0].item() == pytest.approx(0.9, abs=1e-12)  # the mean slice is 0 here


def test_a_filter_without_variance_has_no_share():
    kernel = torch.randn(3, 4, 3, 3)
    kernel[1] = torch.randn(3, 3)  # four equal slices: nothing to explain once the mean slice is taken away
    kernel[2] = 0
    shares = intra_kernel_shares(kernel)
    assert not math.isnan(shares[0, 0]) and math.isnan(shares[1, 0]) and math.isnan(shares[2, 0])
    assert not math.isnan(intra_kernel_shares(kernel, centered=False)[1, 0])


def test_cross_kernel_view_sees_the_depthwise_separable_form():
    """DSC's kernel F[n, m] = w[n, m] * D[m] (one k x k kernel per input channel): rank one across filters."""
    w, depthwise = torch.randn(12, 5), torch.randn(5, 3, 3)
    kernel = w[:, :, None, None] * depthwise[None]
    torch.testing.assert_close(cross_kernel_shares(kernel)[:, 0], torch.ones(5, dtype=torch.float64))
    assert intra_kernel_shares(kernel)[:, 0].max() < 0.99  # not BSConv's form
    two_groups = torch.cat([kernel[:6], torch.randn(6, 5)[:, :, None, None] * torch.randn(5, 3, 3)[None]])
    torch.testing.assert_close(cross_kernel_shares(two_groups, groups=2)[:, 0], torch.ones(10, dtype=torch.float64))
    assert cross_kernel_shares(two_groups, groups=1)[:, 0].max() < 0.99


def _random_batchnorms(module: nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.normal_()
            bn.bias.data.normal_()


@pytest.mark.parametrize(("kind", "inner_bn", "stride", "kernel_size"), [
    ("bsconv_u", False, 1, 3), ("bsconv_u", True, 2, 3), ("bsconv_s", False, 1, 5), ("bsconv_s", True, 2, 3)])
def test_the_equivalent_kernel_is_the_layer(kind, inner_bn, stride, kernel_size):
    """The layer is affine in eval mode: layer(x) - layer(0) is the convolution with the equivalent kernel."""
    layer = create_conv(kind, 6, 10, kernel_size, stride, p=0.5, inner_bn=inner_bn, bias=True).double().eval()
    _random_batchnorms(layer)
    kernel = equivalent_kernel(layer)
    assert kernel.shape == (10, 6, kernel_size, kernel_size)
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        linear = layer(x) - layer(torch.zeros_like(x))
    expected = F.conv2d(x, kernel, stride=stride, padding=kernel_size // 2)
    torch.testing.assert_close(linear, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(intra_kernel_shares(kernel)[:, 0], torch.ones(10, dtype=torch.float64))


def test_a_wrong_equivalent_kernel_would_be_caught():
    layer = create_conv("bsconv_u", 4, 6, 3, inner_bn=True).double().eval()
    _random_batchnorms(layer)
    x = torch.randn(1, 4, 7, 7, dtype=torch.float64)
    without_bn = layer.pw.weight.double()[:, :, 0, 0][:, :, None, None] * layer.dw.weight.double()
    with torch.no_grad():
        assert not torch.allclose(layer(x) - layer(torch.zeros_like(x)), F.conv2d(x, without_bn, padding=1))


def test_a_network_is_grouped_into_stages_by_resolution():
    model = create_model("cifar_resnet20")
    analysis = analyze_kernels(model, (3, 32, 32))
    assert len(analysis.layers) == 19 and all(layer.kind == "conv" for layer in analysis.layers)
    assert [sum(layer.stage == s for layer in analysis.layers) for s in (1, 2, 3)] == [7, 6, 6]
    assert {layer.stage: layer.out_size for layer in analysis.layers} == {1: (32, 32), 2: (16, 16), 3: (8, 8)}
    first = next(layer for layer in analysis.layers if layer.name == "blocks.3.add.body.conv1.op")
    assert first.stage == 2  # the stride-2 conv that starts a stage belongs to it
    weight = model.get_submodule(first.name).weight
    assert first.pc1 == intra_kernel_shares(weight)[:, 0].tolist()
    assert first.cross_pc1 == cross_kernel_shares(weight)[:, 0].tolist()
    assert len(first.pc1) == 32 and len(first.cross_pc1) == 16


def test_bsconv_layers_are_read_through_their_equivalent_kernel():
    model = create_model("cifar_resnet20_bsconvs_p1d4")
    analysis = analyze_kernels(model, (3, 32, 32))
    modules = [m for m in model.modules() if isinstance(m, BSConvU | BSConvS)]
    assert len(analysis.layers) == len(modules) == 19 and {layer.kind for layer in analysis.layers} == {"bsconv_s"}
    assert all(v == pytest.approx(1.0, abs=1e-9) for layer in analysis.layers for v in layer.pc1)
    weights = [m for m in model.modules() if isinstance(m, OrthonormalConv1x1)]
    assert [w.name for w in analysis.orthonormal] == [n for n, m in model.named_modules() if m in weights]
    first = analysis.orthonormal[1]
    layer = model.get_submodule(first.name)
    assert first.loss == pytest.approx(orthonormal_loss(layer.weight.double()).item())
    assert first.singular_values == sorted(first.singular_values, reverse=True) and len(first.singular_values) == 4


def test_a_padding_free_bsconv_is_read_up_to_its_depthwise_conv():
    spec = spec_from_dict({"format_version": 1, "name": "pf", "stem": {"out_channels": 8},
                           "blocks": [{"type": "conv", "op": "bsconv_u", "out_channels": 16, "stride": 2,
                                       "padding_free": True, "inner_bn": True}]})
    model = build_model(spec)
    analysis = analyze_kernels(model, spec.input_size)
    block = next(layer for layer in analysis.layers if layer.kind == "bsconv_u")
    assert block.out_size == (15, 15) and block.stage == 2
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in block.pc1)


def test_mobilenetv2_bsconv_s_weights_are_its_projections():
    model = create_model("cifar_mobilenetv2_w1d4_bsconvs_p1d6")
    analysis = analyze_kernels(model, (3, 32, 32))
    assert len(analysis.orthonormal) == sum(isinstance(m, OrthonormalConv1x1) for m in model.modules()) > 10
    assert [layer.name for layer in analysis.layers] == ["stem.op"]  # depthwise convs have one slice per filter


def test_the_json_recomputes_the_table(tmp_path):
    analysis = analyze_kernels(create_model("cifar_resnet20"), (3, 32, 32))
    document = json.loads(json.dumps(analysis_json([AnalyzedModel("m", "note", analysis)])))
    model = document["models"][0]
    for row in model["stages"]:
        layers = [layer for layer in model["layers"] if row["stage"] is None or layer["stage"] == row["stage"]]
        pc1 = [v for layer in layers for v in layer["pc1"] if v is not None]
        assert row["filters"] == len(pc1) and row["median_pc1"] == statistics.median(pc1)
        assert row["above"] == sum(v > document["threshold"] for v in pc1) / len(pc1)
        assert row["cross_median_pc1"] == statistics.median(v for layer in layers for v in layer["cross_pc1"])
    assert document["threshold"] == THRESHOLD and model["centered"] is True
    assert [row.stage for row in stage_summaries(analysis)] == [1, 2, 3, None]
    path = plot_kernels([AnalyzedModel("a", "", analysis)] * 2, tmp_path / "k.png")
    assert path.stat().st_size > 10_000
