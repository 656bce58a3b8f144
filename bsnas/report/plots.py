"""pareto.png: accuracy against cost of every training of a search, rung by rung, with the front and its knee."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from bsnas.search.budget import format_cost
from bsnas.search.front import SearchRecord, knee, trial_number
from bsnas.search.promotion import results

__all__ = ["plot_front", "save_figure"]


def plot_front(record: SearchRecord, path: str | Path) -> Path:
    """Every training (a marker per rung, a line linking a candidate's rungs), the candidates over budget on the
    floor, zoo models outlined, the front of the top rung and its knee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.5, 5.8), dpi=110)
    colors = plt.get_cmap("viridis")
    by_rung = [results(study) for study in record.rungs]
    trained = [t for rung in by_rung for t in rung]
    for rungs in record.trainings().values():  # a candidate's climb: one line through its rungs
        if len(rungs) > 1:
            points = [rungs[r] for r in sorted(rungs)]
            axes.plot([p.values[1] for p in points], [p.values[0] for p in points], c="0.75", lw=0.8, zorder=1)
    for rung, tickets in enumerate(by_rung):
        if not tickets:
            continue
        color = "0.55" if len(by_rung) == 1 else colors(rung / max(len(by_rung) - 1, 1))
        size = 16 + 22 * rung
        plain = [t for t in tickets if not t.user_attrs.get("zoo")]
        zoo = [t for t in tickets if t.user_attrs.get("zoo")]
        label = "trained" if len(by_rung) == 1 else f"rung {rung}"
        if plain:
            axes.scatter([t.values[1] for t in plain], [t.values[0] for t in plain], s=size, color=color,
                         label=label, zorder=2)
        if zoo:
            axes.scatter([t.values[1] for t in zoo], [t.values[0] for t in zoo], s=size * 2.2, marker="^",
                         color=color, edgecolors="tab:blue", linewidths=1.2, zorder=3,
                         label=f"zoo ({label})" if len(by_rung) > 1 else "zoo (warm start)")
    infeasible = [t for t in record.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.user_attrs.get("status") == "infeasible"]
    if infeasible:  # never trained: drawn on the floor of the plot
        floor = max(0.0, min((t.values[0] for t in trained), default=0.0) - 0.02)
        axes.scatter([t.values[1] for t in infeasible], [floor] * len(infeasible), s=14, c="0.8", marker="x",
                     label="over budget (not trained)")
    front = record.front()
    if front:
        axes.plot([t.values[1] for t in front], [t.values[0] for t in front], "-", c="tab:red", lw=1.5,
                  drawstyle="steps-post", zorder=4, label=f"front (rung {record.top})" if len(by_rung) > 1
                  else "Pareto front")
        for index, point in enumerate(front):  # labels alternate above and below: neighbours may be close in cost
            axes.annotate(str(trial_number(point)), (point.values[1], point.values[0]), textcoords="offset points",
                          xytext=(4, 4) if index % 2 == 0 else (4, -11), fontsize=7, color="tab:red")
        bend = front[knee(front)]
        axes.scatter([bend.values[1]], [bend.values[0]], s=190, marker="*", c="gold", edgecolors="tab:red",
                     zorder=5, label=f"knee (trial {trial_number(bend)})")
    for budget_kind, limit in record.study.user_attrs.get("settings", {}).get("budgets", []):
        if budget_kind == record.objective:
            scale = 1e-6 if budget_kind in ("flops", "params") else 1.0
            axes.axvline(limit * scale, ls="--", c="0.4", lw=1, label=f"budget {format_cost(budget_kind, limit)}")
    axes.set_xscale("log")
    axes.set_xlabel(f"cost ({record.unit})")
    axes.set_ylabel("validation accuracy" + (" (proxy)" if len(by_rung) == 1 else " at each rung"))
    trials = len(record.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    axes.set_title(f"bsnas search {record.name}: {trials} trials, {len(trained)} trainings")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return save_figure(figure, path)


def save_figure(figure, path: str | Path) -> Path:
    """Lay out `figure`, write it to `path` (making its folder) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
