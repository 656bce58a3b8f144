"""Running a search: worker processes that share one study, and when they stop.

`run_search` checks the data and the space against the budgets, creates (or resumes) the study, queues its
slots (the zoo warm start first) and runs `config.workers` workers on the storage (in this process when there
is one); `run_workers` runs workers on a study that exists (`bsnas worker`). A worker takes queued trials until
every slot is done (or, without --trials, samples until the timeout). Every wait is bounded: a worker that
finds nothing to take while other workers' trials run sleeps one heartbeat and looks again; a trial whose
worker died stops beating, is failed after the grace period and queued again, and someone takes it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.cost import cost
from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.latency.table import load_table
from bsnas.search.budget import Budget, format_cost
from bsnas.search.candidate import latency_function
from bsnas.search.config import SearchConfig
from bsnas.search.evaluator import Evaluation, ProxyEvaluator
from bsnas.search.front import best_zoo
from bsnas.search.objective import make_objective
from bsnas.search.processes import run_processes
from bsnas.search.promotion import next_promotion, top_rung
from bsnas.search.rungs import TrialFailed, candidate_attrs, open_rung_study, queue_ticket, run_queued_ticket
from bsnas.search.storage import grace_period, open_storage
from bsnas.search.study import (
    count_trials,
    create_study,
    queue_slots,
    quiet_optuna,
    recover_dead_trials,
    set_zoo_slots,
    zoo_slots,
)
from bsnas.space.decode import SearchSpace
from bsnas.space.summary import extreme_point, smallest_cost

__all__ = ["SearchResult", "check_space_fits", "default_workers", "prepare_search", "run_search", "run_workers",
           "zoo_reference"]


def default_workers(device: str = "cpu") -> int:
    """One single-thread worker per CPU core on CPU; one worker on a GPU."""
    if device.startswith("cuda"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class SearchResult:
    """How a search invocation ended: `ok` when it did what was asked, else `reason` says why not."""

    study: optuna.Study
    enqueued: list[str] = field(default_factory=list)
    failed_workers: int = 0
    seconds: float = 0.0
    target: int | None = None
    timed_out: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return count_trials(self.study)

    @property
    def reason(self) -> str:
        """Why the search did not do what was asked ('' when it did)."""
        if self.failed_workers:
            return f"{self.failed_workers} worker process(es) exited with an error"
        done = self.counts["slots"]
        if self.target is not None and done < self.target and not self.timed_out:
            return f"the study holds {done} of the {self.target} trials asked for"
        return ""

    @property
    def ok(self) -> bool:
        return not self.reason


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


def prepare_search(config: SearchConfig, space: SearchSpace) -> tuple[SearchSpace, optuna.Study, list[str]]:
    """Load the data (a missing dataset fails here, before anything is written), fit the space to it, check it
    against the budgets, create or resume the study and queue its slots. Returns the space, the study and the
    names of the zoo models in the slots."""
    data = ProxyEvaluator(config.dataset, config.data_root).data()
    space = space.for_data(data.in_channels, data.image_size, data.num_classes)
    check_space_fits(space, config.budgets)
    if config.latency_table is not None:
        load_table(config.latency_table).check_covers(space, config.budgets)
    study = create_study(config, space)
    zoo = zoo_slots(space, config.budgets, config.zoo_pattern) if config.warm_start else []
    if config.trials is not None:
        zoo = zoo[:config.trials]
    set_zoo_slots(study, zoo)
    queue_slots(study, len(zoo) if config.trials is None else config.trials)  # without --trials: the warm start
    return space, study, [name for name, _ in zoo]


def run_search(config: SearchConfig, space: SearchSpace, evaluate: Callable[[ArchSpec], Evaluation] | None = None,
               on_update: Callable[[optuna.Study], None] | None = None, poll_s: float = 2.0) -> SearchResult:
    """Run (or resume) the search of `config` over `space`; returns when every slot is done or the timeout is
    reached. With one worker the trials run in this process (and `evaluate` may be any callable); with more,
    `config.workers` processes share the storage, each with cores/workers torch threads."""
    start = time.perf_counter()
    space, study, enqueued = prepare_search(config, space)
    result = run_workers(config, space, evaluate, on_update, poll_s)
    result.enqueued, result.seconds = enqueued, time.perf_counter() - start
    return result


def run_workers(config: SearchConfig, space: SearchSpace, evaluate: Callable[[ArchSpec], Evaluation] | None = None,
                on_update: Callable[[optuna.Study], None] | None = None, poll_s: float = 2.0) -> SearchResult:
    """Run `config.workers` workers on the study of `config` (which exists) until they stop."""
    if evaluate is not None and config.workers > 1:
        raise ValueError("an injected `evaluate` runs in this process only; use workers=1")
    deadline = None if config.timeout is None else time.time() + config.timeout
    threads = config.threads or max(1, default_workers("cpu") // config.workers)
    study = create_study(config, space)
    if config.workers == 1:
        import torch

        previous = torch.get_num_threads()
        try:
            worker(config, space, 0, threads, deadline, evaluate, on_update)
        finally:
            torch.set_num_threads(previous)
        return _result(config, study, 0, deadline)
    failed = run_processes(worker, [(config, space, index, threads, deadline) for index in range(config.workers)],
                           "bsnas-worker", poll_s, functools.partial(on_update, study) if on_update else None)
    return _result(config, study, failed, deadline)


def _result(config: SearchConfig, study: optuna.Study, failed: int, deadline: float | None) -> SearchResult:
    return SearchResult(study, failed_workers=failed, target=config.trials,
                        timed_out=deadline is not None and time.time() >= deadline)


def worker(config: SearchConfig, space: SearchSpace, index: int, threads: int | None, deadline: float | None,
           evaluate: Callable[[ArchSpec, int], Evaluation] | None = None,
           on_update: Callable[[optuna.Study], None] | None = None) -> None:
    """One worker: until there is nothing left to do, take the next job, in this order (ASHA's: a free worker
    first trains what earned promotion, else it samples a new candidate):

    1. a queued training, highest rung first (a promotion, or a training whose worker died);
    2. a candidate that earned promotion (`bsnas.search.promotion`): it queues it at the next rung;
    3. a queued trial of the search (a slot; without --trials a new sample until the timeout);
    4. when every slot is done and nothing is promoted any more: the best zoo model at the top rung reached, if
       it is not there yet, so that the report compares at equal fidelity.

    It stops when nothing is left, or at the deadline (a training that started runs to its end). While other
    workers' jobs run and nothing is queued it waits a heartbeat at a time: one of them may die, and its job
    comes back to the queue once its heartbeats have been missing for the grace period.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    quiet_optuna()
    storage = open_storage(config.storage_url, config.heartbeat_s)
    rungs = [open_rung_study(storage, config.name, rung) for rung in range(config.rungs)]
    study = create_study(config, space, index, storage, rungs)
    if evaluate is None:
        evaluate = ProxyEvaluator.for_search(config)
    latency = latency_function(config, space)
    objective = make_objective(space, config.budgets, config.objective, evaluate, rungs[0], config.seed, latency,
                               slotted=config.trials is not None)
    callbacks = [lambda s, t: on_update(s)] if on_update else []
    grace = grace_period(config.heartbeat_s)
    while deadline is None or time.time() < deadline:
        recover_dead_trials(study, grace)
        for rung_study in rungs:
            optuna.storages.fail_stale_trials(rung_study)
        if on_update:
            on_update(study)
        queued = next((r for r in reversed(rungs) if _has(r, TrialState.WAITING)), None)
        if queued is not None:
            run_queued_ticket(queued, evaluate, config.seed)
            continue
        promotion = next_promotion(rungs, config.eta, config.objective_budget)
        if promotion is not None:
            rung, ticket = promotion
            queue_ticket(rungs[rung + 1], {**candidate_attrs(ticket), "promoted_from": ticket.number})
            continue
        if config.trials is not None:
            queue_slots(study, config.trials)
        if config.trials is None or _has(study, TrialState.WAITING):
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=callbacks, gc_after_trial=False)
            continue
        if _has(study, TrialState.RUNNING) or any(_has(r, TrialState.RUNNING) for r in rungs):
            time.sleep(min(config.heartbeat_s, 5.0))
            continue
        reference = zoo_reference(rungs)
        if reference is None:
            return  # every slot is done, nothing more earned promotion
        queue_ticket(rungs[top_rung(rungs)], {**candidate_attrs(reference), "reference": True})


def _has(study: optuna.Study, state: TrialState) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(state,)))


def zoo_reference(rungs: list[optuna.Study]) -> FrozenTrial | None:
    """The best zoo model's training at the highest rung it reached, when it has not reached the top rung of the
    search (and is not queued there): the report then compares the searched nets with it at equal fidelity."""
    top = top_rung(rungs)
    if top == 0 or any(t.user_attrs.get("zoo") for t in rungs[top].get_trials(deepcopy=False)):
        return None
    found = best_zoo(rungs)
    return None if found is None else found[1]
