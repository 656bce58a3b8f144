"""`bsnas export RUN --pick knee -o arch.yaml`: one ArchSpec of a search, for `bsnas train` and `build_model`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bsnas.search.budget import format_cost
from bsnas.search.study import load_record

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write one architecture of a search as ArchSpec YAML")
    parser.add_argument("run_name", metavar="RUN", help="the search's --name")
    parser.add_argument("--pick", default="knee",
                        help="max-acc, knee (default), min-cost or trial:N")
    parser.add_argument("-o", "--output", default=None, help="output YAML (default runs/<RUN>/export.yaml)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///runs/<RUN>/study.db)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bsnas.arch.files import save_spec
    from bsnas.search.front import pick, trial_number, trial_spec
    from bsnas.train.rundir import run_path

    trial = pick(load_record(args.run_name, args.storage, args.runs_dir), args.pick)
    spec = trial_spec(trial)
    output = Path(args.output) if args.output else run_path(args.runs_dir, args.run_name) / "export.yaml"
    save_spec(spec, output)
    attrs = trial.user_attrs
    print(f"{output}: trial {trial_number(trial)} ({spec.name}), val accuracy {trial.values[0]:.2%}, "
          f"{format_cost('flops', attrs.get('flops'))}, {format_cost('params', attrs.get('params'))}", file=sys.stderr)
    print(output)
    return 0
