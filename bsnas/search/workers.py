"""Running a search: worker processes that share one study, and when they stop.

`run_search` checks the data and the space against the budgets, creates (or resumes) the study, queues its
slots (the zoo warm start first) and runs `config.workers` workers on the storage (in this process when there
is one); `run_workers` runs workers on a study that exists (`bsnas worker`). A worker (`worker`) is a short
priority list over the scheduler (`bsnas.search.scheduler`), which recovers dead workers' jobs and bounds every
wait.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.cost import cost
from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.latency.table import load_table
from bsnas.search.budget import Budget, format_cost
from bsnas.search.candidate import latency_function
from bsnas.search.config import SearchConfig, default_workers
from bsnas.search.evaluator import Evaluation, ProxyEvaluator
from bsnas.search.front import best_zoo
from bsnas.search.logs import quiet_optuna
from bsnas.search.objective import make_objective
from bsnas.search.processes import STORAGE_LOST, run_processes
from bsnas.search.promotion import next_promotion, top_rung
from bsnas.search.rungs import candidate_attrs, open_rung_study, ticket_queue, training_job
from bsnas.search.samplers import create_sampler
from bsnas.search.scheduler import Deadline, JobQueue, work
from bsnas.search.slots import SLOT_KEY, count_trials, queue_slots, set_zoo_slots
from bsnas.search.storage import guard_storage, open_storage, storage_lost
from bsnas.search.study import create_study, load_study, open_search
from bsnas.search.warm_start import warm_start, zoo_slots
from bsnas.space.decode import SearchSpace
from bsnas.space.summary import extreme_point, smallest_cost

__all__ = ["SearchResult", "check_space_fits", "prepare_search", "run_search", "run_workers",
           "worker"]


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
    zoo = warm_start(zoo_slots(space, config.budgets, config.zoo_pattern), config.trials) if config.warm_start else []
    set_zoo_slots(study, zoo)
    storage = open_storage(config.storage_url, config.heartbeat_s)
    queue_slots(JobQueue(study, storage, SLOT_KEY), len(zoo) if config.trials is None else config.trials)
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
    deadline = Deadline.after(config.timeout)
    threads = config.threads or max(1, default_workers("cpu") // config.workers)
    with guard_storage(config.storage_url):  # the database going away is one StorageFault, whoever sees it
        study = load_study(config.name, config.storage_url)
        if config.workers == 1:
            previous = torch.get_num_threads()
            try:
                worker(config, space, 0, threads, deadline, evaluate, on_update)
            finally:
                torch.set_num_threads(previous)
            return _result(config, study, 0, deadline)
        codes = run_processes(worker, [(config, space, index, threads, deadline) for index in range(config.workers)],
                              "bsnas-worker", poll_s, functools.partial(on_update, study) if on_update else None)
    if STORAGE_LOST in codes:
        raise storage_lost(config.storage_url)
    return _result(config, study, sum(code != 0 for code in codes), deadline)


def _result(config: SearchConfig, study: optuna.Study, failed: int, deadline: Deadline) -> SearchResult:
    return SearchResult(study, failed_workers=failed, target=config.trials, timed_out=deadline.passed())


def worker(config: SearchConfig, space: SearchSpace, index: int, threads: int | None, deadline: Deadline,
           evaluate: Callable[[ArchSpec, int], Evaluation] | None = None,
           on_update: Callable[[optuna.Study], None] | None = None) -> None:
    """One worker: until nothing is left or the deadline comes, the first of these that has work (ASHA's order: a
    free worker first trains what earned promotion, else it samples a new candidate):

    1. a queued training, highest rung first (a promotion, or a training a dead worker left);
    2. a candidate that earned promotion (`bsnas.search.promotion`): queued at the next rung;
    3. a slot of the search (`bsnas.search.slots`; without --trials, a new sample until the deadline);
    4. when nothing else is left and nothing runs: the best zoo model at the top rung reached, if it is not there
       yet, so that the report compares at equal fidelity.

    The scheduler (`bsnas.search.scheduler.work`) recovers dead workers' jobs before every look and bounds every
    wait; a training that started runs to its end.
    """
    with guard_storage(config.storage_url):
        _work(config, space, index, threads, deadline, evaluate, on_update)


def _work(config: SearchConfig, space: SearchSpace, index: int, threads: int | None, deadline: Deadline,
          evaluate: Callable[[ArchSpec, int], Evaluation] | None,
          on_update: Callable[[optuna.Study], None] | None) -> None:
    """The sources of work of `worker`, in its order, over the scheduler's loop."""
    if threads is not None:
        torch.set_num_threads(threads)
    quiet_optuna()
    storage = open_storage(config.storage_url, config.heartbeat_s)
    rung_studies = [open_rung_study(storage, config.name, rung) for rung in range(config.rungs)]
    study = open_search(config, storage, create_sampler(config, space, index, rung_studies))
    evaluate = evaluate or ProxyEvaluator.for_search(config)
    search = JobQueue(study, storage, SLOT_KEY if config.trials is not None else None)
    rungs = [ticket_queue(rung_study, storage) for rung_study in rung_studies]
    trainings = [training_job(evaluate, config.seed, rung) for rung in range(config.rungs)]
    objective = make_objective(space, config.budgets, config.objective, evaluate, rungs[0], config.seed,
                               latency_function(config, space), deadline)
    callbacks = [lambda s, t: on_update(s)] if on_update else []

    def queued_training() -> bool:
        waiting = next((rung for rung in reversed(range(config.rungs)) if rungs[rung].has(TrialState.WAITING)), None)
        if waiting is not None:
            rungs[waiting].run_next(trainings[waiting])
        return waiting is not None

    def promotion() -> bool:
        found = next_promotion(rung_studies, config.eta, config.objective_budget)
        if found is not None:
            rungs[found[0] + 1].put({**candidate_attrs(found[1]), "promoted_from": found[1].number})
        return found is not None

    def slot() -> bool:
        if config.trials is not None:
            queue_slots(search, config.trials)
            if not search.has(TrialState.WAITING):
                return False
        search.run_next(objective, callbacks)
        return True

    def zoo_reference() -> bool:
        if any(queue.has(TrialState.RUNNING) for queue in (search, *rungs)):
            return False
        reference = _zoo_reference(rung_studies)
        if reference is not None:
            rungs[top_rung(rung_studies)].put({**candidate_attrs(reference), "reference": True})
        return reference is not None

    work([search, *rungs], [queued_training, promotion, slot, zoo_reference], deadline, min(config.heartbeat_s, 5.0),
         on_look=functools.partial(on_update, study) if on_update else None)


def _zoo_reference(rungs: list[optuna.Study]) -> FrozenTrial | None:
    """The best zoo model's training at the highest rung it reached, when it has not reached the top rung of the
    search (and is not queued there): the report then compares the searched nets with it at equal fidelity."""
    top = top_rung(rungs)
    if top == 0 or any(t.user_attrs.get("zoo") for t in rungs[top].get_trials(deepcopy=False)):
        return None
    found = best_zoo(rungs)
    return None if found is None else found[1]
