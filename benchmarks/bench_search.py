"""Search speed (numbers, not assertions).

    python benchmarks/bench_search.py check [--space FILE] [--budget 100MFLOPs] [--candidates 2000]
        What rejecting a candidate costs: decoding a point and costing it from its plan (`bsnas.cost`), against
        building the model and counting with hooks (`bsnas.nn.profile.count_flops`); then whole infeasible Optuna
        trials in an SQLite study (sampling ~64 parameters, user attributes, constraints), none trained.
    python benchmarks/bench_search.py sampler RUN_FOLDER [--repeats 3] [--candidates 10]
        The predictor-guided sampler's own time per candidate (the predictor's refit, the proposals with their costing
        and scoring) on a finished search's storage, against that search's median rung-0 training.
    python benchmarks/bench_search.py throughput [--budget 30MFLOPs] [--minutes 10] [--rungs 1 3] [--eta 3]
        [--proxy-images N] [--workers W]
        Real searches on Fashion-MNIST for a fixed time each, one per --rungs value, one after the other in the same
        run: trainings per hour at rung 0, promotions to each rung above, CPU-seconds per promoted training (its
        training seconds times the worker's threads), feasible share. `--rungs 1` is the single-fidelity search.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch

from bsnas.arch.cost import cost
from bsnas.nn.build import build_model
from bsnas.nn.profile import count_flops
from bsnas.search.budget import Budget, parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.guided import PROPOSALS, REFIT_EVERY, PredictorSampler
from bsnas.search.objective import make_objective
from bsnas.search.predictor import Predictor, rung_trainings
from bsnas.search.promotion import results
from bsnas.search.rungs import open_rung_study, ticket_queue
from bsnas.search.slots import count_trials
from bsnas.search.storage import open_storage
from bsnas.search.study import load_record
from bsnas.search.workers import default_workers, run_search
from bsnas.space import resolve_space


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def check(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    space = resolve_space(args.space).for_data(1, 28, 10)
    rng = random.Random(0)
    budget = parse_budget(args.budget)
    decoding, costing, over = [], [], 0
    for _ in range(args.candidates):
        start = time.perf_counter()
        spec, _ = space.random_spec(rng)
        middle = time.perf_counter()
        flops = cost(spec).flops
        decoding.append((middle - start) * 1000)
        costing.append((time.perf_counter() - middle) * 1000)
        over += flops > budget.limit
    print(f"decode: median {statistics.median(decoding):.3f} ms; bsnas.cost: median "
          f"{statistics.median(costing):.3f} ms, p95 {_percentile(costing, .95):.3f} ms over {args.candidates} "
          "random points "
          f"({over / args.candidates:.0%} over {budget} before shrinking)")
    built = []
    for _ in range(min(30, args.candidates)):
        spec, _ = space.random_spec(rng)
        start = time.perf_counter()
        count_flops(build_model(spec), spec.input_size)
        built.append((time.perf_counter() - start) * 1000)
    print(f"build_model + count_flops: median {statistics.median(built):.1f} ms, p95 {_percentile(built, .95):.1f} ms "
          f"over {len(built)} random points ({statistics.median(built) / statistics.median(costing):.0f}x the cost)")
    _infeasible_trials(space, args.rounds)


def _infeasible_trials(space, rounds: int, trials: int = 20) -> None:
    """Whole infeasible trials through bsnas's objective on an SQLite study (the default storage)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    walls: list[float] = []
    folder = Path(tempfile.mkdtemp())
    try:
        for round_ in range(rounds):
            storage = open_storage(f"sqlite:///{folder / f'{round_}.db'}")
            study = optuna.create_study(storage=storage, directions=["maximize", "minimize"],
                                        sampler=optuna.samplers.RandomSampler(seed=round_))
            objective = make_objective(space, (parse_budget("1kFLOPs"),), "flops", lambda spec, rung: 1 / 0,
                                       ticket_queue(open_rung_study(storage, "bench", 0), storage))
            study.optimize(objective, n_trials=trials)
            assert all(t.user_attrs["status"] == "infeasible" for t in study.trials)  # none trained
            walls += [(t.datetime_complete - t.datetime_start).total_seconds() * 1000 for t in study.trials]
            params = statistics.median(len(t.params) for t in study.trials)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"infeasible Optuna trial (SQLite, {params:.0f} parameters, {rounds}x{trials} trials, none trained): "
          f"median {statistics.median(walls):.0f} ms")


