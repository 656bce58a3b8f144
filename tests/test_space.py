"""Search spaces: the shipped files, zoo points, sampling rules and validation errors."""

from __future__ import annotations

import dataclasses
import random

import optuna
import pytest
import yaml

from bsnas.arch.spec import spec_hash, spec_to_dict
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import get_spec, list_models
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model
from bsnas.space import load_space, space_from_dict, space_size
from bsnas.space.invert import params_of

MOBILENET = "search_spaces/mobilenet.yaml"
RESNET = "search_spaces/resnet.yaml"

SMALL_SPACE = {
    "name": "tiny",
    "family": "mobilenet",
    "model": {"block_type": "inverted", "width_multiplier": [0.5, 1.0], "alpha": [0.01]},
    "stem": {"out_channels": 8, "act": "relu"},
    "stages": [
        {"stride": 1, "repeats": 1, "out_channels": [8], "op": ["bsconv_u", "bsconv_s"], "expansion": [1, 2]},
        {"stride": 2, "repeats": {"low": 1, "high": 2}, "padding_free": [False, True], "out_channels": [16, 24],
         "op": ["regular", "bsconv_u"], "expansion": [2, 4], "kernel_size": [3, 5]},
    ],
    "head": {"conv_channels": [None, 32]},
}


@pytest.fixture(scope="module")
def mobilenet():
    return load_space(MOBILENET).for_data(1, 28, 10)


def _zoo(pattern):
    return [name for name in list_models(pattern)]


def test_shipped_spaces_load_with_sizes():
    for path in (MOBILENET, RESNET):
        space = load_space(path)
        assert space_size(space) > 1e20
        assert space.family in ("mobilenet", "resnet")


@pytest.mark.parametrize("name", _zoo(r"^cifar_mobilenetv(1|2)_w(1|1d4)(_bsconv\w+)?(_pfd)?$")
                         + _zoo(r"^cifar_mobilenetv3_(small|large)_w(3d4|7d20)(_bsconvs_p1d6)?(_pfd)?$"))
def test_zoo_mobilenets_are_points(mobilenet, name):
    spec = get_spec(name, 10, 1, 28)
    params = params_of(mobilenet, spec)
    assert params is not None
    again = mobilenet.spec_from_params(params)
    assert spec_hash(again) == spec_hash(spec)
    # the same parameters through a real Optuna trial give the same architecture
    assert spec_hash(mobilenet.sample(optuna.trial.FixedTrial(params))) == spec_hash(spec)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet20_bsconvu", "cifar_resnet56_bsconvs_p1d4"])
def test_zoo_resnets_are_points(name):
    space = load_space(RESNET).for_data(3, 32, 10)
    spec = get_spec(name)
    params = params_of(space, spec)
    assert params is not None and spec_hash(space.spec_from_params(params)) == spec_hash(spec)


def test_non_points_are_rejected(mobilenet):
    assert params_of(mobilenet, get_spec("cifar_resnet20", 10, 1, 28)) is None
    spec = get_spec("cifar_mobilenetv2_w1d4", 10, 1, 28)
    odd = dataclasses.replace(spec, blocks=(dataclasses.replace(spec.blocks[0], out_channels=7), *spec.blocks[1:]))
    assert params_of(mobilenet, odd) is None
    assert params_of(mobilenet, get_spec("cifar_mobilenetv2_w1d4", 10, 3, 28)) is None  # not for these channels
    assert params_of(mobilenet, get_spec("cifar_mobilenetv2_w1d4", 10, 1, 32)) is None  # nor for this image size


def test_random_points_are_valid_specs_that_build(mobilenet):
    rng = random.Random(3)
    for _ in range(25):
        spec, params = mobilenet.random_spec(rng)
        named = dataclasses.replace(spec, name="x")
        assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec_to_dict(named)))) == named  # a valid spec
        ops = {key: value for key, value in params.items() if key.endswith(".op")}
        for key in params:
            if key.endswith(".p"):  # p is conditional on op bsconv_s
                assert ops[key[:-2] + ".op"] == "bsconv_s"
        uses_s = any(block.op == "bsconv_s" for block in spec.blocks)
        assert ("alpha" in params) == uses_s
        assert (spec.alpha > 0) == uses_s
        for block in spec.blocks:
            assert not block.padding_free or block.stride == 2
    spec, _ = mobilenet.random_spec(random.Random(5))
    model = build_model(spec)
    import torch

    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_conditional_when_field():
    space = load_space(RESNET).for_data(3, 32, 10)
    rng = random.Random(11)
    for _ in range(10):
        spec, _ = space.random_spec(rng)
        for block in spec.blocks:
            assert block.inner_bn == (block.op == "bsconv_s")
        assert spec.stem.inner_bn == (spec.stem.op == "bsconv_s")


