"""A peer of `bsnas search` that no one here wrote: Syne Tune's MOASHA driving bsnas's own rung trainings.

    python benchmarks/moasha_peer.py --budget 20MFLOPs --timeout 300 --out DIR [--space mobilenet]
        [--dataset fashion-mnist] [--data-root DIR] [--rungs 5] [--eta 3] [--seed 0] [--workers 2] [--threads 1]
        [--proxy-images N] [--proxy-epochs E] [--proxy-val V] [--device cpu]

Needs the `bench` extra (`pip install -e '.[bench]'`: syne-tune). MOASHA (Schmucker et al. 2021; Syne Tune's
`MOASHA`, non-dominated sorting with an epsilon-net within each rung, see `RankedNonDominatedPriority`) is used
in-process as an ask/tell scheduler: it suggests a configuration of the space (its choices as a flat config
space, `SearchSpace.parameters`; the parameters a point does not use are ignored when it is decoded), the
configuration is costed exactly as bsnas costs it (`measure_candidate`: shrunk into the budget when the space
allows, rejected without training when still over), and trained at rung 0 with bsnas's `ProxyEvaluator` (the
search's ladder, seeds and augmentation). Each result is reported to MOASHA with its rung level (eta**rung); when
MOASHA continues the trial, it is trained at the next rung from scratch, as bsnas promotes, right away on the
worker that became free. `--workers` processes with `--threads` torch threads each train, as
`bsnas search --workers --threads` does. No training starts after `--timeout` seconds; then the running ones are
stopped (they would not count).

Writes DIR/peer.json (Syne Tune's version and the settings) and DIR/trainings.jsonl, one line per finished
training as it finishes: trial, rung, spec, spec_hash, flops, params, cost (MFLOPs), val_accuracy, status,
train_seconds, completed (Unix time).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from syne_tune.backend.trial_status import Trial
from syne_tune.config_space import choice, loguniform, randint, uniform
from syne_tune.optimizer.scheduler import SchedulerDecision
from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort

from bsnas.arch.spec import ArchSpec, spec_hash, spec_to_dict
from bsnas.errors import BsnasError, Terminated
from bsnas.search.budget import Budget, check_budgets, parse_budget
from bsnas.search.candidate import Candidate, measure_candidate
from bsnas.search.config import SearchConfig, cost_value
from bsnas.search.evaluator import Evaluation, ProxyEvaluator
from bsnas.space.decode import SearchSpace
from bsnas.space.load import resolve_space

__all__ = ["Job", "MoashaPeer", "RankedNonDominatedPriority", "config_space", "drive", "main"]

LEVEL = "rung_level"  # MOASHA's time attribute: eta**rung, the rung's training length in units of rung 0's
MAX_REJECTIONS = 10_000  # over-budget suggestions in a row before the space is declared unable to meet the budget


def config_space(space: SearchSpace) -> tuple[dict, dict[str, dict[str, object]]]:
    """Syne Tune's config space of a bsnas space, and the label -> value table of each categorical parameter
    (Syne Tune wants categories of one type; a space mixes them, e.g. [null, 576] or [1, 2.5], so they go by
    their repr)."""
    domains, labels = {}, {}
    for name, field in space.parameters().items():
        if field.values is not None or field.step:
            values = field.enumerate()
            labels[name] = {repr(value): value for value in values}
            domains[name] = choice(list(labels[name]))
        elif field.is_int:
            domains[name] = randint(field.low, field.high)
        else:
            domains[name] = (loguniform if field.log else uniform)(field.low, field.high)
    return domains, labels


def _plain(value):
    return value.item() if hasattr(value, "item") else value  # numpy scalars to Python's


class RankedNonDominatedPriority(MOPriority):
    """MOASHA's ranking as published: each result's place in the non-dominated sort (epsilon-net within each front,
    error first). Syne Tune 0.16.0's `NonDominatedPriority` returns the sorted order of the indices, which MOASHA
    reads as each result's priority: a new result was then ranked by the recording index of the worst result of
    its rung, not by its own place (tests/test_moasha_peer.py shows both)."""

    def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
        order = nondominated_sort(objectives, dim=0)
        ranks = np.empty(len(order), dtype=int)
        ranks[order] = np.arange(len(order))
        return ranks


@dataclass(frozen=True)
class Job:
    """One training to run: `candidate` of MOASHA's `trial` at `rung`."""

    trial: object  # syne_tune.backend.trial_status.Trial
    candidate: Candidate
    rung: int


