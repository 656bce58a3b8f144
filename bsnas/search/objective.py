"""The Optuna objective of a search: sample an ArchSpec, cost it, reject it when over a budget, reuse a twin's
result, else train it with the proxy; returns (validation accuracy, cost).

Everything a later step needs sits in the trial's user attributes: `spec` (the ArchSpec as JSON), `spec_hash`,
`flops`, `params`, `latency_ms`, `status` (trained | duplicate | infeasible | diverged | out_of_memory), `reason`,
`slot`, `zoo` (warm-start trials), `val_accuracy`, `train_seconds`, `width_fit`, and what the score depends on:
`seed`, `threads`, `torch`.
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
from bsnas.search.evaluator import TRAINING_FAILURES, Evaluation
from bsnas.search.study import STARTED, slot_owner
from bsnas.space.decode import SearchSpace

__all__ = ["TrialFailed", "make_objective"]

EVALUATED = ("trained", "duplicate")


class TrialFailed(Exception):
    """The candidate could not be scored (its training diverged or ran out of memory); the trial fails with the
    reason in its attributes and the search goes on."""


def make_objective(space: SearchSpace, budgets: tuple[Budget, ...], objective: str,
                   evaluate: Callable[[ArchSpec], Evaluation], seed: int = 0, device: str = "cpu",
                   slotted: bool = True, poll_s: float = 1.0) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The Optuna objective: (validation accuracy, cost). `evaluate` trains a feasible, new architecture.

    With `slotted`, a trial that does not own a slot of the study (see `bsnas.search.study`) is pruned at once.
    """
    import torch

    need_latency = objective == "latency" or any(b.kind == "latency" for b in budgets)

    def run(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr(STARTED, trial.number)
        if slotted:
            _claim_slot(trial)
        start = time.perf_counter()
        spec = space.sample(trial)
        candidate = measure_candidate(space, spec, trial.params, budgets, need_latency, device)
        zoo = trial.user_attrs.get("zoo")
        name = zoo if zoo and candidate.width_multiplier is None else f"{space.name}_t{trial.number}"
        spec = dataclasses.replace(candidate.spec, name=name)
        digest = spec_hash(spec)
        attrs = {"spec": json.dumps(spec_to_dict(spec)), "spec_hash": digest, "flops": candidate.flops,
                 "params": candidate.params, "latency_ms": candidate.latency_ms, "reason": candidate.reason,
                 "width_fit": None if candidate.width_multiplier is None else float(candidate.width_multiplier),
                 "seed": seed, "threads": torch.get_num_threads(), "torch": torch.__version__}
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
        twin = _twin(trial.study, digest, trial.number, poll_s)
        if twin is not None and twin.state == TrialState.FAIL:
            trial.set_user_attr("status", twin.user_attrs["status"])
            trial.set_user_attr("reason", f"as trial {twin.number}: {twin.user_attrs.get('reason', '')}")
            raise TrialFailed(trial.user_attrs["reason"])
        if twin is not None:
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("duplicate_of", twin.number)
            trial.set_user_attr("val_accuracy", twin.values[0])
            return twin.values[0], cost
        trial.set_user_attr("status", "training")
        result = evaluate(spec)
        trial.set_user_attr("train_seconds", result.seconds)
        if result.status != "completed":
            trial.set_user_attr("status", result.status)
            trial.set_user_attr("reason", result.reason)
            raise TrialFailed(result.reason)
        trial.set_user_attr("status", "trained")
        trial.set_user_attr("val_accuracy", result.accuracy)
        return result.accuracy, cost

    return run


def _claim_slot(trial: optuna.Trial) -> None:
    """Prune a trial that holds no slot, or a slot that a lower-numbered trial holds (two invocations queued it)."""
    slot = trial.user_attrs.get("slot")
    if slot is None:
        trial.set_user_attr("status", "surplus")
        raise optuna.TrialPruned("every slot of the study is taken")
    owner = slot_owner(trial.study, trial.number, slot)
    if owner is not None:
        trial.set_user_attr("status", "surplus")
        raise optuna.TrialPruned(f"slot {slot} belongs to trial {owner.number}")


def _twin(study: optuna.Study, digest: str, number: int, poll_s: float) -> FrozenTrial | None:
    """A trial of the same architecture that settles this one: evaluated (reuse its score) or failed in training
    (fail the same way). Waits while a lower-numbered twin trains; the wait ends when it finishes or its worker
    is found dead (its heartbeats stop, it is failed, and this trial trains instead)."""
    while True:
        optuna.storages.fail_stale_trials(study)
        training = False
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                              TrialState.FAIL)):
            if other.number == number or other.user_attrs.get("spec_hash") != digest:
                continue
            status = other.user_attrs.get("status")
            if other.state == TrialState.COMPLETE and status in EVALUATED:
                return other
            if other.state == TrialState.FAIL and status in TRAINING_FAILURES:
                return other
            if other.state == TrialState.RUNNING and status == "training" and other.number < number:
                training = True
        if not training:
            return None
        time.sleep(poll_s)
