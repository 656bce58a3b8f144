"""`bsnas search --budget 100MFLOPs`: a multi-objective architecture search in an Optuna storage, resumable."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bsnas.errors import BsnasError, StorageFault
from bsnas.names import name_from
from bsnas.report.live import SearchProgress
from bsnas.report.tables import print_report
from bsnas.search.budget import COST_KINDS, check_budgets, parse_budget
from bsnas.search.config import DEFAULT_TRIALS, LATENCY_BACKENDS, MULTI_FIDELITY_IMAGES, SAMPLERS, SearchConfig
from bsnas.search.storage import empty_sqlite_file, redact_url
from bsnas.search.study import load_record
from bsnas.search.workers import prepare_search, run_workers
from bsnas.space.decode import SearchSpace
from bsnas.space.load import SHIPPED_SPACES, resolve_space
from bsnas.text import plural
from bsnas.train.config import PRESETS
from bsnas.train.data import DATASETS, DOWNLOAD_HELP, fetch_data
from bsnas.train.rundir import make_run_dir

PROXY = PRESETS["proxy"]

__all__ = ["add_parser", "config_from_args", "run", "parse_duration"]


def parse_duration(text: str) -> float:
    """`90s`, `20m`, `2h`, `1h30m` or plain seconds to seconds."""
    import re

    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise BsnasError(f"--timeout {text!r} is not a duration such as 90s, 20m, 2h or 1h30m.")
    hours, minutes, seconds = (float(v) if v else 0.0 for v in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise BsnasError(f"--timeout {text!r} must be longer than zero.")
    return total


def _default(field: str):
    """SearchConfig's default of `field`: the one source of the search's defaults, for the library and the CLI."""
    return SearchConfig.__dataclass_fields__[field].default


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search architectures under cost budgets; writes runs/<RUN>/")
    parser.add_argument("--budget", action="append", required=True, metavar="COST",
                        help="upper limit, repeatable: 100MFLOPs, 1.5Mparams, 4ms, 500us (k/M/G prefixes)")
    parser.add_argument("--space", dest="space_file",
                        help=f"search-space YAML file, or a shipped space: {', '.join(SHIPPED_SPACES)} "
                             f"(default {_default('space_file')})")
    parser.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default {_default('dataset')})")
    parser.add_argument("--data-root", help="folder with the dataset files")
    parser.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    limit = parser.add_argument_group("how long")
    limit.add_argument("--trials", type=int,
                       help=f"trials of the study; a re-run resumes up to this count (default {DEFAULT_TRIALS} "
                            "without --timeout)")
    limit.add_argument("--timeout", help="stop starting trials after this long: 90s, 20m, 2h")
    parser.add_argument("--objective", choices=COST_KINDS,
                        help=f"the cost minimized beside validation accuracy (default {_default('objective')})")
    parser.add_argument("--latency-backend", choices=LATENCY_BACKENDS,
                        help="how latency (objective or budget) is measured: torch, or onnxruntime on the exported "
                             "model as a CPU deployment runs it (needs bsnas[onnx]; default "
                             f"{_default('latency_backend')})")
    parser.add_argument("--latency-table", metavar="FILE",
                        help="predict latency from this machine's table (`bsnas latency build`, same backend and "
                             "threads) instead of measuring every candidate")
    parser.add_argument("--sampler", choices=SAMPLERS,
                        help="Optuna sampler; auto (default): nsga2 with --rungs 1, evolution with more rungs (half "
                             "random samples across the budget, half mutations of the best training of a cost bin at "
                             "the top rungs); predictor: the proposal a performance predictor fitted on every "
                             "training rates best, within a cost bin in turn")
    parser.add_argument("--population", type=int,
                        help=f"NSGA-II population size (default {_default('population')})")
    parser.add_argument("--name", help="run name (default search-<space>-<first budget>)")
    parser.add_argument("--runs-dir", help=f"parent folder of run directories (default {_default('runs_dir')})")
    parser.add_argument("--storage", help="Optuna RDB URL (default sqlite:///runs/<RUN>/study.db)")
    parser.add_argument("--workers", type=int,
                        help="worker processes on this machine (default: one single-thread worker per core on CPU)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default cores/workers)")
    parser.add_argument("--seed", type=int, help=f"sampler and training seed (default {_default('seed')})")
    fidelity = parser.add_argument_group("fidelity (rung 0 is the proxy; rung r trains eta**r times longer)")
    fidelity.add_argument("--rungs", type=int,
                          help=f"fidelity rungs; 1 is a single-fidelity search (default {_default('rungs')})")
    fidelity.add_argument("--eta", type=int,
                          help="each rung trains eta times longer; the top 1/eta of every cost bin is promoted "
                               f"(default {_default('eta')})")
    fidelity.add_argument("--proxy-epochs", type=int,
                          help=f"rung 0's training epochs (default: proxy preset, {PROXY.epochs})")
    fidelity.add_argument("--proxy-images", type=int,
                          help=f"rung 0's training images (default: the proxy preset's {PROXY.train_subset} with "
                               f"--rungs 1, {MULTI_FIDELITY_IMAGES} with more rungs)")
    fidelity.add_argument("--augment", action=argparse.BooleanOptionalAction,
                          help="rung trainings with the final training's crop and flip (default: on with rungs, off "
                               "with --rungs 1)")
    fidelity.add_argument("--proxy-val", type=int,
                          help=f"rung 0 scores a stratified subset of this many validation images (default: proxy "
                               f"preset, {PROXY.val_subset or 'all'})")
    parser.add_argument("--device", help=f"cpu, cuda or auto for proxy training (default {_default('device')})")
    parser.add_argument("--no-warm-start", dest="warm_start", action="store_false", default=None,
                        help="do not enqueue the zoo models of the space's family first")
    parser.add_argument("--zoo", dest="zoo_pattern", metavar="REGEX",
                        help="warm-start only the zoo models matching REGEX")
    parser.add_argument("--heartbeat", dest="heartbeat_s", type=int, metavar="SECONDS",
                        help="workers beat every SECONDS; a trial whose worker missed four beats is failed and run "
                             f"again (default {_default('heartbeat_s')})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--wide", action="store_true", help="the front table with every column on a narrow terminal")
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of a command line: the flags given, SearchConfig's defaults for the rest."""
    given = {field: getattr(args, field) for field in SearchConfig.__dataclass_fields__
             if getattr(args, field, None) is not None}
    given["budgets"] = tuple(check_budgets([parse_budget(text) for text in args.budget]))
    given["timeout"] = parse_duration(args.timeout) if args.timeout else None
    given.setdefault("name", _default_name(args.space_file or _default("space_file"), args.budget[0]))
    return SearchConfig(**given)


