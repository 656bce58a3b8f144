"""pareto.png: accuracy against cost of every training of a search, rung by rung, with the front and its knee.

Meant to be read without the README: every mark and line has its legend entry (outside the plotting area, so it
hides no point), ticks are plain numbers in the cost's unit, accuracy is in percent as in every table, and the rungs
differ in marker shape and size as well as colour, so that they stay apart printed in grey.
"""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from bsnas.search.budget import format_cost
from bsnas.search.config import cost_value
from bsnas.search.front import SearchRecord, knee, trial_number
from bsnas.search.promotion import results

__all__ = ["RUNG_MARKERS", "plot_front", "save_figure"]

RUNG_MARKERS = ("o", "s", "D", "^", "v", "p", "h", "8")  # one shape per rung (at most 8 rungs)
EDGE = 1.5  # the cost axis ends here, times the larger of the budget and the costliest training


def _size(rung: int) -> float:
    return 18 + 16 * rung


def plot_front(record: SearchRecord, path: str | Path) -> Path:
    """Every training (a marker per rung; zoo models ringed), a candidate's promotions as one line through
    its rungs, the candidates over budget on the floor (those beyond the axis at its right edge), the budget, the
    front of the top rung and its knee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import LogLocator, NullFormatter, PercentFormatter

    figure, axes = plt.subplots(figsize=(10.5, 5.8), dpi=110)
    colors = plt.get_cmap("viridis")
    by_rung = [results(study) for study in record.rungs]
    trained = [t for rung in by_rung for t in rung]
    climbs = [[(rungs[r].values[1], rungs[r].values[0]) for r in sorted(rungs)]
              for rungs in record.trainings().values() if len(rungs) > 1]
    if climbs:
        axes.add_collection(LineCollection(climbs, colors="0.7", linewidths=0.8, zorder=1,
                                           label="promotion: one candidate's rungs"))
    for rung, tickets in enumerate(by_rung):
        if not tickets:
            continue
        color = "0.45" if len(by_rung) == 1 else colors(0.85 * rung / max(len(by_rung) - 1, 1))
        axes.scatter([t.values[1] for t in tickets], [t.values[0] for t in tickets], s=_size(rung),
                     marker=RUNG_MARKERS[rung], color=color, edgecolors="white", linewidths=0.4, zorder=2 + rung,
                     label="trained" if len(by_rung) == 1 else f"rung {rung}")
    zoo = [(rung, t) for rung, tickets in enumerate(by_rung) for t in tickets if t.user_attrs.get("zoo")]
    if zoo:
        axes.scatter([t.values[1] for _, t in zoo], [t.values[0] for _, t in zoo], s=[3 * _size(r) for r, _ in zoo],
                     marker="o", facecolors="none", edgecolors="black", linewidths=1.0, zorder=9,
                     label="zoo model (ringed)")
    budgets = [(kind, limit) for kind, limit in record.study.user_attrs.get("settings", {}).get("budgets", [])
               if kind == record.objective]
    shown = [t.values[1] for t in trained] + [cost_value(kind, limit) for kind, limit in budgets]
    edge = EDGE * max(shown) if shown else None
    infeasible = [t for t in record.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.user_attrs.get("status") == "infeasible"]
    if infeasible:  # never trained: drawn on the floor of the plot; far beyond the budget, at the axis's edge
        floor = max(0.0, min((t.values[0] for t in trained), default=0.0) - 0.02)
        near = [t.values[1] for t in infeasible if edge is None or t.values[1] <= edge]
        far = len(infeasible) - len(near)
        if near:
            axes.scatter(near, [floor] * len(near), s=14, c="0.6", marker="x", label="over budget (not trained)")
        if far:
            axes.scatter([edge] * far, [floor] * far, s=22, c="0.6", marker=">",
                         label=f"over budget, beyond {edge:g} {record.unit} ({far})")
    front = record.front()
    if front:
        axes.plot([t.values[1] for t in front], [t.values[0] for t in front], "-o", c="tab:red", lw=1.5, ms=9,
                  mfc="none", mew=1.2, drawstyle="steps-post", zorder=10,
                  label=f"front at rung {record.top}" if len(by_rung) > 1 else "Pareto front")
        for index, point in enumerate(front):  # labels alternate above and below: neighbours may be close in cost
            axes.annotate(str(trial_number(point)), (point.values[1], point.values[0]), textcoords="offset points",
                          xytext=(5, 5) if index % 2 == 0 else (5, -12), fontsize=8, color="tab:red")
        bend = front[knee(front)]
        axes.scatter([bend.values[1]], [bend.values[0]], s=220, marker="*", c="gold", edgecolors="tab:red",
                     zorder=11, label=f"knee (trial {trial_number(bend)})")
    for budget_kind, limit in budgets:
        axes.axvline(cost_value(budget_kind, limit), ls="--", c="0.3", lw=1,
                     label=f"budget {format_cost(budget_kind, limit)}")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    axes.set_xlabel(f"cost ({record.unit}, log scale)")
    axes.set_ylabel("validation accuracy" + (" (proxy)" if len(by_rung) == 1 else " at each rung"))
    trials = len(record.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    axes.set_title(f"bsnas search {record.name}: {trials} trials, {len(trained)} trainings")
    axes.grid(alpha=0.3)
    axes.autoscale_view()
    if edge is not None:
        axes.set_xlim(right=edge * 1.05)
    axes.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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
