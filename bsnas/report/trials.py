"""The files of a search's trials: trials.csv (one row per trial, with its accuracy at every rung) and
pareto/*.yaml (one ArchSpec per front point)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.files import save_spec
from bsnas.names import check_name
from bsnas.search.front import SearchRecord, trial_number, trial_spec

__all__ = ["CSV_COLUMNS", "export_front", "write_trials_csv"]

CSV_COLUMNS = ("number", "state", "status", "name", "zoo", "val_accuracy", "cost", "flops", "params", "latency_ms",
               "rung_reached", "pareto", "spec_hash", "duplicate_of", "sampler", "predicted_accuracy",
               "predicted_spread", "parent", "mutated", "width_fit", "train_seconds", "seed", "threads", "torch",
               "worker", "reason")


def export_front(record: SearchRecord, folder: str | Path) -> list[Path]:
    """Write one ArchSpec YAML per front point into `folder` (replacing the YAMLs already there), named
    `trial<N>_<name>.yaml`; a trial name that breaks the rule of `bsnas.names` is refused before any is written."""
    folder = Path(folder)
    files = []
    for point in record.front():
        spec, number = trial_spec(point), trial_number(point)
        name = check_name(spec.name, f"trial {number}: name", "a trial name", f"it names its file in {folder}/")
        files.append((spec, folder / f"trial{number:04d}_{name}.yaml"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    return [save_spec(spec, path) for spec, path in files]


def _row(trial: FrozenTrial, front: set[int], trainings: dict, rungs: int) -> dict[str, Any]:
    attrs = trial.user_attrs
    spec = attrs.get("spec")
    by_rung = trainings.get(attrs.get("spec_hash"), {})
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "status": attrs.get("status", ""),
        "name": json.loads(spec)["name"] if spec else "",
        "zoo": attrs.get("zoo", ""),
        "val_accuracy": "" if trial.values is None or attrs.get("status") == "infeasible" else trial.values[0],
        "cost": "" if trial.values is None else trial.values[1],
        "rung_reached": max(by_rung) if by_rung else "",
        "pareto": int(trial.number in front),
    }
    for key in CSV_COLUMNS:
        if key not in row:
            row[key] = "" if attrs.get(key) is None else attrs[key]
    for rung in range(rungs):
        row[f"val_accuracy_rung{rung}"] = by_rung[rung].values[0] if rung in by_rung else ""
    return row


def write_trials_csv(record: SearchRecord, path: str | Path) -> Path:
    """One row per trial that started (slots a --timeout left queued are not rows): status, accuracy (the proxy's,
    and at every rung), costs, rung reached, front membership, spec hash, duplicate, parent and mutated fields
    (evolution, predictor), what the sampler said (the predictor's accuracy and spread), width fit, what its score
    depends on, budget reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    front = {trial_number(point) for point in record.front()}
    trainings = record.trainings()
    columns = [*CSV_COLUMNS, *(f"val_accuracy_rung{rung}" for rung in range(len(record.rungs)))]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for trial in record.study.get_trials(deepcopy=False):
            if trial.state != TrialState.WAITING:
                writer.writerow(_row(trial, front, trainings, len(record.rungs)))
    return path
