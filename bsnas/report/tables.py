"""Result tables for people (rich), written 160 columns wide when the output is not a terminal."""

from __future__ import annotations

from pathlib import Path

from bsnas.search.budget import format_cost
from bsnas.search.front import SearchRecord, knee, trial_number, trial_spec
from bsnas.text import plural

__all__ = ["front_table", "hypervolume_line", "print_report", "table_console", "zoo_line"]


def table_console(file=None):
    """A rich Console for result tables: the terminal's width, or 160 columns when writing to a file or a pipe."""
    from rich.console import Console

    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=160)


def front_table(record: SearchRecord, title: str | None = None):
    """A rich Table of the front at the top rung: trial, architecture (the knee and zoo models marked), accuracy
    (with rung 0's proxy score beside it in a multi-fidelity search), FLOPs, params, latency when measured."""
    from rich.table import Table

    front = record.front()
    trainings = record.trainings()
    rung = record.top
    measured = any(point.user_attrs.get("latency_ms") is not None for point in front)
    table = Table(title=title or f"Pareto front of {record.name}" + (f" at rung {rung}" if len(record.rungs) > 1
                                                                      else ""), title_justify="left")
    columns = ["trial", "architecture", f"val acc (rung {rung})" if len(record.rungs) > 1 else "val acc (proxy)"]
    columns += ["proxy acc (rung 0)"] * (len(record.rungs) > 1) + ["FLOPs", "params"] + ["latency"] * measured
    for column in [*columns, "blocks"]:
        if column == "architecture":
            table.add_column(column, overflow="fold", min_width=20)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    bend = knee(front) if front else None
    for index, point in enumerate(front):
        attrs = point.user_attrs
        spec = trial_spec(point)
        name = spec.name + (" (zoo)" if attrs.get("zoo") else "") + (" (knee)" if index == bend else "")
        row = [str(trial_number(point)), name, f"{point.values[0]:.2%}"]
        if len(record.rungs) > 1:
            row.append(f"{trainings[attrs['spec_hash']][0].values[0]:.2%}")
        row += [format_cost("flops", attrs.get("flops")), format_cost("params", attrs.get("params"))]
        if measured:
            row.append(format_cost("latency", attrs.get("latency_ms")))
        table.add_row(*row, str(len(spec.blocks)))
    return table


def zoo_line(record: SearchRecord) -> str | None:
    """The best zoo model beside the front: at the front's rung when one got there (unless it is on the front),
    else at the highest rung a zoo model reached, saying so; None without zoo models."""
    found = record.best_zoo()
    if found is None:
        return None
    rung, zoo = found
    if rung == record.top and any(trial_number(p) == trial_number(zoo) for p in record.front()):
        return None
    where = f"rung {rung}" if rung == record.top else f"rung {rung} (none reached rung {record.top})"
    dominated = " (dominated by the front)" if rung == record.top else ""
    return (f"best zoo model at {where}: {zoo.user_attrs['zoo']}, {zoo.values[0]:.2%} at "
            f"{format_cost('flops', zoo.user_attrs.get('flops'))}{dominated}")


def hypervolume_line(record: SearchRecord) -> str:
    """The front's hypervolume, or why there is none (no budget on the objective's cost for its reference)."""
    value = record.hypervolume()
    if value is None:
        return (f"hypervolume: none (no --budget on the objective's cost, {record.objective}, to put the reference "
                "point at)")
    rung = f"rung {record.top}" if len(record.rungs) > 1 else "the proxy"
    return (f"hypervolume of the front: {value:.4f} (val accuracy at {rung} x {record.unit} as a share of the "
            f"budget {record.budget:g} {record.unit}; reference: the budget, accuracy 0; 1 is the ideal)")


def print_report(record: SearchRecord, run_dir: Path, stream=None) -> None:
    """Write trials.csv, pareto/*.yaml and pareto.png and print the front table and a summary."""
    from bsnas.report import write_report
    from bsnas.search.slots import count_trials

    paths = write_report(record, run_dir)
    console = table_console(stream)
    console.print(front_table(record))
    if line := zoo_line(record):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(hypervolume_line(record), highlight=False, soft_wrap=True)
    counts = count_trials(record.study)
    share = counts["feasible"] / counts["complete"] if counts["complete"] else 0.0
    trainings = sum(len(r) for r in record.trainings().values())
    console.print(f"{plural(counts['complete'], 'complete trial')} ({share:.0%} within budget, "
                  f"{counts['trained']} trained, {plural(counts['duplicate'], 'duplicate')} reused, "
                  f"{counts['fail']} failed), {plural(trainings, 'training')} over "
                  f"{plural(len(record.rungs), 'rung')}; "
                  f"wrote {paths.csv}, {paths.plot} and {plural(len(paths.exported), 'spec')} in {paths.pareto_dir}/",
                  highlight=False, soft_wrap=True)
