"""ArchSpec: exact YAML round trip and validation errors that name the file and the field."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bsnas.arch.files import load_spec, save_spec
from bsnas.arch.spec import (
    ACTIVATIONS,
    BSCONV_OPS,
    OPS,
    ArchSpec,
    BlockSpec,
    HeadSpec,
    StemSpec,
    spec_hash,
    spec_to_dict,
    spec_to_yaml,
)
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import get_spec
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model

channels = st.integers(1, 512)
ratios = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False, exclude_min=True)


@st.composite
def blocks(draw):
    block_type = draw(st.sampled_from(["conv", "inverted", "basic", "preact"]))
    op = draw(st.sampled_from(OPS))
    inverted = block_type == "inverted"
    stride = draw(st.sampled_from([1, 2]))
    kernel_size = draw(st.sampled_from([1, 3, 5, 7]))
    return BlockSpec(
        type=block_type, op=op, out_channels=draw(channels), kernel_size=kernel_size,
        stride=stride, act=draw(st.sampled_from(ACTIVATIONS)),
        mid_channels=draw(channels) if inverted else None,
        se=draw(st.booleans()) if inverted else False,
        p=draw(ratios) if op == "bsconv_s" and not inverted else None,
        inner_bn=draw(st.booleans()) if op in BSCONV_OPS and not inverted else False,
        padding_free=draw(st.booleans()) if stride == 2 and kernel_size > 1 else False,
    )


@st.composite
def specs(draw):
    op = draw(st.sampled_from(OPS))
    stem = StemSpec(out_channels=draw(channels), kernel_size=draw(st.sampled_from([3, 5, 7])),
                    stride=draw(st.sampled_from([1, 2])), op=op,
                    act=draw(st.sampled_from((None,) + ACTIVATIONS)), bn=draw(st.booleans()),
                    max_pool=draw(st.booleans()), p=draw(ratios) if op == "bsconv_s" else None,
                    inner_bn=draw(st.booleans()) if op in BSCONV_OPS else False)
    if draw(st.booleans()):  # the padding-free stem block: it decides its conv itself
        stem = StemSpec(out_channels=stem.out_channels, stride=stem.stride, act=stem.act, padding_free=True)
    conv = draw(st.one_of(st.none(), channels))
    bn_act = draw(st.booleans())
    head = HeadSpec(conv_channels=conv, se=draw(st.booleans()) if conv else False,
                    act=draw(st.sampled_from(ACTIVATIONS)) if conv or bn_act else "relu", bn_act=bn_act)
    layers = tuple(draw(st.lists(blocks(), min_size=1, max_size=6)))
    with_s = any(layer.op == "bsconv_s" for layer in (stem, *layers))
    return ArchSpec(name=draw(st.text(st.characters(categories=("L", "N", "P", "S"), include_characters=" "),
                                      min_size=1, max_size=20)), stem=stem,
                    blocks=layers, head=head,
                    num_classes=draw(st.integers(2, 1000)), in_channels=draw(st.integers(1, 4)),
                    image_size=512,  # large enough for a stride-2 stem, its max-pool and six stride-2 blocks
                    input_bn=draw(st.booleans()),
                    alpha=draw(st.floats(0, 10, allow_nan=False, allow_infinity=False)) if with_s else 0.0)


@settings(max_examples=150, deadline=None)
@given(specs())
def test_yaml_round_trip_is_exact(spec):
    text = spec_to_yaml(spec)
    again = spec_from_dict(yaml.safe_load(text))
    assert again == spec
    assert spec_to_yaml(again) == text
    assert spec_hash(again) == spec_hash(spec)


def test_zoo_specs_round_trip_through_files(tmp_path):
    for name in ["cifar_mobilenetv3_large_w1_bsconvs_p1d6_pfd", "cifar_wrn16_2_bsconvs_p1d4", "resnet18_bsconvu",
                 "cifar_mobilenetv1_w1d4_bsconvu"]:
        spec = get_spec(name)
        assert load_spec(save_spec(spec, tmp_path / f"{name}.yaml")) == spec


def test_format_version_is_written_first_and_hash_ignores_name():
    spec = get_spec("cifar_resnet20")
    assert list(spec_to_dict(spec))[:2] == ["format_version", "name"]
    assert spec_hash(dataclasses.replace(spec, name="other")) == spec_hash(spec)
    with_s = get_spec("cifar_resnet20_bsconvs_p1d4")
    assert spec_hash(dataclasses.replace(with_s, alpha=0.5)) != spec_hash(with_s)  # a loss of its own to weigh


def _write(tmp_path, data) -> str:
    path = tmp_path / "arch.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _resnet_dict():
    return spec_to_dict(get_spec("cifar_resnet20"))


def _error(tmp_path, data) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(BsnasError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(path + ": ") and "\n" not in message
    return message[len(path) + 2:]


def _with_block(change: dict, index: int = 3) -> dict:
    data = _resnet_dict()
    data["blocks"][index].update(change)
    return data


def test_unknown_op_names_field_and_allowed_values(tmp_path):
    message = _error(tmp_path, _with_block({"op": "bsconv_x"}))
    assert message == "blocks[3].op: 'bsconv_x' is not one of regular, dsc, bsconv_u, bsconv_s"


@pytest.mark.parametrize("change,field,allowed", [
    ({"out_channels": 0}, "blocks[3].out_channels", "is not an integer in 1.."),
    ({"out_channels": -8}, "blocks[3].out_channels", "is not an integer in 1.."),
    ({"out_channels": 3.5}, "blocks[3].out_channels", "is not an integer in 1.."),
    ({"stride": 3}, "blocks[3].stride", "is not one of 1, 2"),
    ({"kernel_size": 4}, "blocks[3].kernel_size", "is not one of 1, 3, 5, 7"),
    ({"op": "bsconv_s", "p": 0}, "blocks[3].p", "(0, 1]"),
    ({"op": "bsconv_s", "p": 1.5}, "blocks[3].p", "(0, 1]"),
    ({"op": "bsconv_s"}, "blocks[3].p", "(0, 1]"),
    ({"p": 0.5}, "blocks[3].p", "only a bsconv_s layer takes p"),
    ({"act": "gelu"}, "blocks[3].act", "is not one of relu, relu6, hswish"),
    ({"type": "dense"}, "blocks[3].type", "is not one of conv, inverted, basic, preact"),
    ({"widht": 3}, "blocks[3].widht", "unknown key; allowed keys are type, op, out_channels"),
    ({"padding_free": True, "stride": 1}, "blocks[3].padding_free", "applies only to stride-2"),
    ({"padding_free": True, "kernel_size": 1}, "blocks[3].padding_free", "kernel_size 3, 5 or 7"),
    ({"mid_channels": 8}, "blocks[3].mid_channels", "only inverted blocks"),
    ({"type": "inverted"}, "blocks[3].mid_channels", "is not an integer in 1.."),
])
def test_bad_block_fields(tmp_path, change, field, allowed):
    message = _error(tmp_path, _with_block(change))
    assert message.startswith(field + ": ") and allowed in message


@pytest.mark.parametrize("change,field", [
    ({"num_classes": 1}, "num_classes"),
    ({"format_version": 99}, "format_version"),
    ({"blocks": []}, "blocks"),
    ({"color": "red"}, "color"),
    ({"stem": {"kernel_size": 3}}, "stem.out_channels"),
    ({"head": {"conv_channels": 0}}, "head.conv_channels"),
    ({"alpha": -1}, "alpha"),
])
def test_bad_model_fields(tmp_path, change, field):
    data = _resnet_dict()
    data.update(change)
    assert _error(tmp_path, data).startswith(field + ": ")


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert "not valid YAML at line" in _error(tmp_path, "name: [unclosed\nstem: {")
    assert _error(tmp_path, "- just\n- a list\n").startswith("top level: expected a mapping")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(BsnasError, match="cannot read the architecture file"):
        load_spec(tmp_path / "missing.yaml")


def test_build_from_yaml_and_override_classes(tmp_path):
    spec = load_spec(save_spec(get_spec("cifar_mobilenetv2_w1d4"), tmp_path / "a.yaml"))
    model = build_model(spec, num_classes=7, in_channels=1)
    assert model.classifier.out_features == 7 and model.input_bn.num_features == 1
    assert model.spec.num_classes == 7


@pytest.mark.parametrize(("where", "change", "field"), [
    ("stem", {"padding_free": True, "max_pool": True}, "stem.max_pool"),
    ("stem", {"padding_free": True, "kernel_size": 7}, "stem.kernel_size"),
    ("stem", {"padding_free": True, "op": "dsc"}, "stem.op"),
    ("stem", {"padding_free": True, "bn": False}, "stem.bn"),
    ("stem", {"inner_bn": True}, "stem.inner_bn"),
    ("block", {"type": "inverted", "op": "bsconv_u", "mid_channels": 32, "inner_bn": True, "p": None},
     "blocks[3].inner_bn"),
    ("block", {"op": "regular", "inner_bn": True, "p": None}, "blocks[3].inner_bn"),
    ("head", {"act": "hswish"}, "head.act"),
    ("model", {"alpha": 0.01}, "alpha"),
])
def test_a_field_the_network_would_ignore_is_refused(tmp_path, where, change, field):
    """A stem with padding_free and max_pool costed and built the same as without the max-pool (the user lost it
    without a word) and hashed differently, so the same network was trained twice."""
    data = _resnet_dict()
    if where == "stem":
        data["stem"].update(change)
    elif where == "block":
        data["blocks"][3].update(change)
    elif where == "head":
        data["head"].update(change)
    else:
        data.update(change)
    message = _error(tmp_path, data)
    assert message.startswith(f"{field}: ") and ("remove" in message or "set it to 0" in message)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["mobilenet", "resnet"]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_two_specs_share_a_hash_exactly_when_they_build_the_same_network(space_name, seed, other_seed):
    """A canonical form: the hash is the plan's, so names and BSConv-S p values that give the same subspace width
    do not count, and any difference in the built network does."""
    import random

    from bsnas.arch.plan import bsconv_s_mid_channels, plan
    from bsnas.space.load import resolve_space

    space = resolve_space(space_name).for_data(1, 28, 10)
    spec, _ = space.random_spec(random.Random(seed))
    other, _ = space.random_spec(random.Random(other_seed))
    assert (spec_hash(spec) == spec_hash(other)) == (plan(spec) == plan(other) and spec.alpha == other.alpha)
    renamed, in_channels, blocks = dataclasses.replace(spec, name="another"), spec.stem.out_channels, []
    for block in spec.blocks:  # every BSConv-S p moved to the smallest p with the same subspace width
        if block.op == "bsconv_s" and block.p is not None:  # a basic block's second layer sees out_channels
            entries = (in_channels, block.out_channels) if block.type in ("basic", "preact") else (in_channels,)
            widths = [bsconv_s_mid_channels(m, block.p) for m in entries]
            same = next(p / 1000 for p in range(1, 1001)
                        if [bsconv_s_mid_channels(m, p / 1000) for m in entries] == widths)
            block = dataclasses.replace(block, p=same)
        blocks.append(block)
        in_channels = block.out_channels
    moved = dataclasses.replace(renamed, blocks=tuple(blocks))
    assert plan(moved) == plan(spec) and spec_hash(moved) == spec_hash(spec)
