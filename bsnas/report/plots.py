"""pareto.png: accuracy against cost of every trial of a search, the front highlighted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bsnas.search.budget import format_cost
from bsnas.search.front import objective_unit, pareto_trials

if TYPE_CHECKING:
    import optuna

__all__ = ["plot_front"]


def plot_front(study: optuna.Study, path: str | Path) -> Path:
    """Accuracy vs cost of every complete trial; the front highlighted, zoo models marked, infeasible crossed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    kind, unit = objective_unit(study)
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