def test_width_multiplier_is_exact():
    space = space_from_dict({**SMALL_SPACE, "model": {**SMALL_SPACE["model"], "width_multiplier": [0.35]}})
    spec = space.spec_from_params({"s0.b0.op": "bsconv_u", "s0.b0.expansion": 2, "s1.repeats": 1,
                                   "s1.b0.op": "bsconv_u", "s1.b0.expansion": 4, "s1.b0.out_channels": 24,
                                   "s1.b0.kernel_size": 3, "s1.padding_free": False, "head.conv_channels": None})
    assert spec.blocks[-1].out_channels == int(24 * 7 / 20)  # 8, not 8.399.. rounded down from a float error
    assert spec.stem.out_channels == 2


def test_size_counts_conditionals():
    space = space_from_dict(SMALL_SPACE)
    # stage 0: one block, ops (2) x expansion (2) = 4; stage 1 first block: op(2) x e(2) x out(2) x k(2) = 16,
    # times padding_free (2) when op is bsconv_u -> 8*1 + 8*2 = 24; later blocks 16; repeats 1 or 2 -> 24 + 24*16
    expected = 2 * 4 * (24 + 24 * 16) * 2  # widths x stage0 x stage1 x head (alpha has one value)
    assert space_size(space) == expected


def _error(data, source="space.yaml"):
    with pytest.raises(BsnasError) as error:
        space_from_dict(data, source=source)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def test_validation_errors_name_file_and_field():
    bad_op = yaml.safe_load(yaml.safe_dump(SMALL_SPACE))
    bad_op["stages"][1]["op"] = ["regular", "bsconv_x"]
    assert "stages[1].op[1]: 'bsconv_x' is not one of regular, dsc, bsconv_u, bsconv_s" in _error(bad_op)
    missing_p = yaml.safe_load(yaml.safe_dump(SMALL_SPACE))
    missing_p["model"]["block_type"] = ["conv", "inverted"]
    assert "stages[0].p" in _error(missing_p)
    unknown = {**SMALL_SPACE, "stages": [{**SMALL_SPACE["stages"][0], "colour": "red"}]}
    assert "stages[0].colour: unknown key" in _error(unknown)
    bad_when = {**SMALL_SPACE, "stages": [{**SMALL_SPACE["stages"][0], "kernel_size": {"choices": [3], "when":
                                                                                      {"act": "relu"}}}]}
    assert "stages[0].kernel_size.when.act" in _error(bad_when)
    bad_range = {**SMALL_SPACE, "stages": [{**SMALL_SPACE["stages"][0], "repeats": {"low": 3, "high": 1}}]}
    assert "stages[0].repeats" in _error(bad_range)
    no_blocks = {**SMALL_SPACE, "stages": [{**SMALL_SPACE["stages"][0], "repeats": 0}]}
    assert "stages:" in _error(no_blocks)
    assert "model.block_type" in _error({k: v for k, v in SMALL_SPACE.items() if k != "model"})
    assert "expansion" in _error({**SMALL_SPACE, "stages": [{k: v for k, v in SMALL_SPACE["stages"][0].items()
                                                            if k != "expansion"}]})


def test_load_space_file_errors(tmp_path):
    with pytest.raises(BsnasError, match="cannot read"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(BsnasError, match=r"bad.yaml: not valid YAML at line"):
        load_space(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**SMALL_SPACE, "head": {"conv_channels": [0]}}))
    with pytest.raises(BsnasError, match=r"wrong.yaml: head.conv_channels\[0\]: 0 is not an integer in 1..65536"):
        load_space(wrong)


def test_shipped_spaces_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    from bsnas.space import SHIPPED_SPACES, resolve_space

    monkeypatch.chdir(tmp_path)
    for name in SHIPPED_SPACES:
        assert resolve_space(name).name == name
    with pytest.raises(BsnasError, match="neither a file nor a shipped space"):
        resolve_space("nosuchspace")



@pytest.mark.parametrize("path", [MOBILENET, RESNET])
def test_the_flat_parameters_hold_every_parameter_a_point_asks_and_decode_ignores_the_rest(path):
    space = load_space(path).for_data(1, 28, 10)
    flat = space.parameters()
    assert not any(choice.fixed for choice in flat.values())
    rng = random.Random(5)
    for _ in range(30):
        spec, asked = space.random_spec(rng)
        seen = {}

        def choose(name, choice, hint, asked=asked, seen=seen):
            seen[name] = choice
            return asked[name]

        space.decode(choose)
        assert all(flat[name] == choice for name, choice in seen.items())  # every asked parameter, same choice
        full = {name: choice.random(rng) for name, choice in flat.items()} | asked  # inactive ones at random
        assert space.spec_from_params(full) == spec


def test_the_flat_parameters_list_the_blocks_of_the_largest_repeats():
    flat = load_space(MOBILENET).parameters()
    assert "s4.b3.op" in flat and "s4.b4.op" not in flat  # stage 4 repeats 1..4
    assert "s1.b1.se" in flat and "s0.repeats" not in flat  # stage 0 repeats is fixed at 1
