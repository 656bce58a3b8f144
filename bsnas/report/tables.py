"""Result tables for people (rich) that fit the terminal they are printed on.

A table is a list of `Column`s. On a terminal it takes the terminal's width: names fold (wrap) within their column,
no other cell is ever cut, and when the columns still do not fit, those with a `drop` rank are left out, the lowest
rank first, and a line under the table names them (`--wide` prints them all). Written to a file or a pipe, or with
`--wide`, a table has every column at its full width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len

from bsnas.search.budget import format_cost
from bsnas.search.front import SearchRecord, knee, trial_number, trial_spec
from bsnas.text import plural

__all__ = ["FOLD_MIN", "Column", "front_columns", "hypervolume_line", "print_report", "print_table", "sampler_line",
           "table_console", "zoo_line"]

FOLD_MIN = 16  # the narrowest a folding column gets on a narrow terminal


@dataclass(frozen=True)
class Column:
    """A column of a table: its header, how it aligns, whether its text folds (names) instead of widening the
    table, and `drop`: 0 to show it always, else its rank among the columns left out on a narrow terminal."""

    header: str
    justify: str = "right"
    fold: bool = False
    drop: int = 0


def table_console(file=None):
    """A rich Console for results: the terminal's width, or 160 columns when writing to a file or a pipe."""
    from rich.console import Console

    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=160)


def _width(columns: list[Column], rows: list[list[str]], fold: bool) -> int:
    """Columns of text the table takes (each column padded by one space on both sides, n + 1 rules), with the
    folding columns at `FOLD_MIN` when `fold` and they are wider."""
    total = len(columns) + 1
    for index, column in enumerate(columns):
        full = max([cell_len(column.header)] + [cell_len(row[index]) for row in rows])
        total += 2 + (min(full, max(FOLD_MIN, cell_len(column.header))) if fold and column.fold else full)
    return total


