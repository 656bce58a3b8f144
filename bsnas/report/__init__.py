"""Reports of a search: trials.csv, pareto/*.yaml, pareto.png and tables, written from the study alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bsnas.report.plots import plot_front
from bsnas.report.trials import export_front, write_trials_csv
from bsnas.search.front import SearchRecord

__all__ = ["ReportPaths", "write_report"]


@dataclass
class ReportPaths:
    csv: Path
    pareto_dir: Path
    plot: Path
    exported: list[Path]


def write_report(record: SearchRecord, run_dir: str | Path) -> ReportPaths:
    """trials.csv, pareto/*.yaml and pareto.png under `run_dir`."""
    run_dir = Path(run_dir)
    exported = export_front(record, run_dir / "pareto")  # first: it refuses trial names that are not file names
    return ReportPaths(csv=write_trials_csv(record, run_dir / "trials.csv"), pareto_dir=run_dir / "pareto",
                       plot=plot_front(record, run_dir / "pareto.png"), exported=exported)
