"""ONNX export verified with onnxruntime; onnxruntime latency in `profile` and in the search's latency objective."""

from __future__ import annotations

import builtins
import csv
import dataclasses
import json

import onnx
import onnxruntime
import pytest
import torch
import yaml

from bsnas import create_model, get_spec, load_spec
from bsnas.cli import main
from bsnas.deploy.onnx import OnnxCheck, check_onnx, export_onnx, measure_onnx_latency, onnx_bytes, require_onnx
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model
from bsnas.train.rundir import load_model

# every node kind the builder makes: padding-free stem and max-pool branches, SE and hard-swish, BSConv-S with its
# orthonormal 1x1, pre-activation and basic residual units, BSConv-U
NAMES = ["cifar_mobilenetv3_small_w1d2_bsconvs_p1d6_pfd", "cifar_resnet20_bsconvu_pfd",
         "cifar_preresnet20_bsconvs_p1d4", "cifar_mobilenetv2_w1d4"]


def _graph(path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _run(path, images: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": images.numpy()})[0])


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_pytorch_with_batchnorm_folded_and_a_dynamic_batch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1).eval()
    size = (1, 28, 28)
    check = export_onnx(model, size, tmp_path / "m.onnx")
    assert check.ok and check.checker and check.max_abs_diff <= check.allowed and check.inputs == 4
    graph = _graph(tmp_path / "m.onnx").graph
    batch = graph.input[0].type.tensor_type.shape.dim
    assert batch[0].dim_param == "batch" and [d.dim_value for d in batch[1:]] == list(size)
    # every BatchNorm after a convolution is folded: the input BatchNorm stays, and a pre-activation unit's leading one
    unfolded = 1 + (sum(b.type == "preact" for b in model.spec.blocks) + 1 if model.spec.head.bn_act else 0)
    assert sum(node.op_type == "BatchNormalization" for node in graph.node) == unfolded
    images = torch.randn(5, *size)
    with torch.no_grad():
        expected = model(images)
    assert torch.allclose(_run(tmp_path / "m.onnx", images), expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_fixed_batch_and_the_spec_input_size(tmp_path):
    spec = dataclasses.replace(get_spec("cifar_mobilenetv1_w1d4_bsconvu"), image_size=40, num_classes=7)
    check = export_onnx(build_model(spec), spec.input_size, tmp_path / "m.onnx", batch_size=4)
    assert check.ok and check.inputs == 4
    dims = _graph(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 40, 40]
    assert _run(tmp_path / "m.onnx", torch.randn(4, 3, 40, 40)).shape == (4, 7)


def test_a_file_that_disagrees_with_pytorch_fails_and_is_not_written(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, other = create_model("cifar_resnet20"), create_model("cifar_resnet20")  # same graph, other weights
    check = check_onnx(onnx_bytes(other, (3, 32, 32)), model, (3, 32, 32))
    assert check.checker and not check.ok and check.max_abs_diff > check.allowed
    monkeypatch.setattr("bsnas.deploy.onnx.onnx_bytes", lambda *args: onnx_bytes(other, (3, 32, 32)))
    with pytest.raises(BsnasError, match="not written: .*onnxruntime differs from PyTorch"):
        export_onnx(model, (3, 32, 32), tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())


def test_check_names_its_tolerance():
    check = OnnxCheck(True, 3e-6, 2.0, 4)
    assert check.allowed == pytest.approx(2e-4) and check.ok
    # issue 25: `max abs diff 3.00e-06, allowed 2.00e-04 (0.0001 x the largest |logit|, 2.00e+00)` was hard to read
    assert check.summary() == ("onnx.checker passed; onnxruntime matches PyTorch on 4 random images to 1.5e-06 of "
                               "the largest logit (allowed 1e-04)")
    assert OnnxCheck(True, 0.0, 1.0, 1).summary().endswith("on 1 random image to 0.0e+00 of the largest logit "
                                                           "(allowed 1e-04)")
    failed = OnnxCheck(True, 3e-3, 1.0, 4)
    assert not failed.ok and "onnxruntime differs from PyTorch on 4 random images by 3.0e-03 of" in failed.summary()


def test_missing_packages_name_the_extra(monkeypatch, capsys):
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(BsnasError, match=r"need onnxruntime: pip install 'bsnas\[onnx\]'"):
        require_onnx()
    assert main(["export", "cifar_resnet20", "--format", "onnx"]) == 2
    assert "pip install 'bsnas[onnx]'" in capsys.readouterr().err


def test_onnxruntime_latency():
    model = create_model("cifar_mobilenetv1_w1d4")
    result = measure_onnx_latency(model, (3, 32, 32), batch_size=2, threads=1, warmup=1, repeats=3)
    assert result.backend == "onnxruntime" and result.batch_size == 2 and result.median_ms > 0


def test_cli_export_of_zoo_name_spec_and_trained_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["export", "cifar_mobilenetv1_w1d4", "--format", "onnx", "--in-channels", "1",
                 "--runs-dir", str(runs)]) == 0
    out = runs / "exports" / "cifar_mobilenetv1_w1d4.onnx"
    err = capsys.readouterr().err
    assert out.is_file() and "no trained weights here" in err and "onnx.checker passed" in err
    assert _graph(out).graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1
    assert main(["train", "cifar_mobilenetv1_w1d4", "--dataset", "synthetic", "--epochs", "1", "--subset", "64",
                 "--threads", "1", "--device", "cpu", "--runs-dir", str(runs), "--name", "trained",
                 "--export", "onnx"]) == 0
    assert "runs/trained/model.onnx: onnx.checker passed" in capsys.readouterr().err
    trained = load_model(runs / "trained")
    images = torch.randn(3, *trained.spec.input_size)
    with torch.no_grad():
        expected = trained(images)
    assert torch.allclose(_run(runs / "trained" / "model.onnx", images), expected, rtol=1e-4, atol=1e-5)
    assert main(["export", str(runs / "trained"), "--format", "onnx", "--batch-size", "2",
                 "-o", str(tmp_path / "fixed.onnx")]) == 0
    assert "trained 1 epoch, val accuracy" in capsys.readouterr().err
    assert torch.allclose(_run(tmp_path / "fixed.onnx", images[:2]), expected[:2], rtol=1e-4, atol=1e-5)
    assert main(["export", "trained", "--runs-dir", str(runs), "--num-classes", "3"]) == 2
    assert "architecture is fixed" in capsys.readouterr().err
    assert main(["export", str(runs / "trained" / "checkpoint.pt"), "-o", str(tmp_path / "from_checkpoint.yaml")]) == 0
    assert "trained 1 epoch" in capsys.readouterr().err and load_spec(tmp_path / "from_checkpoint.yaml") == trained.spec
    assert main(["export", "cifar_resnet20", "--format", "onnx", "--batch-size", "0"]) == 2


def test_profile_shows_both_backends(capsys):
    assert main(["profile", "cifar_mobilenetv1_w1d4", "--latency", "--backend", "onnxruntime", "--repeats", "2",
                 "--batch-size", "2", "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert [(row["backend"], row["batch_size"]) for row in latency] == [
        ("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    assert main(["profile", "cifar_mobilenetv1_w1d4", "--backend", "onnxruntime"]) == 2
    assert "add --latency" in capsys.readouterr().err


def test_search_with_an_onnxruntime_latency_objective(tmp_path):
    runs = tmp_path / "runs"
    assert main(["search", "--budget", "2MFLOPs", "--objective", "latency", "--latency-backend", "onnxruntime",
                 "--trials", "2", "--zoo", r"v3_small_w7d20$", "--runs-dir", str(runs), "--name", "lat",
                 "--dataset", "synthetic", "--proxy-images", "64", "--workers", "1", "--threads", "1",
                 "--sampler", "random", "--quiet"]) == 0
    with open(runs / "lat" / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    feasible = [row for row in rows if row["status"] == "trained"]
    assert feasible and all(float(row["latency_ms"]) > 0 for row in feasible)
    assert yaml.safe_load((runs / "lat" / "search.yaml").read_text())["latency_backend"] == "onnxruntime"


def test_export_format_follows_the_output_file_and_a_contradiction_is_refused(tmp_path, capsys):
    """`bsnas export demo -o runs/knee.onnx` wrote ArchSpec YAML into a file named .onnx (--format defaulted to
    yaml whatever the file was called)."""
    onnx_file, yaml_file = tmp_path / "knee.onnx", tmp_path / "knee.yml"
    assert main(["export", "cifar_mobilenetv1_w1d4", "-o", str(onnx_file)]) == 0
    onnx.checker.check_model(_graph(onnx_file))
    assert main(["export", "cifar_mobilenetv1_w1d4", "-o", str(yaml_file)]) == 0
    assert load_spec(yaml_file) == get_spec("cifar_mobilenetv1_w1d4")
    capsys.readouterr()
    assert main(["export", "cifar_mobilenetv1_w1d4", "--format", "yaml", "-o", str(tmp_path / "other.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format is yaml" in err and ".onnx" in err and "Traceback" not in err
    assert not (tmp_path / "other.onnx").exists()
