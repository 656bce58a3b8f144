"""Search speed (numbers, not assertions).

    python benchmarks/bench_search.py check [--space FILE] [--budget 100MFLOPs] [--candidates 2000]
        What rejecting a candidate costs: decoding a point and counting its FLOPs/params from the spec
        (`budget.spec_cost`), versus building the model and counting with hooks (`profile.count_flops`).
        Then whole infeasible Optuna trials in an SQLite study (sampling with ~60 parameter writes,
        user attributes, constraints): median wall time per trial.
    python benchmarks/bench_search.py throughput [--budget 30MFLOPs] [--minutes 10] [--workers W]
        A real search on Fashion-MNIST with the default proxy (preset `proxy`: one epoch on 10k images,
        scored on the 6k validation split) for a fixed time: proxy evaluations per hour, feasible share.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bsnas.budget import parse_budget, spec_cost
from bsnas.build import build_model
from bsnas.profile import count_flops
from bsnas.search import SearchConfig, count_trials, default_workers, run_search
from bsnas.space import load_space


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def check(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    space = load_space(args.space).for_data(1, 10)
    rng = random.Random(0)
    budget = parse_budget(args.budget)
    analytic, over = [], 0
    for _ in range(args.candidates):
        start = time.perf_counter()
        spec, _ = space.random_spec(rng)
        flops, _ = spec_cost(spec, (1, 28, 28))
        analytic.append((time.perf_counter() - start) * 1000)
        over += flops > budget.limit
    print(f"decode + spec_cost: median {statistics.median(analytic):.2f} ms, p95 {_percentile(analytic, .95):.2f} ms "
          f"over {args.candidates} random points ({over / args.candidates:.0%} over {budget} before shrinking)")
    built = []
    for _ in range(min(30, args.candidates)):
        spec, _ = space.random_spec(rng)
        start = time.perf_counter()
        count_flops(build_model(spec), (1, 28, 28))
        built.append((time.perf_counter() - start) * 1000)
    print(f"build_model + count_flops: median {statistics.median(built):.1f} ms, p95 {_percentile(built, .95):.1f} ms "
          f"over {len(built)} random points")
    folder = Path(tempfile.mkdtemp())
    try:
        config = SearchConfig(name="bench", space_file=args.space, budgets=(parse_budget("1kFLOPs"),), trials=40,
                              runs_dir=str(folder), dataset="fashion-mnist", warm_start=False, threads=1,
                              sampler="random")
        import bsnas.search as search

        original = search._check_space_fits
        search._check_space_fits = lambda *a: None  # every candidate is infeasible: time the rejection path
        try:
            result = run_search(config, load_space(args.space), evaluate=lambda spec: 1 / 0)
        finally:
            search._check_space_fits = original
        trials = result.study.trials
        walls = [(t.datetime_complete - t.datetime_start).total_seconds() * 1000 for t in trials]
        checks = [t.user_attrs["check_ms"] for t in trials]
        params = statistics.median(len(t.params) for t in trials)
        print(f"infeasible Optuna trial (SQLite): median {statistics.median(walls):.0f} ms wall "
              f"({statistics.median(checks):.0f} ms inside the objective, {params:.0f} parameters written), "
              f"{len(trials)} trials, none trained")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def throughput(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp())
    workers = args.workers or default_workers()
    try:
        config = SearchConfig(name="bench", space_file=args.space, budgets=(parse_budget(args.budget),),
                              trials=None, timeout=args.minutes * 60, runs_dir=str(folder), workers=workers,
                              warm_start=False, seed=args.seed)
        start = time.perf_counter()
        result = run_search(config, load_space(args.space))
        hours = (time.perf_counter() - start) / 3600
        counts = count_trials(result.study)
        trained = [t for t in result.study.trials if t.user_attrs.get("status") == "trained"]
        flops = [t.user_attrs["flops"] / 1e6 for t in trained]
        seconds = [t.user_attrs["train_seconds"] for t in trained]
        print(f"{workers} worker(s), {args.minutes} min, budget {args.budget}: {counts['complete']} trials, "
              f"{counts['trained']} proxy-trained, {counts['feasible'] / max(counts['complete'], 1):.0%} feasible; "
              f"{counts['trained'] / hours:.0f} proxy evaluations per hour, {counts['complete'] / hours:.0f} trials "
              f"per hour; trained candidates median {statistics.median(flops or [0]):.1f} MFLOPs, "
              f"median {statistics.median(seconds or [0]):.0f} s training each")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("check")
    one.add_argument("--space", default="search_spaces/mobilenet.yaml")
    one.add_argument("--budget", default="100MFLOPs")
    one.add_argument("--candidates", type=int, default=2000)
    one.set_defaults(run=check)
    two = sub.add_parser("throughput")
    two.add_argument("--space", default="search_spaces/mobilenet.yaml")
    two.add_argument("--budget", default="30MFLOPs")
    two.add_argument("--minutes", type=float, default=10)
    two.add_argument("--workers", type=int, default=None)
    two.add_argument("--seed", type=int, default=0)
    two.set_defaults(run=throughput)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
