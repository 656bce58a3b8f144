"""The Optuna objective of a search: sample an ArchSpec, cost it, reject it when over a budget, reuse a twin's
result, else train it at rung 0; returns (validation accuracy, cost). It runs as a job of the scheduler
(`bsnas.search.scheduler`), which claims the trial's slot first.

Everything a later step needs sits in the trial's user attributes: `spec` (the ArchSpec as JSON), `spec_hash`,
`flops`, `params`, `latency_ms`, `status` (trained | duplicate | infeasible | diverged | out_of_memory | given_up |
stopped), `reason`, `slot`, `zoo` (warm-start trials), what the sampler says of the trial
(`bsnas.search.samplers.sampler_attrs`: `parent` and `mutated` of a mutation; `sampler`, `predicted_accuracy`,
`predicted_spread`, ... of the predictor's), `val_accuracy`, `duplicate_of`, `train_seconds`, `width_fit`, `worker`
(host:pid), and what the score depends on: `seed`, `threads`, `torch` (of the worker that trained it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from bsnas.arch.spec import ArchSpec, spec_hash, spec_to_dict
from bsnas.search.budget import Budget
from bsnas.search.candidate import measure_candidate
from bsnas.search.config import cost_value
from bsnas.search.evaluator import Evaluation
from bsnas.search.rungs import train_once, training_job
from bsnas.search.samplers import sampler_attrs
from bsnas.search.scheduler import NO_DEADLINE, Deadline, JobFailed, JobQueue
from bsnas.space.decode import SearchSpace

__all__ = ["make_objective"]


def make_objective(space: SearchSpace, budgets: tuple[Budget, ...], objective: str,
                   evaluate: Callable[[ArchSpec, int], Evaluation], trainings: JobQueue, seed: int = 0,
                   latency: Callable[[ArchSpec], float] | None = None, deadline: Deadline = NO_DEADLINE,
                   poll_s: float = 1.0) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The Optuna objective: (validation accuracy, cost). A feasible architecture is trained once at rung 0 (a ticket
    of the `trainings` queue, see `bsnas.search.rungs`): here, or by the worker that got there first.

    `latency(spec)` gives a candidate's milliseconds; it is needed when the objective or a budget is latency. A
    training that fails fails the trial for good when it is a zoo model's (it would fail again) and not for good
    otherwise (its slot gets a new sample).
    """
    train = training_job(evaluate, seed, 0)

    def run(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        start = time.perf_counter()
        spec = space.sample(trial)
        for key, value in sampler_attrs(trial.study.sampler, trial.number).items():
            trial.set_user_attr(key, value)
        candidate = measure_candidate(space, spec, trial.params, budgets, latency)
        zoo = trial.user_attrs.get("zoo")
        name = zoo if zoo and candidate.width_multiplier is None else f"{space.name}_t{trial.number}"
        spec = dataclasses.replace(candidate.spec, name=name)
        attrs = {"spec": json.dumps(spec_to_dict(spec)), "spec_hash": spec_hash(spec), "flops": candidate.flops,
                 "params": candidate.params, "latency_ms": candidate.latency_ms, "reason": candidate.reason,
                 "width_fit": None if candidate.width_multiplier is None else float(candidate.width_multiplier)}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for budget in budgets:
            value = candidate.cost(budget.kind)
            trial.set_constraint(budget.kind, budget.violation(value) if value is not None else 0.0)
        cost = candidate.cost(objective)
        # the latency of a candidate already over a FLOPs/params budget is not measured: it gets the worst cost
        cost = 1e12 if cost is None else cost_value(objective, cost)
        if not candidate.feasible:
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("check_ms", (time.perf_counter() - start) * 1000)
            return 0.0, cost
        trial.set_user_attr("status", "training")
        try:
            ticket = train_once(trainings, {**attrs, "zoo": zoo, "trial": trial.number, "cost": cost}, train,
                                deadline, poll_s)
        except JobFailed as failure:
            raise JobFailed(failure.status, failure.reason, final=zoo is not None) from None
        for key in ("seed", "threads", "torch", "train_seconds"):
            trial.set_user_attr(key, ticket.user_attrs.get(key))
        trained_here = ticket.user_attrs.get("trial") == trial.number
        if not trained_here:
            trial.set_user_attr("duplicate_of", ticket.user_attrs.get("trial"))
        if ticket.state == TrialState.FAIL:
            raise JobFailed(ticket.user_attrs["status"], ticket.user_attrs.get("reason", ""), final=zoo is not None)
        trial.set_user_attr("status", "trained" if trained_here else "duplicate")
        trial.set_user_attr("val_accuracy", ticket.values[0])
        return ticket.values[0], cost

    return run
