"""`replace` on torchvision ResNets/VGGs and tiny hand-built models: what is replaced, what carries over."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torchvision.models as tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bsnas.errors import BsnasError
from bsnas.nn.layers import BSConvS, BSConvU, OrthonormalConv1x1, has_reg_loss, reg_loss
from bsnas.nn.replace import replace

BSCONV = {"bsconv_u": BSConvU, "bsconv_s": BSConvS}
RESNET_KEPT = ["conv1", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
# torchvision model -> (number of 3x3 groups-1 convs, names of the convs kept)
TORCHVISION = {
    "resnet18": (16, RESNET_KEPT),
    "resnet34": (32, RESNET_KEPT),
    "vgg11": (8, []),
    "vgg11_bn": (8, []),
    "vgg16_bn": (13, []),
    "vgg19": (16, []),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batch-1 forwards of small images: one intra-op thread avoids contention on shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def torchvision_model(name: str) -> nn.Module:
    """Built once per session; tests must not modify it (replace copies it)."""
    torch.manual_seed(0)
    return getattr(tvm, name)(weights=None, num_classes=10).eval()


def kept_names(result) -> list[str]:
    return [entry.split(":")[0] for entry in result.kept]


def tiny_model() -> nn.Sequential:
    """First 3x3 conv, grouped 3x3, strided 5x5 with bias, depthwise 3x3, 1x1."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 16, 5, stride=2, padding=2, bias=True),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 4, 1),
    )


@pytest.mark.parametrize("kind", list(BSCONV))
@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models_replace_every_3x3_and_keep_shapes(name, kind):
    model = torchvision_model(name)
    n_replaced, expected_kept = TORCHVISION[name]
    result = replace(model, kind)

    assert len(result.replaced) == n_replaced
    assert kept_names(result) == expected_kept
    for conv_name in result.replaced:
        original = model.get_submodule(conv_name)
        assert original.kernel_size == (3, 3) and original.groups == 1
        assert isinstance(result.model.get_submodule(conv_name), BSCONV[kind])
    for conv_name in expected_kept:
        assert type(result.model.get_submodule(conv_name)) is nn.Conv2d
    # no plain 3x3 groups-1 conv is left anywhere
    assert not [m for m in result.model.modules()
                if type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.groups == 1]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape == (1, 10)


def test_resnet_kept_reasons_name_the_kernel():
    result = replace(torchvision_model("resnet18"), "bsconv_u")
    assert result.kept[0] == "conv1: kernel 7x7 (only 3x3 and 5x5 are replaced)"
    assert all("kernel 1x1" in entry for entry in result.kept[1:])


@pytest.mark.parametrize("kind", list(BSCONV))
def test_tiny_model_grouped_and_depthwise_kept_5x5_replaced(kind):
    model = tiny_model()
    result = replace(model, kind)
    assert result.replaced == ["0", "2"]
    assert result.kept == ["1: groups=2 (only groups=1 is replaced)",
                           "3: groups=16 (only groups=1 is replaced)",
                           "4: kernel 1x1 (only 3x3 and 5x5 are replaced)"]
    assert isinstance(result.model[0], BSCONV[kind]) and isinstance(result.model[2], BSCONV[kind])
    assert result.model[2].dw.kernel_size == (5, 5)
    assert result.model[1] is not model[1] and result.model[1].groups == 2  # a copy, unchanged
    x = torch.randn(2, 3, 16, 16)
    assert result.model(x).shape == model(x).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("kind", list(BSCONV))
@pytest.mark.parametrize("bias", [True, False])
def test_stride_padding_dilation_bias_padding_mode_carry_over(kind, bias):
    conv = nn.Conv2d(4, 6, 5, stride=2, padding=3, dilation=2, bias=bias, padding_mode="reflect")
    new = replace(nn.Sequential(conv), kind).model[0]
    dw = new.dw
    assert (dw.in_channels, dw.out_channels, dw.groups) == (6, 6, 6)
    assert dw.kernel_size == (5, 5)
    assert dw.stride == (2, 2)
    assert dw.padding == (3, 3)
    assert dw.dilation == (2, 2)
    assert dw.padding_mode == "reflect"
    assert (dw.bias is not None) == bias
    assert all(m.bias is None for m in new.modules() if isinstance(m, nn.Conv2d) and m is not dw)
    x = torch.randn(1, 4, 13, 11)
    assert new(x).shape == conv(x).shape


@settings(max_examples=40, deadline=None)
@given(in_channels=st.integers(1, 6), out_channels=st.integers(1, 6), kernel_size=st.sampled_from([3, 5]),
       stride=st.integers(1, 3), padding=st.integers(0, 3), dilation=st.integers(1, 2), bias=st.booleans(),
       kind=st.sampled_from(list(BSCONV)))
