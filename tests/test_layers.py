"""The maths of the operators, checked on random weights in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsnas.arch.plan import bsconv_s_mid_channels, plan_stem
from bsnas.arch.spec import StemSpec
from bsnas.nn.build import build_node, create_conv
from bsnas.nn.layers import (
    BSConvS,
    BSConvU,
    MaxPoolBranch,
    OrthonormalConv1x1,
    PaddingFreeStem,
    create_act,
    has_reg_loss,
    orthonormal_loss,
    reg_loss,
)


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("stride,kernel_size", [(1, 3), (2, 3), (1, 5), (2, 5)])
def test_bsconv_u_equals_regular_conv_with_blueprint_kernel(stride, kernel_size):
    in_channels, out_channels = 5, 7
    layer = create_conv("bsconv_u", in_channels, out_channels, kernel_size, stride)
    w = layer.pw.weight[:, :, 0, 0]  # (N, M)
    blueprint = layer.dw.weight[:, 0]  # (N, k, k)
    kernel = w[:, :, None, None] * blueprint[:, None]  # F[n, m] = w[n, m] * B[n]
    x = torch.randn(2, in_channels, 11, 11)
    expected = F.conv2d(x, kernel, stride=stride, padding=kernel_size // 2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


def test_bsconv_u_differs_from_a_kernel_with_wrong_blueprint():
    layer = create_conv("bsconv_u", 4, 6, 3)
    w, blueprint = layer.pw.weight[:, :, 0, 0], layer.dw.weight[:, 0]
    wrong = w[:, :, None, None] * blueprint.flip(0)[:, None]
    x = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(layer(x), F.conv2d(x, wrong, padding=1))


@pytest.mark.parametrize("stride", [1, 2])
def test_bsconv_s_equals_bsconv_u_with_product_weight(stride):
    in_channels, out_channels, p = 12, 9, 0.25
    s = create_conv("bsconv_s", in_channels, out_channels, 3, stride, p=p, inner_bn=False)
    u = create_conv("bsconv_u", in_channels, out_channels, 3, stride)
    w_b = s.pw1.weight[:, :, 0, 0]  # (M', M)
    w_a = s.pw2.weight[:, :, 0, 0]  # (N, M')
    with torch.no_grad():
        u.pw.weight.copy_((w_a @ w_b)[:, :, None, None])
        u.dw.weight.copy_(s.dw.weight)
    x = torch.randn(2, in_channels, 9, 9)
    torch.testing.assert_close(s(x), u(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_channels,p,expected", [(64, 0.25, 16), (64, 1 / 6, 11), (3, 0.25, 3), (10, 0.1, 4),
                                                    (16, 1.0, 16)])
def test_bsconv_s_subspace_width(in_channels, p, expected):
    assert bsconv_s_mid_channels(in_channels, p) == expected
    assert create_conv("bsconv_s", in_channels, 8, 3, p=p).pw1.out_channels == expected


def test_orthonormal_loss_is_zero_for_orthonormal_rows():
    q, _ = torch.linalg.qr(torch.randn(10, 4))  # 10x4 with orthonormal columns
    layer = OrthonormalConv1x1(10, 4)
    with torch.no_grad():
        layer.weight.copy_(q.t()[:, :, None, None])
    assert layer.orthonormal_loss().item() == pytest.approx(0.0, abs=1e-12)


def test_orthonormal_loss_is_frobenius_norm_not_squared():
    w = torch.randn(3, 5)
    gram = w @ w.t() - torch.eye(3)
    expected = sum(v * v for v in gram.flatten().tolist()) ** 0.5
    assert orthonormal_loss(w).item() == pytest.approx(expected, rel=1e-12)
    assert orthonormal_loss(2 * w).item() != pytest.approx(expected, rel=1e-3)


def test_reg_loss_sums_every_module_times_alpha():
    model = nn.Sequential(create_conv("bsconv_s", 8, 8, 3, p=0.5), nn.ReLU(), create_conv("bsconv_s", 8, 16, 3, p=0.25),
                          create_conv("bsconv_u", 16, 4, 3))
    total = model[0].pw1.orthonormal_loss() + model[2].pw1.orthonormal_loss()
    torch.testing.assert_close(reg_loss(model, 0.1), 0.1 * total)
    assert has_reg_loss(model)
    assert not has_reg_loss(create_conv("bsconv_u", 4, 4, 3))
    assert reg_loss(create_conv("bsconv_u", 4, 4, 3), 0.1).item() == 0.0


@pytest.mark.parametrize("kind", ["regular", "dsc", "bsconv_u", "bsconv_s"])
def test_gradients_reach_every_parameter(kind):
    layer = create_conv(kind, 6, 10, 3, 2, p=0.5, inner_bn=True)
    model = nn.Sequential(layer, nn.BatchNorm2d(10), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 3))
    x, y = torch.randn(4, 6, 8, 8), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y) + reg_loss(model, 0.1)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_orthonormal_loss_gradient_reaches_first_pointwise_only():
    layer = create_conv("bsconv_s", 8, 8, 3, p=0.5)
    reg_loss(layer, 1.0).backward()
    assert layer.pw1.weight.grad.abs().sum() > 0
    assert layer.pw2.weight.grad is None and layer.dw.weight.grad is None


def test_create_conv_kinds_and_unknown_kind():
    assert isinstance(create_conv("regular", 3, 8, 3), nn.Conv2d)
    assert isinstance(create_conv("bsconv_u", 3, 8, 3), BSConvU)
    s = create_conv("bsconv_s", 16, 8, 5, p=0.25, inner_bn=True)
    assert isinstance(s, BSConvS) and hasattr(s, "bn1") and hasattr(s, "bn2") and s.dw.kernel_size == (5, 5)
    dsc = create_conv("dsc", 4, 8, 3)
    assert [type(m).__name__ for m in dsc.dw] == ["Conv2d", "BatchNorm2d", "ReLU"] and dsc.pw.kernel_size == (1, 1)
    with pytest.raises(ValueError, match="unknown conv kind 'bsconv_x'.*regular, dsc, bsconv_u, bsconv_s"):
        create_conv("bsconv_x", 3, 8, 3)


def test_bsconv_u_carries_stride_padding_dilation_bias():
    layer = create_conv("bsconv_u", 4, 6, 3, 2, padding=2, dilation=2, bias=True)
    assert layer.dw.stride == (2, 2) and layer.dw.padding == (2, 2) and layer.dw.dilation == (2, 2)
    assert layer.dw.bias is not None and layer.pw.bias is None


@pytest.mark.parametrize("size,kernel_size,expected", [(32, 3, 15), (28, 3, 13), (15, 5, 7), (7, 3, 3), (6, 5, 2)])
def test_padding_free_downsampling_sizes(size, kernel_size, expected):
    block = create_conv("dsc", 8, 8, kernel_size, 2, padding_free=True).dw
    assert isinstance(block, MaxPoolBranch)
    assert block(torch.randn(1, 8, size, size)).shape[-1] == expected


def test_padding_free_branch_adds_the_max_pool_of_the_input():
    block = create_conv("dsc", 4, 4, 3, 2, padding_free=True).dw.eval()
    x = torch.randn(1, 4, 9, 9)
    expected = block.body(x) + F.max_pool2d(x, 3, 2)
    torch.testing.assert_close(block(x), expected)


def test_padding_free_stem_parameters_and_shape():
    stem = build_node(plan_stem(StemSpec(16, act="hswish", padding_free=True), 3, None)[0])
    assert isinstance(stem, PaddingFreeStem)
    plain_stem_params = 3 * 16 * 9 + 2 * 16
    assert sum(p.numel() for p in stem.parameters()) - plain_stem_params == 720
    assert stem(torch.randn(2, 3, 32, 32)).shape == (2, 16, 32, 32)


def test_activations_that_would_clone_their_input_are_not_in_place():
    """In-place ReLU6/Hardswish/Hardsigmoid copy their input for autograd; only ReLU is cheaper in place."""
    from bsnas.nn.build import create_model

    model = create_model("cifar_mobilenetv3_small_w1d2", num_classes=10)
    kinds = {type(m): m.inplace for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish,
                                                                            nn.Hardsigmoid))}
    assert kinds == {nn.ReLU: True, nn.Hardswish: False, nn.Hardsigmoid: False}
    x = torch.randn(2, 3, 32, 32)
    layer = nn.Sequential(nn.Conv2d(3, 4, 1), create_act("relu6"))
    assert not layer[1].inplace and layer(x).min() >= 0 and layer(x).max() <= 6