def _default_name(space: str, budget: str) -> str:
    return name_from(f"search-{Path(space).stem}-{budget}")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    started = time.perf_counter()
    _refuse_a_lost_study(config)
    if args.download:
        fetch_data(config.dataset, config.data_root)
    space, study, enqueued = prepare_search(config, resolve_space(config.space_file))  # every check before any file
    _save_run_files(config, space)
    budget_text = ", ".join(str(b) for b in config.budgets)
    print(f"bsnas search {config.name}: space {config.space_file}, budget {budget_text}, objective "
          f"{config.objective}, {config.sampler_name}, {plural(config.workers, 'worker')}, storage "
          f"{redact_url(config.storage_url)}", file=sys.stderr)
    if enqueued:
        print(f"warm start: {plural(len(enqueued), 'zoo model')} within {budget_text} in the first slots",
              file=sys.stderr)
    record = load_record(config.name, config.storage_url)
    with SearchProgress(record, config.trials, config.timeout, args.quiet) as progress:
        result = run_workers(config, space, on_update=progress)
    print_report(record, config.run_dir, wide=args.wide)
    if not result.ok:
        print(f"bsnas: error: the search {config.name} stopped after {time.perf_counter() - started:.0f} s: "
              f"{result.reason}; run the same command again to go on", file=sys.stderr)
        return 1
    return 0


def _refuse_a_lost_study(config: SearchConfig) -> None:
    """A search ran in this run folder (its search.yaml is written after its study) but its SQLite file is now empty:
    its trials are lost, and opening the file would silently start a new study."""
    file = empty_sqlite_file(config.storage_url)
    if file and (config.run_dir / "search.yaml").is_file():
        raise StorageFault(f"{file} is empty (0 bytes), but {config.run_dir / 'search.yaml'} shows that a search ran "
                           "there: its trials are lost. Restore the file from a backup and run the same command again, "
                           "or delete both files to start this search afresh.")


def _save_run_files(config: SearchConfig, space: SearchSpace) -> None:
    """The run directory keeps the resolved config (no secrets) and a copy of the search space."""
    import yaml

    run_dir = make_run_dir(config.run_dir)
    (run_dir / "search.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space.raw, sort_keys=False))
