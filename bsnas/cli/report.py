"""`bsnas report RUN`: trials.csv, pareto/*.yaml, pareto.png and the front table of a search, at any time."""

from __future__ import annotations

import argparse
import json

from bsnas.search.slots import count_trials
from bsnas.search.study import load_record

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write the report of a search run (also while it runs)")
    parser.add_argument("run_name", metavar="RUN", help="the search's --name")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///runs/<RUN>/study.db)")
    parser.add_argument("--json", action="store_true", help="print the front as JSON")
    parser.add_argument("--wide", action="store_true",
                        help="every column of the table, however narrow the terminal (a pipe gets them all anyway)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bsnas.report import write_report
    from bsnas.report.tables import print_report
    from bsnas.search.front import knee, trial_number, trial_spec
    from bsnas.train.rundir import run_path

    record = load_record(args.run_name, args.storage, args.runs_dir)
    run_dir = run_path(args.runs_dir, args.run_name)
    if args.json:
        paths = write_report(record, run_dir)
        points = record.front()
        bend = knee(points) if points else None
        front = [{"trial": trial_number(t), "name": trial_spec(t).name, "rung": record.top,
                  "val_accuracy": t.values[0], "cost": t.values[1], "flops": t.user_attrs.get("flops"),
                  "params": t.user_attrs.get("params"), "latency_ms": t.user_attrs.get("latency_ms"),
                  "zoo": t.user_attrs.get("zoo"), "knee": index == bend} for index, t in enumerate(points)]
        print(json.dumps({"run": args.run_name, "counts": count_trials(record.study), "front": front,
                          "hypervolume": record.hypervolume(), "budget": record.budget, "unit": record.unit,
                          "sampler": record.sampler, "prediction_quality": [
                              {"rung": rung, "candidates": n, "spearman": rho}
                              for rung, n, rho in record.prediction_quality()],
                          "csv": str(paths.csv), "plot": str(paths.plot)}, indent=2))
        return 0
    print_report(record, run_dir, wide=args.wide)
    return 0
