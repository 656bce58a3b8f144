"""Run directories and checkpoints that rebuild their model and resume their run.

A run directory ``runs/<name>/`` holds ``config.yaml`` (model, data and train config, resolved),
``spec.yaml`` (the ArchSpec), ``metrics.jsonl`` (one JSON line per epoch), ``result.json`` and
``checkpoint.pt``. A checkpoint holds the model, optimizer, scheduler and RNG states, the epoch, the
metrics history, the ArchSpec and both configs; it is written to a temporary file and renamed, so a
killed run leaves the previous checkpoint intact. Everything in it loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from bsnas.arch.files import save_spec
from bsnas.arch.spec import ArchSpec, spec_to_dict
from bsnas.arch.validate import spec_from_dict
from bsnas.errors import BsnasError
from bsnas.names import check_name
from bsnas.nn.build import build_model
from bsnas.train import distributed
from bsnas.train.config import TrainConfig
from bsnas.train.data import DataConfig
from bsnas.train.loop import EpochMetrics, TrainResult

__all__ = ["CHECKPOINT_FORMAT", "RunDir", "check_checkpoint", "load_checkpoint", "load_model", "make_run_dir",
           "run_path", "save_checkpoint", "train_in_run_dir"]

CHECKPOINT_FORMAT = 1


def run_path(runs_dir: str | Path, name: str) -> Path:
    """The folder of run `name` inside `runs_dir`; a name that could leave it (`..`, `/x`, a newline) is refused
    (`bsnas.names`)."""
    return Path(runs_dir) / check_name(name, "--name", "a run name", f"it names a folder inside {runs_dir}")


def make_run_dir(path: Path) -> Path:
    """Create a run folder (and its parents); one that cannot be made (a read-only file system, a file in the way,
    /proc) is a BsnasError naming it, before anything of the run is written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BsnasError(f"{path}: cannot create the run folder ({error.strerror or type(error).__name__}); give "
                         "--runs-dir a folder you can write to.") from None
    return path


def save_checkpoint(
    path: str | Path, state: dict[str, Any], spec: ArchSpec, train_config: TrainConfig, data_config: DataConfig
) -> Path:
    """Write `state` (from `train`'s `on_epoch`) with the spec and configs to `path`, atomically."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        **state,
        "spec": spec_to_dict(spec),
        "train_config": train_config.to_dict(),
        "data_config": dataclasses.asdict(data_config),
    }
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (tensors on the CPU) with `weights_only=True`."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise BsnasError(f"{path}: no checkpoint there; pass a run directory or its checkpoint.pt.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or foreign files
        raise BsnasError(f"{path}: not a readable bsnas checkpoint ({type(error).__name__}).") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise BsnasError(f"{path}: not a bsnas checkpoint of format {CHECKPOINT_FORMAT}.")
    return checkpoint


_CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history", "spec", "train_config", "data_config")


def check_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> tuple[ArchSpec, TrainConfig, DataConfig]:
    """The spec and configs of a checkpoint whose every part is what a resume needs (the model's weights fit its
    spec); anything else is one BsnasError naming the file and the part."""
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise BsnasError(f"{path}: the checkpoint lacks {', '.join(missing)}; it cannot be resumed.")
    try:
        spec = spec_from_dict(checkpoint["spec"], source=f"{path} (spec)")
        train_config = TrainConfig.from_dict(checkpoint["train_config"])
        data_config = DataConfig(**checkpoint["data_config"])
        epoch = checkpoint["epoch"]
        if type(epoch) is not int or not 0 <= epoch <= train_config.epochs or len(checkpoint["history"]) != epoch:
            raise ValueError(f"epoch {epoch!r} with {len(checkpoint['history'])} epochs of history")
        for line in checkpoint["history"]:
            EpochMetrics(**line)
        with torch.device("meta"), warnings.catch_warnings():  # names and shapes only: the copy to meta is a no-op
            warnings.simplefilter("ignore", UserWarning)
            build_model(spec).load_state_dict(checkpoint["model"], strict=True)
    except BsnasError:
        raise
    except Exception as error:  # a mismatched part: name it, in one line
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BsnasError(f"{path}: the checkpoint does not fit its own spec and configs ({message}); it cannot be "
                         "resumed.") from None
    return spec, train_config, data_config


def load_model(checkpoint: str | Path | dict[str, Any]) -> nn.Module:
    """Rebuild the trained model of a checkpoint (a path, a run directory or a loaded dict), in eval mode."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    model = build_model(spec_from_dict(checkpoint["spec"], source="checkpoint"))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


