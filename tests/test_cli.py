"""The `bsnas` CLI for the core library: zoo, profile, and one-line user errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bsnas.arch.files import load_spec
from bsnas.arch.zoo import get_spec
from bsnas.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_zoo_list_and_pattern(capsys):
    code, out, _ = run_cli(capsys, "zoo", "list")
    names = out.split()
    assert code == 0 and "cifar_mobilenetv3_large_w1_bsconvs_p1d6" in names and "cifar_wrn28_10_bsconvu" in names
    code, out, _ = run_cli(capsys, "zoo", "list", "--pattern", "^cifar_resnet20", "--json")
    assert json.loads(out) == ["cifar_resnet20", "cifar_resnet20_pfd", "cifar_resnet20_bsconvu",
                               "cifar_resnet20_bsconvu_pfd", "cifar_resnet20_bsconvs_p1d4",
                               "cifar_resnet20_bsconvs_p1d4_pfd"]


def test_zoo_show_prints_a_spec_that_loads_back(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "zoo", "show", "cifar_mobilenetv2_w1d2_bsconvs_p1d6", "--num-classes", "100")
    assert code == 0
    path = tmp_path / "arch.yaml"
    path.write_text(out)
    assert load_spec(path) == get_spec("cifar_mobilenetv2_w1d2_bsconvs_p1d6", 100)


def test_profile_json_has_integer_params_and_flops(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "profile", "cifar_resnet20", "--num-classes", "100", "--json")
    data = json.loads(out)
    assert code == 0 and isinstance(data["params"], int) and isinstance(data["flops"], int)
    assert round(data["params"] / 1e6, 2) == 0.28 and round(data["flops"] / 1e6, 2) == 41.42


def test_profile_spec_file_layers_latency_and_input_size(capsys, tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "stem": {"out_channels": 8},
                                    "blocks": [{"type": "conv", "op": "bsconv_u", "out_channels": 16, "stride": 2}]}))
    code, out, _ = run_cli(capsys, "profile", str(path), "--input-size", "1x28x28", "--latency", "--repeats", "2",
                           "--batch-size", "4", "--layers", "--json")
    data = json.loads(out)
    assert code == 0 and data["input_size"] == [1, 28, 28]
    assert [lat["batch_size"] for lat in data["latency"]] == [1, 4]
    assert all(lat["median_ms"] > 0 for lat in data["latency"])
    assert sum(layer["flops"] for layer in data["layers"]) == data["flops"]
    code, out, _ = run_cli(capsys, "profile", str(path), "--layers")
    assert code == 0 and "stem.op" in out and "FLOPs" in out


@pytest.mark.parametrize("argv,fragment", [
    (["profile", "cifar_resnet21"], "unknown model name 'cifar_resnet21'"),
    (["profile", "cifar_resnet20", "--input-size", "3x32"], "--input-size '3x32' is not of the form CxHxW"),
    (["profile", "missing.yaml"], "missing.yaml: cannot read the architecture file"),
    (["zoo", "list", "--pattern", "("], "is not a valid regular expression"),
])
def test_user_errors_exit_2_with_one_message(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("bsnas: error: ") and fragment in err and "Traceback" not in err


def test_bad_spec_file_via_console_script(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "stem": {"out_channels": 8},
                                    "blocks": [{"type": "conv", "op": "bsconv_x", "out_channels": 16}]}))
    proc = subprocess.run([sys.executable, "-m", "bsnas", "profile", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"bsnas: error: {path}: blocks[0].op: 'bsconv_x' is not one of regular, dsc, bsconv_u, bsconv_s"]


def test_a_storage_fault_is_one_line_and_status_1(capsys, monkeypatch):
    from bsnas.cli import zoo
    from bsnas.errors import StorageFault

    def failing(args):
        raise StorageFault("the storage sqlite:///x went away; run the same command again to go on.")

    monkeypatch.setattr(zoo, "run", failing)
    code, out, err = run_cli(capsys, "zoo", "list")
    assert code == 1 and out == ""
    assert err == "bsnas: error: the storage sqlite:///x went away; run the same command again to go on.\n"


@pytest.mark.parametrize("argv,line", [
    (["search", "--budget", "20MFLOPs", "--nosuch"],
     "search: unrecognized arguments: --nosuch (see bsnas search --help)"),
    (["search"], "search: the following arguments are required: --budget (see bsnas search --help)"),
    (["nosuch"], "argument COMMAND: invalid choice: 'nosuch'"),
])
def test_a_bad_command_line_names_its_command_once(capsys, argv, line):
    """Issue 25: `bsnas: error: bsnas: unrecognized arguments: --download (see bsnas --help)`."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith(f"bsnas: error: {line}") and err.count("bsnas") == 2  # the prefix, the help


@pytest.mark.parametrize("command", [["search", "--budget", "20MFLOPs"], ["calibrate"], ["retrain", "r"],
                                     ["worker", "r", "--storage", "sqlite:///x.db"]])
def test_every_command_that_names_download_in_a_missing_dataset_has_it(command, tmp_path, capsys):
    """Issue 25: `bsnas search --dataset cifar10` without the data advised --download, which search did not have."""
    from bsnas.cli import build_parser

    assert build_parser().parse_args([*command, "--download"]).download
    if command[0] == "search":
        code, _, err = run_cli(capsys, *command, "--dataset", "cifar10", "--data-root", str(tmp_path / "none"),
                               "--runs-dir", str(tmp_path / "runs"))
        assert code == 2 and "or pass --download." in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "runs").exists()


def test_python_m_bsnas_without_torch_says_how_to_run_it_in_one_line():
    """Issue 25: `python3 -m bsnas` outside the venv was a torch traceback. `-S` leaves out site-packages: no torch."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-S", "-m", "bsnas", "zoo", "list"], cwd=root, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"bsnas: error: this Python ({sys.executable}) has no torch, ")
    assert ".venv/bin/bsnas" in proc.stderr
    imported = subprocess.run([sys.executable, "-S", "-c", "import bsnas; bsnas.build_model"], cwd=root,
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 1 and "No module named 'torch'" in imported.stderr  # the package loads lazily
