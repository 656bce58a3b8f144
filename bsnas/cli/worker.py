"""`bsnas worker RUN --storage URL`: join a search's study from this machine and train its queued trials."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from bsnas.text import plural

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("worker", help="join a search running on a shared storage (another machine)")
    parser.add_argument("run_name", metavar="RUN", help="the search's --name")
    parser.add_argument("--storage", required=True,
                        help="the study's Optuna RDB URL, e.g. postgresql://user:password@host/database")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes here (default: one single-thread worker per core on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cores/workers)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the search's)")
    parser.add_argument("--data-root", default=None, help="this machine's dataset folder (default: the search's)")
    parser.add_argument("--timeout", default=None, help="stop taking trials after this long: 90s, 20m, 2h")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bsnas.cli.search import parse_duration
    from bsnas.search.config import default_workers
    from bsnas.search.evaluator import ProxyEvaluator
    from bsnas.search.slots import count_trials
    from bsnas.search.storage import redact_url
    from bsnas.search.study import join_study
    from bsnas.search.workers import run_workers

    changes = {key: value for key, value in (("threads", args.threads), ("device", args.device),
                                             ("data_root", args.data_root)) if value is not None}
    config, space = join_study(args.run_name, args.storage, timeout=parse_duration(args.timeout) if args.timeout
                               else None, **changes)
    workers = args.workers if args.workers is not None else default_workers(config.device)
    config = dataclasses.replace(config, workers=workers)
    data = ProxyEvaluator(config.dataset, config.data_root).data()  # this machine must have the data
    space = space.for_data(data.in_channels, data.image_size, data.num_classes)
    print(f"bsnas worker: joined {args.run_name} on {redact_url(args.storage)} with {plural(workers, 'worker')}",
          file=sys.stderr)
    result = run_workers(config, space)
    counts = count_trials(result.study)
    print(f"bsnas worker: the study holds {counts['slots']} of {config.trials} trials", file=sys.stderr)
    if not result.ok:
        print(f"bsnas: error: {result.reason}", file=sys.stderr)
        return 1
    return 0