class MoashaPeer:
    """MOASHA over a bsnas space as an ask/tell object: `ask` gives the next configuration within the budgets
    (over-budget ones rejected without training), `tell` a training's accuracy at a rung and says whether MOASHA
    continues the trial at the next rung."""

    def __init__(self, space: SearchSpace, budgets: tuple[Budget, ...], rungs: int, eta: int, seed: int,
                 objective: str = "flops"):
        np.random.seed(seed)  # MOASHA draws configurations and brackets from numpy's global generator
        domains, self.labels = config_space(space)
        self.scheduler = MOASHA(domains, metrics=["error", "cost"], do_minimize=True, time_attr=LEVEL,
                                max_t=eta ** (rungs - 1), grace_period=1, reduction_factor=eta, random_seed=seed,
                                multiobjective_priority=RankedNonDominatedPriority())
        self.space, self.budgets, self.rungs, self.eta, self.objective = space, budgets, rungs, eta, objective
        self.asked = 0
        self.rejected = 0

    def ask(self) -> Job:
        """The next configuration MOASHA suggests that fits the budgets, as a rung-0 job."""
        for _ in range(MAX_REJECTIONS):
            config = self.scheduler.suggest().config
            params = {name: self.labels[name][value] if name in self.labels else _plain(value)
                      for name, value in config.items()}
            candidate = measure_candidate(self.space, self.space.spec_from_params(params), params, self.budgets)
            if not candidate.feasible:
                self.rejected += 1
                continue
            trial = Trial(trial_id=self.asked, config=config, creation_time=datetime.datetime.now())
            candidate.spec = dataclasses.replace(candidate.spec, name=f"{self.space.name}_t{self.asked}")
            self.asked += 1
            self.scheduler.on_trial_add(trial)
            return Job(trial, candidate, 0)
        raise BsnasError(f"{MAX_REJECTIONS} configurations in a row were over the budget; raise the budget.")

    def cost(self, job: Job) -> float:
        return cost_value(self.objective, job.candidate.cost(self.objective))

    def tell(self, job: Job, accuracy: float | None) -> Job | None:
        """Report the job's validation accuracy (None: its training failed); the job at the next rung when MOASHA
        continues the trial, else None."""
        if accuracy is not None:
            decision = self.scheduler.on_trial_result(
                job.trial, {LEVEL: self.eta ** job.rung, "error": 1.0 - accuracy, "cost": self.cost(job)})
            if decision == SchedulerDecision.CONTINUE and job.rung + 1 < self.rungs:
                return Job(job.trial, job.candidate, job.rung + 1)
        self.scheduler.on_trial_remove(job.trial)
        return None


def drive(peer: MoashaPeer, submit: Callable[[Job], None], next_result: Callable[[float], tuple | None],
          slots: int, deadline: float, on_result: Callable[[Job, Evaluation], None],
          trials: int | None = None) -> None:
    """ASHA's asynchronous loop: keep `slots` trainings running; a freed slot trains the finished trial at the
    next rung when MOASHA continues it, else a new configuration. No job starts after `deadline` (Unix time) or,
    with `trials`, after that many configurations; `next_result(timeout)` gives (job, evaluation) or None. An
    architecture is trained once per rung: a repeat takes the result it had."""
    known: dict[tuple[str, int], Evaluation] = {}
    running = 0
    ready: list[Job] = []

    def start(job: Job) -> None:
        nonlocal running
        digest = spec_hash(job.candidate.spec)
        if (digest, job.rung) in known:
            follow = peer.tell(job, _accuracy(known[digest, job.rung]))
            if follow is not None:
                ready.append(follow)
            return
        submit(job)
        running += 1

    while True:
        while running < slots and time.time() < deadline:
            if ready:
                start(ready.pop(0))
            elif trials is None or peer.asked < trials:
                start(peer.ask())
            else:
                break
        if running == 0 or time.time() >= deadline:
            return  # nothing left to train, or what still runs would finish after the deadline and not count
        finished = next_result(min(1.0, deadline - time.time()))
        if finished is None:
            continue
        job, evaluation = finished
        running -= 1
        known[spec_hash(job.candidate.spec), job.rung] = evaluation
        on_result(job, evaluation)
        follow = peer.tell(job, _accuracy(evaluation))
        if follow is not None:
            ready.append(follow)


