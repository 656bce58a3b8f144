"""`bsnas train` under torchrun: two CPU ranks (gloo) train like one process, and a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from bsnas.train.rundir import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun with two ranks, killed and resumed (CI runs it: .ci/run)

SPEC = {"name": "tiny", "stem": {"out_channels": 8},
        "blocks": [{"type": "conv", "op": "bsconv_u", "out_channels": 16, "stride": 2}], "in_channels": 3}
FLAGS = ["--dataset", "synthetic", "--preset", "paper", "--epochs", "4", "--batch-size", "64", "--threads", "1",
         "--device", "cpu"]


def _torchrun(*argv: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(29500 + os.getpid() % 1000), "-m", "bsnas", *argv]


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return str(path)


def _result(tmp_path, name):
    return json.loads((tmp_path / "runs" / name / "result.json").read_text())


def test_two_ranks_train_like_one_process_and_resume(spec_file, tmp_path):
    runs = ["--runs-dir", str(tmp_path / "runs")]
    subprocess.run([sys.executable, "-m", "bsnas", "train", spec_file, *FLAGS, *runs, "--name", "single"],
                   check=True, capture_output=True, timeout=300)
    subprocess.run(_torchrun("train", spec_file, *FLAGS, *runs, "--name", "ddp"), check=True, capture_output=True,
                   timeout=300)
    single, ddp = _result(tmp_path, "single"), _result(tmp_path, "ddp")
    assert ddp["status"] == "completed" and ddp["epochs"] == 4 and ddp["test_accuracy"] is not None
    # the same batches and gradients; only BatchNorm sees half a batch per rank
    assert abs(ddp["val_accuracy"] - single["val_accuracy"]) <= 0.05
    for one, two in zip(single["history"], ddp["history"], strict=True):
        assert abs(one["train_loss"] - two["train_loss"]) <= 0.15 * one["train_loss"]
    assert sorted(p.name for p in (tmp_path / "runs" / "ddp").iterdir()) == sorted(
        p.name for p in (tmp_path / "runs" / "single").iterdir())  # rank 0 wrote the run, once

    process = subprocess.Popen(_torchrun("train", spec_file, *FLAGS, *runs, "--name", "killed"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "runs" / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both ranks
    process.wait(timeout=30)
    assert load_checkpoint(tmp_path / "runs" / "killed")["epoch"] < 4
    subprocess.run(_torchrun("train", spec_file, *runs, "--name", "killed", "--resume"), check=True,
                   capture_output=True, timeout=300)
    straight, resumed = load_checkpoint(tmp_path / "runs" / "ddp")["model"], load_checkpoint(
        tmp_path / "runs" / "killed")["model"]
    assert all(torch.allclose(straight[key].float(), resumed[key].float(), atol=1e-6) for key in straight)