def test_replaced_conv_keeps_output_shape(in_channels, out_channels, kernel_size, stride, padding, dilation,
                                          bias, kind):
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
    new = replace(conv, kind).model
    assert isinstance(new, BSCONV[kind])
    x = torch.randn(2, in_channels, 12, 12)
    assert new(x).shape == conv(x).shape


def test_bsconv_s_reg_loss_reaches_every_pw1():
    result = replace(torchvision_model("resnet18"), "bsconv_s")
    pw1s = [m for m in result.model.modules() if isinstance(m, OrthonormalConv1x1)]
    assert len(pw1s) == 16
    assert has_reg_loss(result.model)
    loss = reg_loss(result.model, 0.1)
    assert loss.item() > 0
    loss.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in pw1s)


def test_bsconv_u_has_no_reg_loss():
    result = replace(torchvision_model("resnet18"), "bsconv_u")
    assert not has_reg_loss(result.model)
    assert reg_loss(result.model, 0.1).item() == 0


def test_inner_bn_defaults_and_override():
    default_u = replace(tiny_model(), "bsconv_u").model[0]
    default_s = replace(tiny_model(), "bsconv_s").model[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in default_u.modules())
    assert isinstance(default_s.bn1, nn.BatchNorm2d) and isinstance(default_s.bn2, nn.BatchNorm2d)
    assert isinstance(replace(tiny_model(), "bsconv_u", with_bn=True).model[0].bn, nn.BatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d)
                   for m in replace(tiny_model(), "bsconv_s", with_bn=False).model[0].modules())


@pytest.mark.parametrize("p,min_mid_channels,expected", [(None, 4, 16), (0.5, 4, 32), (0.01, 4, 4), (0.01, 8, 8)])
def test_bsconv_s_subspace_width(p, min_mid_channels, expected):
    result = replace(torchvision_model("resnet18"), "bsconv_s", p=p, min_mid_channels=min_mid_channels)
    assert result.model.layer1[0].conv1.pw1.out_channels == expected  # 64 input channels
    assert result.model.layer4[0].conv2.pw1.out_channels == max(min_mid_channels, math.ceil((p or 0.25) * 512))


@pytest.mark.parametrize("kind", list(BSCONV))
def test_param_counts_and_resnet18_gets_smaller(kind):
    model = torchvision_model("resnet18")
    result = replace(model, kind)
    assert result.params_before == sum(p.numel() for p in model.parameters())
    assert result.params_after == sum(p.numel() for p in result.model.parameters())
    assert result.params_after < result.params_before


def test_original_untouched_unless_inplace():
    model = tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = replace(model, "bsconv_s")
    assert result.model is not model
    assert [type(m) for m in model] == [nn.Conv2d] * 5
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    result = replace(model, "bsconv_s", inplace=True)
    assert result.model is model and isinstance(model[0], BSConvS)


def test_shared_conv_stays_shared():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    result = replace(nn.Sequential(conv, nn.ReLU(), conv), "bsconv_u")
    assert result.replaced == ["0", "2"]
    assert result.model[0] is result.model[2]
    assert result.params_after == sum(p.numel() for p in result.model[0].parameters())


def test_dtype_and_mode_follow_the_conv():
    model = tiny_model().double().eval()
    new = replace(model, "bsconv_s").model
    assert all(p.dtype == torch.float64 for p in new.parameters())
    assert not any(m.training for m in new.modules())
    assert new(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_conv2d_subclass_kept():
    class Custom(nn.Conv2d):
        pass

    result = replace(nn.Sequential(Custom(3, 3, 3)), "bsconv_u")
    assert result.replaced == [] and result.kept == ["0: Custom is a subclass of nn.Conv2d"]


def test_unknown_kind_names_allowed_kinds():
    with pytest.raises(BsnasError, match="'bsconv_x'.*bsconv_u, bsconv_s"):
        replace(tiny_model(), "bsconv_x")


@pytest.mark.parametrize("p", [0, -0.5, 1.5, float("nan")])
def test_p_outside_unit_interval_refused(p):
    with pytest.raises(BsnasError, match=r"p must be in \(0, 1\]"):
        replace(tiny_model(), "bsconv_s", p=p)


def test_p_with_bsconv_u_and_bad_min_mid_channels_refused():
    with pytest.raises(BsnasError, match="bsconv_s only"):
        replace(tiny_model(), "bsconv_u", p=0.5)
    with pytest.raises(BsnasError, match="min_mid_channels"):
        replace(tiny_model(), "bsconv_s", min_mid_channels=0)
