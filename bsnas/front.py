"""The Pareto front of a search study: picks, ArchSpec exports, trials.csv, pareto.png and a table.

The front is Optuna's (`study.best_trials`: feasible trials no other feasible trial dominates in
validation accuracy and cost), with repeated architectures (same spec hash) kept once.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsnas.budget import format_cost
from bsnas.errors import BsnasError
from bsnas.spec import ArchSpec, save_spec, spec_from_dict

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["PICKS", "pareto_trials", "pick_trial", "trial_spec", "export_front", "write_trials_csv",
           "plot_front", "front_table", "write_report", "ReportPaths"]

PICKS = ("max-acc", "knee", "min-cost", "trial:N")
CSV_COLUMNS = ("number", "state", "status", "name", "zoo", "val_accuracy", "cost", "flops", "params", "latency_ms",
               "pareto", "spec_hash", "duplicate_of", "width_fit", "train_seconds", "reason")


def _objective(study: optuna.Study) -> tuple[str, str]:
    """(cost kind, unit) of the study's second objective."""
    kind = study.user_attrs.get("config", {}).get("objective", "flops")
    return kind, {"flops": "MFLOPs", "params": "Mparams", "latency": "ms"}[kind]


def trial_spec(trial: FrozenTrial) -> ArchSpec:
    """The ArchSpec a trial evaluated, from its user attributes (no re-sampling)."""
    text = trial.user_attrs.get("spec")
    if text is None:
        raise BsnasError(f"trial {trial.number} holds no architecture (it did not finish).")
    return spec_from_dict(json.loads(text), source=f"trial {trial.number}")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated trials by increasing cost, one per architecture."""
    seen: set[str] = set()
    front = []
    for trial in sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number)):
        if trial.user_attrs.get("status") == "infeasible":
            continue
        digest = trial.user_attrs.get("spec_hash")
        if digest in seen:
            continue
        seen.add(digest)
        front.append(trial)
    return front


def pick_trial(study: optuna.Study, pick: str = "knee") -> FrozenTrial:
    """One trial: `max-acc`, `min-cost`, `knee` (front point farthest from the line between its ends) or `trial:N`."""
    if pick.startswith("trial:"):
        try:
            number = int(pick.partition(":")[2])
        except ValueError:
            raise BsnasError(f"--pick {pick!r}: trial:N needs a trial number, e.g. trial:12.") from None
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials:
            raise BsnasError(f"--pick {pick!r}: the study has no trial {number}.")
        trial = trials[0]
        if trial.user_attrs.get("status") == "infeasible":
            raise BsnasError(f"--pick {pick!r}: trial {number} is over the budget ({trial.user_attrs.get('reason')}).")
        if trial.user_attrs.get("spec") is None:
            raise BsnasError(f"--pick {pick!r}: trial {number} did not finish.")
        return trial
    if pick not in PICKS:
        raise BsnasError(f"--pick {pick!r} is not one of {', '.join(PICKS)}.")
    front = pareto_trials(study)
    if not front:
        raise BsnasError(f"study {study.study_name!r} has no feasible complete trial yet.")
    if pick == "min-cost":
        return front[0]
    if pick == "max-acc" or len(front) < 3:
        return max(front, key=lambda t: (t.values[0], -t.values[1]))
    return front[_knee_index([(t.values[1], t.values[0]) for t in front])]


def _knee_index(points: list[tuple[float, float]]) -> int:
    """Index of the point farthest above the chord between the first and last (cost, accuracy) points."""
    costs = [math.log(max(c, 1e-12)) for c, _ in points]
    accs = [a for _, a in points]
    c0, c1, a0, a1 = min(costs), max(costs), min(accs), max(accs)
    span_c, span_a = (c1 - c0) or 1.0, (a1 - a0) or 1.0
    xs = [(c - c0) / span_c for c in costs]
    ys = [(a - a0) / span_a for a in accs]
    (x0, y0), (x1, y1) = (xs[0], ys[0]), (xs[-1], ys[-1])
    norm = math.hypot(x1 - x0, y1 - y0) or 1.0
    above = [((x1 - x0) * (y - y0) - (x - x0) * (y1 - y0)) / norm for x, y in zip(xs, ys, strict=True)]
    return max(range(len(points)), key=lambda i: above[i])


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


def plot_front(study: optuna.Study, path: str | Path) -> Path:
    """Accuracy vs cost of every complete trial; the front highlighted, zoo models marked, infeasible crossed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    kind, unit = _objective(study)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    front = pareto_trials(study)
    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=110)
    feasible = [t for t in trials if t.user_attrs.get("status") != "infeasible" and not t.user_attrs.get("zoo")]
    infeasible = [t for t in trials if t.user_attrs.get("status") == "infeasible"]
    zoo = [t for t in trials if t.user_attrs.get("zoo") and t.user_attrs.get("status") != "infeasible"]
    if feasible:
        axes.scatter([t.values[1] for t in feasible], [t.values[0] for t in feasible], s=18, c="0.55",
                     label="searched")
    if infeasible:  # not trained: drawn on the floor of the plot
        accuracies = [t.values[0] for t in feasible + zoo] or [0.0]
        floor = max(0.0, min(accuracies) - 0.02)
        axes.scatter([t.values[1] for t in infeasible], [floor] * len(infeasible), s=14, c="0.8",
                     marker="x", label="over budget (not trained)")
    if zoo:
        axes.scatter([t.values[1] for t in zoo], [t.values[0] for t in zoo], s=42, marker="^", c="tab:blue",
                     label="zoo (warm start)")
    if front:
        axes.plot([t.values[1] for t in front], [t.values[0] for t in front], "-o", c="tab:red", ms=6,
                  drawstyle="steps-post", label="Pareto front")
        for t in front:
            axes.annotate(str(t.number), (t.values[1], t.values[0]), textcoords="offset points", xytext=(4, 4),
                          fontsize=7, color="tab:red")
    budgets = study.user_attrs.get("settings", {}).get("budgets", [])
    for budget_kind, limit in budgets:
        if budget_kind == kind:
            scale = 1e-6 if kind in ("flops", "params") else 1.0
            axes.axvline(limit * scale, ls="--", c="0.4", lw=1, label=f"budget {format_cost(kind, limit)}")
    axes.set_xscale("log")
    axes.set_xlabel(f"cost ({unit})")
    axes.set_ylabel("validation accuracy (proxy)")
    axes.set_title(f"bsnas search {study.study_name}: {len(trials)} trials")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def front_table(study: optuna.Study, title: str | None = None):
    """A rich Table of the front: trial, name, accuracy, cost, FLOPs, params, latency."""
    from rich.table import Table

    kind, unit = _objective(study)
    table = Table(title=title or f"Pareto front of {study.study_name}", title_justify="left")
    for column in ("trial", "architecture", "val acc", "FLOPs", "params", "latency", "blocks"):
        if column == "architecture":
            table.add_column(column, overflow="fold", min_width=20)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for trial in pareto_trials(study):
        attrs = trial.user_attrs
        spec = trial_spec(trial)
        table.add_row(str(trial.number), spec.name, f"{trial.values[0]:.2%}", format_cost("flops", attrs.get("flops")),
                      format_cost("params", attrs.get("params")), format_cost("latency", attrs.get("latency_ms")),
                      str(len(spec.blocks)))
    return table


@dataclass
class ReportPaths:
    csv: Path
    pareto_dir: Path
    plot: Path
    exported: list[Path]


def write_report(study: optuna.Study, run_dir: str | Path) -> ReportPaths:
    """trials.csv, pareto/*.yaml and pareto.png under `run_dir`."""
    run_dir = Path(run_dir)
    return ReportPaths(csv=write_trials_csv(study, run_dir / "trials.csv"), pareto_dir=run_dir / "pareto",
                       plot=plot_front(study, run_dir / "pareto.png"),
                       exported=export_front(study, run_dir / "pareto"))