def throughput(args: argparse.Namespace) -> None:
    workers = args.workers or default_workers()
    for rungs in args.rungs:
        folder = Path(tempfile.mkdtemp())
        try:
            config = SearchConfig(name="bench", space_file=args.space, budgets=(parse_budget(args.budget),),
                                  trials=None, timeout=args.minutes * 60, runs_dir=str(folder), workers=workers,
                                  warm_start=False, seed=args.seed, rungs=rungs, eta=args.eta,
                                  proxy_images=args.proxy_images)
            start = time.perf_counter()
            result = run_search(config, resolve_space(args.space))
            hours = (time.perf_counter() - start) / 3600
            record = load_record("bench", config.storage_url)
            counts = count_trials(result.study)
            rung_results = [results(study) for study in record.rungs]
            zero = rung_results[0]
            flops = [t.user_attrs["flops"] / 1e6 for t in zero]
            seconds = [t.user_attrs["train_seconds"] for t in zero]
            line = (f"--rungs {rungs} (eta {args.eta}), {workers} worker(s), {args.minutes:g} min, "
                    f"budget {args.budget}: "
                    f"{counts['complete']} trials, {counts['feasible'] / max(counts['complete'], 1):.0%} feasible; "
                    f"rung 0: {len(zero)} trainings, {len(zero) / hours:.0f} per hour, median "
                    f"{statistics.median(flops or [0]):.1f} MFLOPs and {statistics.median(seconds or [0]):.1f} s each")
            promoted = [t for done in rung_results[1:] for t in done]
            if promoted:
                cpu = [t.user_attrs["train_seconds"] * t.user_attrs["threads"] for t in promoted]
                counts_up = ", ".join(f"rung {r}: {len(done)}" for r, done in enumerate(rung_results) if r)
                line += (f"; promoted: {counts_up}, {statistics.mean(cpu):.0f} CPU-s per promoted training (median "
                         f"{statistics.median(cpu):.0f})")
            print(line, flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def sampler(args: argparse.Namespace) -> None:
    """The predictor-guided sampler's own time per candidate on a finished search's storage (read, never written):
    the proposals with their costing and scoring (the median over `--candidates` candidates in a row, after one to
    warm the caches, as in a running search) and the predictor's refit (encodings cached, once per `REFIT_EVERY`
    trainings), in CPU-seconds of this one-thread process (what they take of a worker, whatever else the machine
    runs), against the median rung-0 training of that search (seconds of a one-thread worker)."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(args.folder)
    record = load_record(folder.name, runs_dir=str(folder.parent))
    config = record.study.user_attrs["config"]
    made = json.loads(results(record.rungs[0])[0].user_attrs["spec"])
    space = resolve_space(config["space_file"]).for_data(made["in_channels"], made["image_size"], made["num_classes"])
    budgets = tuple(Budget(kind, limit) for kind, limit in config["budgets"])
    specs: dict = {}
    trainings = rung_trainings([results(rung) for rung in record.rungs], specs)
    refits, proposing = [], []
    for repeat in range(args.repeats):
        predictor = Predictor(repeat).fit(trainings, specs)  # every encoding made once
        start = time.process_time()
        predictor.fit(trainings, specs)  # a refit, as when new trainings arrive (their encodings aside)
        refits.append(time.process_time() - start)
        guided = PredictorSampler(space, budgets, config["objective"], record.rungs, seed=repeat, min_results=0)
        copy = optuna.create_study(directions=["maximize", "minimize"], sampler=guided)
        for trial in record.study.get_trials(deepcopy=False):
            copy.add_trial(trial)
        space.sample(copy.ask())  # the first candidate: the sampler's predictor fitted, the caches warm
        for _ in range(args.candidates):
            start = time.process_time()
            trial = copy.ask()
            space.sample(trial)  # proposals, costing, scoring (no new training: no refit)
            proposing.append(time.process_time() - start)
            assert guided.trial_attrs(trial.number)["sampler"] == "predictor"
    train = statistics.median(t.user_attrs["train_seconds"] for t in results(record.rungs[0]))
    refit, propose = statistics.median(refits), statistics.median(proposing)
    per_candidate = propose + refit / REFIT_EVERY
    print(f"predictor sampler on {folder} ({len(trainings)} trainings, {PROPOSALS} proposals per candidate, "
          f"{args.repeats}x{args.candidates} candidates), CPU time: proposals and scoring median {propose * 1000:.0f} "
          f"ms, refit median {refit * 1000:.0f} ms once per {REFIT_EVERY} trainings; per candidate "
          f"{per_candidate * 1000:.0f} ms = {per_candidate / train:.1%} of the median rung-0 training ({train:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("check")
    one.add_argument("--space", default="mobilenet")
    one.add_argument("--budget", default="100MFLOPs")
    one.add_argument("--candidates", type=int, default=2000)
    one.add_argument("--rounds", type=int, default=3)
    one.set_defaults(run=check)
    two = sub.add_parser("throughput")
    two.add_argument("--space", default="mobilenet")
    two.add_argument("--budget", default="30MFLOPs")
    two.add_argument("--minutes", type=float, default=10)
    two.add_argument("--workers", type=int, default=None)
    two.add_argument("--seed", type=int, default=0)
    two.add_argument("--rungs", type=int, nargs="+", default=[1, 3])
    two.add_argument("--eta", type=int, default=3)
    two.add_argument("--proxy-images", type=int, default=None)
    two.set_defaults(run=throughput)
    three = sub.add_parser("sampler")
    three.add_argument("folder", metavar="RUN_FOLDER", help="a finished search's run folder (its study.db)")
    three.add_argument("--repeats", type=int, default=3)
    three.add_argument("--candidates", type=int, default=10)
    three.set_defaults(run=sampler)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
