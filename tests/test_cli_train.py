"""`bsnas train`: run directories, JSON output, resume and user errors (tiny spec, synthetic data)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from bsnas.arch.files import load_spec, save_spec
from bsnas.arch.validate import spec_from_dict
from bsnas.cli import main
from bsnas.train.config import PRESETS
from bsnas.train.rundir import RunDir, load_checkpoint, load_model

TINY = {
    "format_version": 1, "name": "tiny", "stem": {"out_channels": 8},
    "blocks": [{"type": "conv", "op": "bsconv_u", "out_channels": 16, "stride": 2}],
    "num_classes": 10, "in_channels": 3,
}
FLAGS = ["--dataset", "synthetic", "--preset", "proxy", "--epochs", "2", "--batch-size", "64", "--threads", "1",
         "--device", "cpu"]


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def spec_file(tmp_path):
    return str(save_spec(spec_from_dict(TINY), tmp_path / "tiny.yaml"))


def test_train_writes_a_complete_run_directory(spec_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", spec_file, *FLAGS, "--runs-dir", str(runs), "--name", "r", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["status"] == "completed" and result["epochs"] == 2 and result["model"] == "tiny"
    assert "epoch 1/2" in err and "epoch 2/2" in err  # plain lines: stderr is not a terminal here
    run = runs / "r"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["dataset"] == "synthetic" and config["train"]["epochs"] == 2
    proxy = PRESETS["proxy"]
    assert config["train"]["lr"] == proxy.lr and config["train"]["train_subset"] == proxy.train_subset
    assert config["train"]["bn_recalibration"] == proxy.bn_recalibration > 0  # the whole preset is recorded
    assert load_spec(run / "spec.yaml") == dataclasses.replace(spec_from_dict(TINY), image_size=16)  # the data's
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and lines[1]["val_accuracy"] == result["val_accuracy"]
    assert json.loads((run / "result.json").read_text())["history"] == result["history"]
    assert load_checkpoint(run)["epoch"] == 2 and not load_model(run).training


def test_resume_continues_to_the_same_weights(spec_file, tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    assert main(["train", spec_file, *FLAGS, "--runs-dir", runs, "--name", "straight"]) == 0

    save_epoch = RunDir.save_epoch

    def save_then_stop(self, *args):
        save_epoch(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_epoch", save_then_stop)
    assert main(["train", spec_file, *FLAGS, "--runs-dir", runs, "--name", "stopped"]) == 130
    assert load_checkpoint(tmp_path / "runs" / "stopped")["epoch"] == 1
    monkeypatch.setattr(RunDir, "save_epoch", save_epoch)
    assert main(["train", spec_file, "--runs-dir", runs, "--name", "stopped", "--resume"]) == 0

    straight = load_checkpoint(tmp_path / "runs" / "straight")["model"]
    resumed = load_checkpoint(tmp_path / "runs" / "stopped")["model"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    metrics = (tmp_path / "runs" / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]


def test_existing_runs_and_bad_resumes_are_user_errors(spec_file, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["train", spec_file, *FLAGS, "--epochs", "1", "--runs-dir", runs, "--name", "r"]) == 0
    capsys.readouterr()
    assert main(["train", spec_file, *FLAGS, "--runs-dir", runs, "--name", "r"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train", spec_file, "--runs-dir", runs, "--name", "r", "--resume", "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["train", spec_file, "--runs-dir", runs, "--name", "other", "--resume"]) == 2
    assert "start the run without --resume" in capsys.readouterr().err


def test_a_missing_dataset_is_one_line_naming_the_flags(spec_file, tmp_path, capsys):
    code = main(["train", spec_file, "--dataset", "cifar10", "--data-root", str(tmp_path / "none"),
                 "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--download" in err
    assert not (tmp_path / "runs").exists()


def test_a_diverging_run_exits_1_with_its_status(spec_file, tmp_path, capsys):
    code = main(["train", spec_file, *FLAGS, "--lr", "1e30", "--runs-dir", str(tmp_path), "--name", "d"])
    assert code == 1
    assert "diverged" in capsys.readouterr().out
    assert json.loads((tmp_path / "d" / "result.json").read_text())["status"] == "diverged"


def test_a_checkpoint_with_the_wrong_contents_is_one_error_that_deletes_nothing(spec_file, tmp_path, capsys):
    """Issue 11: result.json was removed first, then the resume died with a traceback."""
    runs = str(tmp_path / "runs")
    assert main(["train", spec_file, *FLAGS, "--epochs", "1", "--runs-dir", runs, "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    checkpoint = load_checkpoint(run)
    checkpoint["model"] = {key: value[:1] if value.dim() else value for key, value in checkpoint["model"].items()}
    torch.save(checkpoint, run / "checkpoint.pt")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    capsys.readouterr()
    assert main(["train", spec_file, "--runs-dir", runs, "--name", "r", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not fit its own spec" in err and len(err.strip().splitlines()) == 1
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_a_training_killed_mid_epoch_resumes_to_the_same_weights(spec_file, tmp_path):
    """A real SIGKILL: the checkpoint is written to a temporary file and renamed, so the last whole one survives."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "bsnas", "train", spec_file, *FLAGS, "--epochs", "6", "--runs-dir",
            str(tmp_path / "runs")]
    subprocess.run([*argv, "--name", "straight"], check=True, capture_output=True, timeout=300)
    process = subprocess.Popen([*argv, "--name", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "runs" / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert load_checkpoint(tmp_path / "runs" / "killed")["epoch"] < 6
    subprocess.run([*argv[:5], "--runs-dir", str(tmp_path / "runs"), "--name", "killed", "--resume"], check=True,
                   capture_output=True, timeout=300)
    straight = load_checkpoint(tmp_path / "runs" / "straight")["model"]
    resumed = load_checkpoint(tmp_path / "runs" / "killed")["model"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


@pytest.mark.parametrize("name", ["../escape", "/tmp/bsnas-abs", "..", "a" * 300, "two\nlines", "-rf"])
def test_a_run_name_never_leaves_the_runs_folder(spec_file, tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    assert main(["train", spec_file, *FLAGS, "--runs-dir", "runs", f"--name={name}"]) == 2
    err = capsys.readouterr().err
    assert "a run name is 1 to 100 letters" in err and len(err.strip().splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.yaml"]
    assert not Path("/tmp/bsnas-abs").exists()


def test_a_model_too_large_to_build_leaves_no_run(tmp_path, capsys):
    big = dict(TINY, num_classes=10**6, blocks=[{"type": "conv", "op": "regular", "out_channels": 60000}])
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(big))
    assert main(["train", str(path), *FLAGS, "--runs-dir", str(tmp_path / "runs"), "--name", "big"]) == 2
    assert "parameters; bsnas builds at most" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_default_run_name_is_made_to_fit_the_name_rule(tmp_path, capsys):
    """Issue 21: the default name of `bsnas train .tiny.yaml` ('.tiny-synthetic-proxy') was refused as a --name
    the user never gave; a name bsnas makes up itself follows the rule of `bsnas.names`."""
    spec = save_spec(spec_from_dict(TINY), tmp_path / ".tiny.yaml")
    argv = ["train", str(spec), *FLAGS, "--epochs", "1", "--subset", "64", "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert (tmp_path / "runs" / "tiny-synthetic-proxy" / "result.json").is_file()
