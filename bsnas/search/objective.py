"""The Optuna objective of a search: sample an ArchSpec, cost it, reject it when over a budget, reuse a twin's
result, else train it with the proxy; returns (validation accuracy, cost).

Everything a later step needs sits in the trial's user attributes: `spec` (the ArchSpec as JSON), `spec_hash`,
`flops`, `params`, `latency_ms`, `status` (trained | duplicate | infeasible | diverged), `reason`, `zoo`
(warm-start trials), `val_accuracy`, `train_seconds`, `width_fit`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.spec import ArchSpec, spec_hash, spec_to_dict
from bsnas.search.budget import Budget
from bsnas.search.candidate import cost_value, measure_candidate
from bsnas.search.evaluator import Evaluation
from bsnas.space.decode import SearchSpace

__all__ = ["make_objective"]


def make_objective(space: SearchSpace, budgets: tuple[Budget, ...], objective: str,
                   evaluate: Callable[[ArchSpec], Evaluation], device: str = "cpu",
                   wait_s: float = 1.0) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The Optuna objective: (validation accuracy, cost). `evaluate` trains a feasible, new architecture."""
    need_latency = objective == "latency" or any(b.kind == "latency" for b in budgets)

    def run(trial: optuna.Trial) -> tuple[float, float]:
        start = time.perf_counter()
        spec = space.sample(trial)
        candidate = measure_candidate(space, spec, trial.params, budgets, need_latency, device)
        zoo = trial.user_attrs.get("zoo")
        name = zoo if zoo and candidate.width_multiplier is None else f"{space.name}_t{trial.number}"
        spec = dataclasses.replace(candidate.spec, name=name)
        digest = spec_hash(spec)
        attrs = {"spec": json.dumps(spec_to_dict(spec)), "spec_hash": digest, "flops": candidate.flops,
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
        duplicate = _find_duplicate(trial.study, digest, trial.number, wait_s)
        if duplicate is not None:
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("duplicate_of", duplicate.number)
            trial.set_user_attr("val_accuracy", duplicate.values[0])
            return duplicate.values[0], cost
        trial.set_user_attr("status", "training")
        result = evaluate(spec)
        trial.set_user_attr("status", "trained" if result.status == "completed" else result.status)
        trial.set_user_attr("val_accuracy", result.accuracy)
        trial.set_user_attr("train_seconds", result.seconds)
        return result.accuracy, cost

    return run


_EVALUATED = ("trained", "duplicate", "diverged")


def _find_duplicate(study: optuna.Study, digest: str, number: int, wait_s: float) -> FrozenTrial | None:
    """A finished trial of the same architecture; waits for one still training in another worker."""
    while True:
        running = False
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number == number or other.user_attrs.get("spec_hash") != digest:
                continue
            if other.state == TrialState.COMPLETE and other.user_attrs.get("status") in _EVALUATED:
                return other
            if other.state == TrialState.RUNNING and other.user_attrs.get("status") == "training" \
                    and other.number < number:
                running = True
        if not running:
            return None
        time.sleep(wait_s)