def _accuracy(evaluation: Evaluation) -> float | None:
    return evaluation.accuracy if evaluation.status == "completed" else None


_EVALUATE: ProxyEvaluator | None = None


def _start_worker(evaluator: ProxyEvaluator, threads: int) -> None:
    import torch

    global _EVALUATE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool
    torch.set_num_threads(threads)
    _EVALUATE = evaluator
    evaluator.data()


def _train(spec: ArchSpec, rung: int) -> Evaluation:
    return _EVALUATE(spec, rung)


def _record(job: Job, evaluation: Evaluation, cost: float) -> dict:
    spec = job.candidate.spec
    return {"trial": job.trial.trial_id, "rung": job.rung, "spec": spec_to_dict(spec), "spec_hash": spec_hash(spec),
            "flops": job.candidate.flops, "params": job.candidate.params, "cost": cost,
            "val_accuracy": evaluation.accuracy, "status": evaluation.status, "train_seconds": evaluation.seconds,
            "completed": time.time()}


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", action="append", required=True)
    parser.add_argument("--timeout", type=float, required=True, help="seconds: no training starts after them")
    parser.add_argument("--out", required=True, help="folder for peer.json and trainings.jsonl")
    parser.add_argument("--space", default="mobilenet")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--rungs", type=int, default=None, help="default: bsnas search's")
    parser.add_argument("--eta", type=int, default=None, help="default: bsnas search's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--proxy-images", type=int, default=None)
    parser.add_argument("--proxy-epochs", type=int, default=None)
    parser.add_argument("--proxy-val", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import syne_tune

    from bsnas.search.config import DEFAULT_ETA, DEFAULT_RUNGS

    signal.signal(signal.SIGTERM, _terminate)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = tuple(check_budgets([parse_budget(text) for text in args.budget]))
    config = SearchConfig(name=out.name, space_file=args.space, budgets=budgets, trials=None, timeout=args.timeout,
                          runs_dir=str(out.parent), seed=args.seed, dataset=args.dataset, data_root=args.data_root,
                          proxy_epochs=args.proxy_epochs, proxy_images=args.proxy_images, proxy_val=args.proxy_val,
                          device=args.device, rungs=args.rungs or DEFAULT_RUNGS, eta=args.eta or DEFAULT_ETA,
                          workers=args.workers, threads=args.threads, warm_start=False)
    evaluator = ProxyEvaluator.for_search(config)
    data = evaluator.data()
    space = resolve_space(args.space).for_data(data.in_channels, data.image_size, data.num_classes)
    peer = MoashaPeer(space, budgets, config.rungs, config.eta, config.seed)
    (out / "peer.json").write_text(json.dumps({"syne_tune": syne_tune.__version__, "scheduler": "MOASHA",
                                               "settings": config.to_dict(), "parameters": len(peer.labels)}))
    print(f"Syne Tune {syne_tune.__version__} MOASHA: {len(space.parameters())} parameters, {config.rungs} rungs "
          f"(eta {config.eta}), {args.workers} workers x {args.threads} thread(s), {args.timeout:g} s",
          file=sys.stderr)
    deadline = time.time() + args.timeout
    results: queue.Queue = queue.Queue()
    pool = multiprocessing.get_context("spawn").Pool(args.workers, _start_worker, (evaluator, args.threads))
    try:
        with (out / "trainings.jsonl").open("a") as log:
            def submit(job: Job) -> None:
                pool.apply_async(_train, (job.candidate.spec, job.rung), callback=lambda e: results.put((job, e)),
                                 error_callback=lambda error: results.put((job, Evaluation(0.0, 0.0, "error",
                                                                                           str(error)))))

            def next_result(timeout: float):
                try:
                    return results.get(timeout=timeout)
                except queue.Empty:
                    return None

            def on_result(job: Job, evaluation: Evaluation) -> None:
                log.write(json.dumps(_record(job, evaluation, peer.cost(job))) + "\n")
                log.flush()

            drive(peer, submit, next_result, args.workers, deadline, on_result)
    except Terminated:
        print("MOASHA: terminated", file=sys.stderr)
        return 143
    finally:
        pool.terminate()
        pool.join()
    print(f"MOASHA: {peer.asked} configurations trained, {peer.rejected} over the budget rejected", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
