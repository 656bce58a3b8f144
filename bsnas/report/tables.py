"""Result tables for people (rich), written 160 columns wide when the output is not a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bsnas.search.budget import format_cost
from bsnas.search.front import objective_unit, pareto_trials, trial_spec

if TYPE_CHECKING:
    import optuna

__all__ = ["front_table", "print_report", "table_console"]


def table_console(file=None):
    """A rich Console for result tables: the terminal's width, or 160 columns when writing to a file or a pipe."""
    from rich.console import Console

    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=160)


def front_table(study: optuna.Study, title: str | None = None):
    """A rich Table of the front: trial, name, accuracy, cost, FLOPs, params, latency."""
    from rich.table import Table

    kind, unit = objective_unit(study)
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


def print_report(study, run_dir: Path, stream=None) -> None:
    """Write trials.csv, pareto/*.yaml and pareto.png and print the front table."""
    from bsnas.report import write_report
    from bsnas.search.study import count_trials

    paths = write_report(study, run_dir)
    console = table_console(stream)
    console.print(front_table(study))
    counts = count_trials(study)
    share = counts["feasible"] / counts["complete"] if counts["complete"] else 0.0
    console.print(f"{counts['complete']} complete trials ({share:.0%} within budget, {counts['trained']} trained, "
                  f"{counts['duplicate']} duplicates reused, {counts['fail']} failed); wrote {paths.csv}, "
                  f"{paths.plot} and {len(paths.exported)} specs in {paths.pareto_dir}/", highlight=False)