def print_table(console, title: str, columns: list[Column], rows: list[list[str]], wide: bool = False) -> None:
    """Print the table on `console`: fitted to a terminal (see the module doc), whole to a file, a pipe or `wide`."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    kept = list(range(len(columns)))
    if wide or not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, _width(columns, rows, fold=False)))
    else:
        droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop)
        while droppable and _width([columns[i] for i in kept], [[r[i] for i in kept] for r in rows],
                                   fold=True) > console.width:
            kept.remove(droppable.pop(0)[1])
    table = Table(title=title, title_justify="left")
    for index in kept:
        column = columns[index]
        table.add_column(column.header, justify=column.justify, overflow="fold" if column.fold else "ellipsis",
                         no_wrap=not column.fold)
    for row in rows:
        table.add_row(*(Text(row[index]) for index in kept))
    console.print(table)
    if left_out := [columns[i].header for i in range(len(columns)) if i not in kept]:
        console.print(f"(left out at {console.width} columns: {', '.join(left_out)}; --wide shows them)",
                      highlight=False)


def front_columns(record: SearchRecord) -> tuple[str, list[Column], list[list[str]]]:
    """Title, columns and rows of the front at the top rung: trial, architecture (the knee and zoo models marked),
    accuracy (with rung 0's proxy score beside it in a multi-fidelity search), FLOPs, params, latency when
    measured, blocks. On a narrow terminal blocks go first, then the proxy score, params, latency and FLOPs;
    the objective's cost always stays."""
    front = record.front()
    trainings = record.trainings()
    rung, rungs = record.top, len(record.rungs) > 1
    measured = any(point.user_attrs.get("latency_ms") is not None for point in front)
    title = f"Pareto front of {record.name}" + (f" at rung {rung}" if rungs else "")
    kept = {"flops": "FLOPs", "params": "params", "latency": "latency"}[record.objective]
    columns = [Column("trial"), Column("architecture", justify="left", fold=True),
               Column(f"val acc (rung {rung})" if rungs else "val acc (proxy)")]
    columns += [Column("proxy acc (rung 0)", drop=2)] * rungs
    columns += [Column(name, drop=0 if name == kept else rank) for name, rank in (("FLOPs", 5), ("params", 3))]
    columns += [Column("latency", drop=0 if kept == "latency" else 4)] * measured + [Column("blocks", drop=1)]
    bend = knee(front) if front else None
    rows = []
    for index, point in enumerate(front):
        attrs = point.user_attrs
        spec = trial_spec(point)
        name = spec.name + (" (zoo)" if attrs.get("zoo") else "") + (" (knee)" if index == bend else "")
        row = [str(trial_number(point)), name, f"{point.values[0]:.2%}"]
        if rungs:
            row.append(f"{trainings[attrs['spec_hash']][0].values[0]:.2%}")
        row += [format_cost("flops", attrs.get("flops")), format_cost("params", attrs.get("params"))]
        if measured:
            row.append(format_cost("latency", attrs.get("latency_ms")))
        rows.append([*row, str(len(spec.blocks))])
    return title, columns, rows


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


def sampler_line(record: SearchRecord) -> str:
    """Which sampler ran; for the predictor's, how many candidates it chose and how well it ranked them."""
    if record.sampler != "predictor":
        return f"sampler: {record.sampler}"
    said = [t.user_attrs["sampler"] for t in record.study.get_trials(deepcopy=False) if "sampler" in t.user_attrs]
    ranked = ", ".join(f"{rho:+.2f} at rung {rung} ({n} candidates)" for rung, n, rho in record.prediction_quality())
    return (f"sampler: predictor, {sum(s == 'predictor' for s in said)} of {len(said)} sampled candidates (the "
            "evolution sampler proposed the others while rung 0 held too few trainings to learn from); its "
            "predictions, made before training, against the accuracy measured: "
            + (f"Spearman rho {ranked}" if ranked else "not yet (fewer than 3 of its candidates trained)"))


def hypervolume_line(record: SearchRecord) -> str:
    """The front's hypervolume, or why there is none (no budget on the objective's cost for its reference)."""
    value = record.hypervolume()
    if value is None:
        return (f"hypervolume: none (no --budget on the objective's cost, {record.objective}, to put the reference "
                "point at)")
    rung = f"rung {record.top}" if len(record.rungs) > 1 else "the proxy"
    return (f"hypervolume of the front: {value:.4f} (val accuracy at {rung} x {record.unit} as a share of the "
            f"budget {record.budget:g} {record.unit}; reference: the budget, accuracy 0; 1 is the ideal)")


def print_report(record: SearchRecord, run_dir: Path, stream=None, wide: bool = False) -> None:
    """Write trials.csv, pareto/*.yaml and pareto.png and print the front table (all its columns when `wide`) and
    a summary."""
    from bsnas.report import write_report
    from bsnas.search.slots import count_trials

    paths = write_report(record, run_dir)
    console = table_console(stream)
    print_table(console, *front_columns(record), wide=wide)
    if line := zoo_line(record):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(hypervolume_line(record), highlight=False, soft_wrap=True)
    console.print(sampler_line(record), highlight=False, soft_wrap=True)
    counts = count_trials(record.study)
    share = counts["feasible"] / counts["complete"] if counts["complete"] else 0.0
    trainings = sum(len(r) for r in record.trainings().values())
    console.print(f"{plural(counts['complete'], 'complete trial')} ({share:.0%} within budget, "
                  f"{counts['trained']} trained, {plural(counts['duplicate'], 'duplicate')} reused, "
                  f"{counts['fail']} failed), {plural(trainings, 'training')} over "
                  f"{plural(len(record.rungs), 'rung')}; "
                  f"wrote {paths.csv}, {paths.plot} and {plural(len(paths.exported), 'spec')} in {paths.pareto_dir}/",
                  highlight=False, soft_wrap=True)