class RunDir:
    """The files of one training run under `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / "checkpoint.pt"
        self.metrics = self.path / "metrics.jsonl"

    def start(self, model_name: str, spec: ArchSpec, train_config: TrainConfig, data_config: DataConfig) -> None:
        """Create the directory for a new run and write its resolved config and spec."""
        if self.checkpoint.exists() or (self.path / "result.json").exists():
            raise BsnasError(f"{self.path} already holds a run; pass --resume to continue it or --name for a new one.")
        make_run_dir(self.path)
        config = {"model": model_name, "data": dataclasses.asdict(data_config), "train": train_config.to_dict()}
        (self.path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_spec(spec, self.path / "spec.yaml")
        self.metrics.write_text("")

    def resume(self) -> tuple[dict[str, Any], ArchSpec, TrainConfig, DataConfig]:
        """The latest checkpoint with its spec and configs (checked whole first: a bad one changes no file); rewrites
        metrics.jsonl to the epochs it holds (rank 0 of a torchrun only)."""
        if not self.checkpoint.exists():
            raise BsnasError(f"--resume: {self.checkpoint} does not exist; start the run without --resume.")
        checkpoint = load_checkpoint(self.checkpoint)
        spec, train_config, data_config = check_checkpoint(checkpoint, self.checkpoint)
        if not distributed.current().is_main:
            return checkpoint, spec, train_config, data_config
        lines = "".join(json.dumps(line) + "\n" for line in checkpoint["history"])
        temporary = self.metrics.with_name(f".{self.metrics.name}.tmp")
        temporary.write_text(lines)
        os.replace(temporary, self.metrics)
        (self.path / "result.json").unlink(missing_ok=True)
        return checkpoint, spec, train_config, data_config

    def save_epoch(
        self,
        metrics: EpochMetrics,
        state: dict[str, Any],
        spec: ArchSpec,
        train_config: TrainConfig,
        data_config: DataConfig,
    ) -> None:
        """Write the checkpoint of an epoch, then append its metrics line."""
        save_checkpoint(self.checkpoint, state, spec, train_config, data_config)
        with self.metrics.open("a") as file:
            file.write(json.dumps(dataclasses.asdict(metrics)) + "\n")

    def save_result(self, result: TrainResult) -> None:
        """Write result.json."""
        (self.path / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def train_in_run_dir(run_dir: RunDir, spec: ArchSpec, config: TrainConfig, data, data_config: DataConfig,
                     checkpoint: dict[str, Any] | None = None, quiet: bool = False,
                     model_name: str | None = None) -> TrainResult:
    """Train `spec` from scratch (a new run directory, written once the model is built: a model that cannot be
    built leaves no half-made run) or from `checkpoint`, saving every epoch and the result in `run_dir`.

    Shows the progress bar (or plain lines) unless `quiet`. Under torchrun only rank 0 writes and shows progress.
    """
    from bsnas.train.loop import resolve_device, train
    from bsnas.train.progress import TrainProgress

    resolve_device(config.device)  # a device that is not here fails before the run directory is written
    session = distributed.current()
    quiet = quiet or not session.is_main
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if checkpoint is None and session.is_main:
        run_dir.start(model_name or spec.name, spec, config, data_config)
    session.barrier()
    with TrainProgress(config.epochs, start_epoch=checkpoint["epoch"] if checkpoint else 0) as progress:
        def on_epoch(metrics, state) -> None:
            run_dir.save_epoch(metrics, state, spec, config, data_config)
            if not quiet:
                progress.on_epoch(metrics)

        result = train(model, data, config, on_epoch=on_epoch, on_batch=None if quiet else progress.on_batch,
                       resume=checkpoint)
    if session.is_main:
        run_dir.save_result(result)
    return result
