"""The files of a search's trials: trials.csv (one row per trial) and pareto/*.yaml (one ArchSpec per front
point)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsnas.arch.files import save_spec
from bsnas.search.front import pareto_trials, trial_spec

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["CSV_COLUMNS", "export_front", "write_trials_csv"]

CSV_COLUMNS = ("number", "state", "status", "name", "zoo", "val_accuracy", "cost", "flops", "params", "latency_ms",
               "pareto", "spec_hash", "duplicate_of", "width_fit", "train_seconds", "reason")


def _file_name(trial: FrozenTrial) -> str:
    name = trial_spec(trial).name
    return f"trial{trial.number:04d}_{name}.yaml"


def export_front(study: optuna.Study, folder: str | Path) -> list[Path]:
    """Write one ArchSpec YAML per Pareto trial into `folder` (replacing the YAMLs already there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    return [save_spec(trial_spec(trial), folder / _file_name(trial)) for trial in pareto_trials(study)]


def _row(trial: FrozenTrial, front_numbers: set[int]) -> dict[str, Any]:
    attrs = trial.user_attrs
    spec = attrs.get("spec")
    return {
        "number": trial.number,
        "state": trial.state.name,
        "status": attrs.get("status", ""),
        "name": json.loads(spec)["name"] if spec else "",
        "zoo": attrs.get("zoo", ""),
        "val_accuracy": "" if trial.values is None or attrs.get("status") == "infeasible" else trial.values[0],
        "cost": "" if trial.values is None else trial.values[1],
        "flops": attrs.get("flops", ""),
        "params": attrs.get("params", ""),
        "latency_ms": "" if attrs.get("latency_ms") is None else attrs["latency_ms"],
        "pareto": int(trial.number in front_numbers),
        "spec_hash": attrs.get("spec_hash", ""),
        "duplicate_of": attrs.get("duplicate_of", ""),
        "width_fit": "" if attrs.get("width_fit") is None else attrs["width_fit"],
        "train_seconds": attrs.get("train_seconds", ""),
        "reason": attrs.get("reason", ""),
    }


def write_trials_csv(study: optuna.Study, path: str | Path) -> Path:
    """One row per trial: status, accuracy, costs, Pareto membership, spec hash, duplicate and budget reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    front = {t.number for t in pareto_trials(study)}
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for trial in study.get_trials(deepcopy=False):
            writer.writerow(_row(trial, front))
    return path


