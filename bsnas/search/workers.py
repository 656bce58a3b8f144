"""Running a search: worker processes that share one study, and when to stop.

`run_search` checks the data and the space against the budgets, creates (or resumes) the study, enqueues the
zoo warm start and runs `config.workers` workers on the storage (in this process when there is one).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from bsnas.arch.cost import cost
from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.search.budget import Budget, format_cost
from bsnas.search.config import SearchConfig
from bsnas.search.evaluator import Evaluation, ProxyEvaluator
from bsnas.search.objective import make_objective
from bsnas.search.study import count_trials, create_study, enqueue_zoo
from bsnas.space.decode import SearchSpace
from bsnas.space.summary import extreme_point, smallest_cost

__all__ = ["SearchResult", "check_space_fits", "default_workers", "run_search"]


def default_workers(device: str = "cpu") -> int:
    """One single-thread worker per CPU core on CPU; one worker on a GPU."""
    if device.startswith("cuda"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _StopAt:
    """Stop a worker once the study holds `trials` complete trials (counting the ones still running)."""

    def __init__(self, trials: int | None):
        self.trials = trials

    def reached(self, study: optuna.Study, running_self: int = 0) -> bool:
        if self.trials is None:
            return False
        counts = count_trials(study)
        return counts["complete"] + counts["running"] - running_self >= self.trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.reached(study):
            study.stop()


@dataclass
class SearchResult:
    """How a search invocation ended."""

    study: optuna.Study
    enqueued: list[str] = field(default_factory=list)
    failed_workers: int = 0
    seconds: float = 0.0


def _worker(config: SearchConfig, space: SearchSpace, worker: int, threads: int | None,
            evaluate: Callable[[ArchSpec], Evaluation] | None = None,
            callbacks: tuple = ()) -> None:
    """One worker: optimize the shared study until the trial count or the timeout is reached."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    study = create_study(config, space, worker)
    if evaluate is None:
        evaluate = ProxyEvaluator(config.dataset, config.data_root, config.proxy_epochs, config.proxy_images,
                                  config.device, config.seed, config.proxy_val)
    objective = make_objective(space, config.budgets, config.objective, evaluate, config.device)
    stop = _StopAt(config.trials)
    if stop.reached(study):
        return
    study.optimize(objective, timeout=config.timeout, callbacks=[stop, *callbacks], catch=(RuntimeError,),
                   gc_after_trial=False)


def _worker_main(config: SearchConfig, space: SearchSpace, worker: int, threads: int | None) -> None:
    try:
        _worker(config, space, worker, threads)
    except KeyboardInterrupt:
        pass


def run_search(config: SearchConfig, space: SearchSpace, evaluate: Callable[[ArchSpec], Evaluation] | None = None,
               on_update: Callable[[optuna.Study], None] | None = None, poll_s: float = 2.0) -> SearchResult:
    """Run (or resume) the search of `config` over `space`; returns when the trial count or timeout is reached.

    With one worker the trials run in this process (and `evaluate` may be any callable); with more,
    `config.workers` processes share the storage, each with cores/workers torch threads.
    """
    if evaluate is not None and config.workers > 1:
        raise ValueError("an injected `evaluate` runs in this process only; use workers=1")
    start = time.perf_counter()
    data = ProxyEvaluator(config.dataset, config.data_root).data()  # a missing dataset fails here, before anything
    space = space.for_data(data.in_channels, data.image_size, data.num_classes)
    check_space_fits(space, config.budgets)
    study = create_study(config, space)
    enqueued = []
    if config.warm_start:
        enqueued = enqueue_zoo(study, space, config.budgets, config.zoo_pattern)
    threads = config.threads or max(1, default_workers("cpu") // config.workers)
    if config.workers == 1:
        import torch

        callbacks = (lambda s, t: on_update(s),) if on_update else ()
        if on_update:
            on_update(study)
        previous = torch.get_num_threads()
        try:
            _worker(config, space, 0, threads, evaluate, callbacks)
        finally:
            torch.set_num_threads(previous)
        return SearchResult(study, enqueued, 0, time.perf_counter() - start)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(config, space, index, threads),
                                 name=f"bsnas-worker-{index}") for index in range(config.workers)]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            if on_update:
                on_update(study)
            for process in processes:
                process.join(timeout=poll_s / len(processes))
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=10)
        raise
    failed = sum(process.exitcode not in (0, None) for process in processes)
    if on_update:
        on_update(study)
    return SearchResult(study, enqueued, failed, time.perf_counter() - start)


def check_space_fits(space: SearchSpace, budgets: tuple[Budget, ...]) -> None:
    """Fail early when even the space's cheapest point is over a FLOPs or parameter budget (exact: a cheap point
    found by local search settles most cases at once; otherwise `smallest_cost` finds the true minimum)."""
    for budget in budgets:
        if budget.kind == "latency":
            continue
        index = 0 if budget.kind == "flops" else 1
        if cost(extreme_point(space, budget.kind))[index] <= budget.limit:
            continue
        smallest = smallest_cost(space, budget.kind)
        if smallest > budget.limit:
            size = "x".join(map(str, space.input_size))
            raise BsnasError(f"{space.source}: even the cheapest point of the space has "
                             f"{format_cost(budget.kind, smallest)} at input {size}, over the budget {budget}; "
                             "raise the budget or shrink the space.")
