"""`bsnas search --budget 100MFLOPs`: a multi-objective architecture search in an Optuna storage, resumable."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bsnas.errors import BsnasError
from bsnas.report.live import SearchProgress
from bsnas.report.tables import print_report
from bsnas.search.budget import check_budgets, parse_budget
from bsnas.search.config import (
    DEFAULT_ETA,
    DEFAULT_RUNGS,
    LATENCY_BACKENDS,
    MULTI_FIDELITY_IMAGES,
    SAMPLERS,
    SearchConfig,
)
from bsnas.search.storage import HEARTBEAT_S, redact_url
from bsnas.search.study import load_record
from bsnas.search.workers import default_workers, prepare_search, run_workers
from bsnas.space.decode import SearchSpace
from bsnas.space.load import SHIPPED_SPACES, resolve_space
from bsnas.text import plural
from bsnas.train.config import PRESETS
from bsnas.train.data import DATASETS

PROXY = PRESETS["proxy"]

__all__ = ["add_parser", "run", "parse_duration"]

DEFAULT_SPACE = "mobilenet"
DEFAULT_TRIALS = 50


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


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search architectures under cost budgets; writes runs/<RUN>/")
    parser.add_argument("--budget", action="append", required=True, metavar="COST",
                        help="upper limit, repeatable: 100MFLOPs, 1.5Mparams, 4ms, 500us (k/M/G prefixes)")
    parser.add_argument("--space", default=DEFAULT_SPACE,
                        help=f"search-space YAML file, or a shipped space: {', '.join(SHIPPED_SPACES)} "
                             f"(default {DEFAULT_SPACE})")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help=f"one of {', '.join(DATASETS)} (default fashion-mnist)")
    parser.add_argument("--data-root", default=None, help="folder with the dataset files")
    limit = parser.add_argument_group("how long")
    limit.add_argument("--trials", type=int, default=None,
                       help="complete trials of the study; a re-run resumes up to this count "
                            f"(default {DEFAULT_TRIALS} without --timeout)")
    limit.add_argument("--timeout", default=None, help="stop starting trials after this long: 90s, 20m, 2h")
    parser.add_argument("--objective", choices=("flops", "latency", "params"), default="flops",
                        help="the cost minimized beside validation accuracy (default flops)")
    parser.add_argument("--latency-backend", choices=LATENCY_BACKENDS, default="torch",
                        help="how latency (objective or budget) is measured: torch, or onnxruntime on the exported "
                             "model as a CPU deployment runs it (needs bsnas[onnx]; default torch)")
    parser.add_argument("--latency-table", default=None, metavar="FILE",
                        help="predict latency from this machine's table (`bsnas latency build`, same backend and "
                             "threads) instead of measuring every candidate")
    parser.add_argument("--sampler", choices=SAMPLERS, default="auto",
                        help="Optuna sampler; auto (default): nsga2 with --rungs 1, evolution with more rungs (half "
                             "random samples across the budget, half mutations of the best training of a cost bin at "
                             "the top rungs)")
    parser.add_argument("--population", type=int, default=16, help="NSGA-II population size (default 16)")
    parser.add_argument("--name", default=None, help="run name (default search-<space>-<first budget>)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///runs/<RUN>/study.db)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes on this machine (default: one single-thread worker per core on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cores/workers)")
    parser.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    fidelity = parser.add_argument_group("fidelity (rung 0 is the proxy; rung r trains eta**r times longer)")
    fidelity.add_argument("--rungs", type=int, default=DEFAULT_RUNGS,
                          help=f"fidelity rungs; 1 is a single-fidelity search (default {DEFAULT_RUNGS})")
    fidelity.add_argument("--eta", type=int, default=DEFAULT_ETA,
                          help=f"each rung trains eta times longer; the top 1/eta of every cost bin is promoted "
                               f"(default {DEFAULT_ETA})")
    fidelity.add_argument("--proxy-epochs", type=int, default=None,
                          help=f"rung 0's training epochs (default: proxy preset, {PROXY.epochs})")
    fidelity.add_argument("--proxy-images", type=int, default=None,
                          help=f"rung 0's training images (default: the proxy preset's {PROXY.train_subset} with "
                               f"--rungs 1, {MULTI_FIDELITY_IMAGES} with more rungs)")
    fidelity.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                          help="rung trainings with the final training's crop and flip (default: on with rungs, off "
                               "with --rungs 1)")
    fidelity.add_argument("--proxy-val", type=int, default=None,
                          help=f"rung 0 scores a stratified subset of this many validation images (default: proxy "
                               f"preset, {PROXY.val_subset or 'all'})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto for proxy training (default cpu)")
    parser.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                        help="do not enqueue the zoo models of the space's family first")
    parser.add_argument("--zoo", default=None, metavar="REGEX", help="warm-start only the zoo models matching REGEX")
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, metavar="SECONDS",
                        help=f"workers beat every SECONDS; a trial whose worker missed four beats is failed and run "
                             f"again (default {HEARTBEAT_S})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run)


def _default_name(space: str, budget: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"search-{Path(space).stem}-{budget}")


def run(args: argparse.Namespace) -> int:
    budgets = tuple(check_budgets([parse_budget(text) for text in args.budget]))
    timeout = parse_duration(args.timeout) if args.timeout else None
    trials = args.trials if args.trials is not None else (None if timeout else DEFAULT_TRIALS)
    name = args.name or _default_name(args.space, args.budget[0])
    workers = args.workers if args.workers is not None else default_workers(args.device)
    config = SearchConfig(name=name, space_file=args.space, budgets=budgets, objective=args.objective,
                          latency_backend=args.latency_backend, latency_table=args.latency_table,
                          sampler=args.sampler, trials=trials, timeout=timeout, storage=args.storage,
                          runs_dir=args.runs_dir, workers=workers, seed=args.seed, dataset=args.dataset,
                          data_root=args.data_root, proxy_epochs=args.proxy_epochs, proxy_images=args.proxy_images,
                          proxy_val=args.proxy_val, device=args.device, warm_start=args.warm_start,
                          zoo_pattern=args.zoo, population=args.population, threads=args.threads,
                          heartbeat_s=args.heartbeat, rungs=args.rungs, eta=args.eta,
                          augment=args.augment)
    started = time.perf_counter()
    space, study, enqueued = prepare_search(config, resolve_space(args.space))  # every check before any file
    _save_run_files(config, space)
    budget_text = ", ".join(str(b) for b in budgets)
    print(f"bsnas search {name}: space {args.space}, budget {budget_text}, objective {args.objective}, "
          f"{config.sampler_name}, {plural(workers, 'worker')}, storage {redact_url(config.storage_url)}",
          file=sys.stderr)
    if enqueued:
        print(f"warm start: {plural(len(enqueued), 'zoo model')} within {budget_text} in the first slots",
              file=sys.stderr)
    record = load_record(name, config.storage_url)
    with SearchProgress(record, trials, timeout, args.quiet) as progress:
        result = run_workers(config, space, on_update=progress)
    print_report(record, config.run_dir)
    if not result.ok:
        print(f"bsnas: error: the search {name} stopped after {time.perf_counter() - started:.0f} s: {result.reason}; "
              "run the same command again to go on", file=sys.stderr)
        return 1
    return 0


def _save_run_files(config: SearchConfig, space: SearchSpace) -> None:
    """The run directory keeps the resolved config (no secrets) and a copy of the search space."""
    import yaml

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "search.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / "space.yaml").write_text(yaml.safe_dump(space.raw, sort_keys=False))
