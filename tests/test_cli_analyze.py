"""`bsnas analyze`: every kind of SOURCE, `--compare init` against a run's real initialisation, one-line errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision

from bsnas.arch.files import save_spec
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import get_spec
from bsnas.cli import main
from bsnas.nn.kernels import cross_kernel_shares, intra_kernel_shares

TINY = {"format_version": 1, "name": "tiny", "stem": {"out_channels": 8},
        "blocks": [{"type": "basic", "op": "regular", "out_channels": 16, "stride": 2}], "num_classes": 10}
TRAIN = ["--dataset", "synthetic", "--preset", "proxy", "--epochs", "1", "--batch-size", "64", "--threads", "1",
         "--device", "cpu"]


def _analyze(capsys, *argv: str) -> dict:
    assert main(["analyze", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_init_sets_a_trained_run_beside_its_own_initialisation(tmp_path, monkeypatch, capsys):
    import bsnas.train.loop

    initial = {}
    real_train = bsnas.train.loop.train

    def recording_train(model, *args, **kwargs):
        initial.update(copy.deepcopy(model.state_dict()))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(bsnas.train.loop, "train", recording_train)
    spec_file = save_spec(spec_from_dict(TINY), tmp_path / "tiny.yaml")
    runs = tmp_path / "runs"
    assert main(["train", str(spec_file), *TRAIN, "--seed", "3", "--runs-dir", str(runs), "--name", "r"]) == 0
    capsys.readouterr()
    document = _analyze(capsys, "r", "--runs-dir", str(runs), "--compare", "init")
    trained, init = document["models"]
    assert trained["label"] == "r" and "trained 1 epoch" in trained["note"] and "seed 3" in init["note"]
    assert [layer["name"] for layer in init["layers"]] == ["stem.op", "blocks.0.add.body.conv1.op",
                                                          "blocks.0.add.body.conv2.op"]
    for layer in init["layers"]:  # the initialisation is the run's own, weight for weight
        weight = initial[f"{layer['name']}.weight"]
        assert layer["pc1"] == intra_kernel_shares(weight)[:, 0].tolist()
        assert layer["cross_pc1"] == cross_kernel_shares(weight)[:, 0].tolist()
    assert trained["layers"][0]["pc1"] != init["layers"][0]["pc1"]
    folder = runs / "analysis" / "r-vs-init"
    assert (folder / "kernels.png").stat().st_size > 10_000
    assert json.loads((folder / "kernels.json").read_text()) == document
    checkpoint = _analyze(capsys, str(runs / "r" / "checkpoint.pt"), "--runs-dir", str(runs))
    assert checkpoint["models"][0]["layers"] == trained["layers"]


def test_zoo_name_and_spec_file_print_the_stage_table(tmp_path, capsys):
    spec_file = save_spec(get_spec("cifar_resnet20"), tmp_path / "resnet.yaml")
    assert main(["analyze", "cifar_resnet20", "--runs-dir", str(tmp_path), "--compare", str(spec_file),
                 "--name", "same", "--layers"]) == 0
    out, err = capsys.readouterr()
    assert "untrained (initialised with seed 0)" in out and "PC1 > 0.9" in out and "blocks.8.add.body.conv2.op" in out
    assert "runs" not in err and str(tmp_path / "analysis" / "same" / "kernels.png") in err
    document = json.loads((tmp_path / "analysis" / "same" / "kernels.json").read_text())
    first, second = document["models"]
    assert first["layers"] == second["layers"]  # the same architecture with the same seed
    uncentered = _analyze(capsys, "cifar_resnet20", "--runs-dir", str(tmp_path), "--uncentered")["models"][0]
    assert uncentered["centered"] is False and uncentered["layers"][1]["pc1"] != first["layers"][1]["pc1"]


def test_a_torchvision_model_with_its_state_dict(tmp_path, capsys):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10)
    weights = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    document = _analyze(capsys, "resnet18", "--weights", str(weights), "--num-classes", "10",
                        "--runs-dir", str(tmp_path), "--compare", "init")
    mine, init = document["models"]
    assert [layer["name"] for layer in mine["layers"]][:2] == ["conv1", "layer1.0.conv1"] and len(mine["layers"]) == 17
    assert [row["resolution"] for row in mine["stages"]][:-1] == [[112, 112], [56, 56], [28, 28], [14, 14], [7, 7]]
    layer = mine["layers"][5]
    assert layer["pc1"] == intra_kernel_shares(model.get_submodule(layer["name"]).weight)[:, 0].tolist()
    assert init["layers"][5]["pc1"] != layer["pc1"]
    assert main(["analyze", "resnet18", "--weights", str(weights), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit torchvision's resnet18 with 1000 classes" in err and "fc.weight" in err and "\n" not in err


def _one_line_error(capsys, argv, needle):
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsnas: error:") and needle in err and "\n" not in err, err


@pytest.mark.parametrize(("argv", "needle"), [
    (["/nonexistent/arch.yaml"], "/nonexistent/arch.yaml"),
    (["/nonexistent/checkpoint.pt"], "/nonexistent/checkpoint.pt"),
    (["resnet18", "--weights", "/nonexistent/w.pt"], "--weights /nonexistent/w.pt: no such file"),
    (["vgg11"], "pass --weights FILE"),
    (["not_a_model", "--weights", "{junk}"], "not a torchvision classification model"),
    (["resnet18", "--weights", "{junk}"], "not readable with torch.load(weights_only=True)"),
    (["cifar_resnet20", "--num-classes", "3"], "--num-classes applies to a torchvision model"),
    (["cifar_resnet20", "--compare-weights", "w.pt"], "--compare-weights goes with --compare SOURCE2"),
])
def test_user_errors_are_one_line(argv, needle, capsys, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a tensor file")
    _one_line_error(capsys, [arg.format(junk=junk) for arg in argv] + ["--runs-dir", str(tmp_path)], needle)


def test_a_model_without_k_by_k_convolutions_is_refused(tmp_path, capsys):
    """A MobileNetV1 on one input channel: its stem has one slice per filter, the rest is depthwise or 1 x 1."""
    spec_file = save_spec(get_spec("cifar_mobilenetv1_w1d4", in_channels=1), tmp_path / "v1.yaml")
    _one_line_error(capsys, [str(spec_file), "--runs-dir", str(tmp_path)], "has no k x k convolution (k > 1)")
    assert not (tmp_path / "analysis").exists()
