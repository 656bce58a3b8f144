"""The sampler of a multi-fidelity search: random samples and mutations of the best trainings at the top rungs.

Random sampling alone keeps proposing candidates across the budget, but in a space with per-layer choices
almost every random point is worse than the hand-designed nets of the warm start, and a few hundred samples
rarely land near a good one. Regularized evolution (Real et al., AAAI 2019) is the established remedy in NAS:
mutate the best architectures found so far. Here the parents are the most trusted results, the best training
of every cost bin (the bins of `bsnas.search.promotion`) at the highest rung that holds one of that bin, so
evolution follows what the longest trainings say, not the rung-0 bias, and still covers the whole budget.

Once there is a parent, each new candidate is a mutation with probability `rate` (else a random sample): a
parent drawn uniformly among the bins' bests keeps all its choices but one to `MAX_MUTATIONS` drawn uniformly,
which take another allowed value; fields that the changed choices make appear are sampled at random.
Parameters fixed in a queued trial (zoo slots) never reach the sampler, so they are never touched. A trial's
parent and mutated fields are kept in its attributes (`parent`, `mutated`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from bsnas.search.promotion import best_first, cost_bin, cost_edges

__all__ = ["MAX_MUTATIONS", "MUTATION_RATE", "EvolutionSampler", "PlanningSampler", "allowed", "best_per_bin"]

MUTATION_RATE = 0.5
MAX_MUTATIONS = 3


def best_per_bin(by_rung: list[list[FrozenTrial]], budget: float | None) -> list[FrozenTrial]:
    """For every cost bin, the best training at the highest rung holding a training of that bin (ties: the
    cheaper, then the earlier), cheapest bin first; none before rung 0 has a result. `by_rung`: the finished
    trainings of every rung (`results`)."""
    if not by_rung or not by_rung[0]:
        return []
    edges = cost_edges(by_rung[0], budget)
    best: dict[int, FrozenTrial] = {}
    for trainings in reversed(by_rung):
        for ticket in sorted(trainings, key=best_first):
            best.setdefault(cost_bin(ticket.values[1], edges), ticket)
    return [best[index] for index in sorted(best)]


def _alternatives(distribution: BaseDistribution, value: Any) -> list:
    """The other values of a discrete distribution (empty for a continuous or log-scaled one: a random draw)."""
    if isinstance(distribution, CategoricalDistribution):
        return [choice for choice in distribution.choices if choice != value]
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return [v for v in range(distribution.low, distribution.high + 1, distribution.step) if v != value]
    return []


def allowed(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` is a value of `distribution` (a planned value is given only where the trial allows it)."""
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, (IntDistribution, FloatDistribution)):
        return distribution.low <= value <= distribution.high
    return False


class PlanningSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler that decides a whole trial at its first parameter (Optuna's relative sampling is not used)
    and says how it proposed each trial (`trial_attrs`)."""

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def trial_attrs(self, number: int) -> dict[str, Any]:
        """The user attributes that say how trial `number` was proposed."""
        return {}


class EvolutionSampler(PlanningSampler):
    """An Optuna sampler: with probability `rate` a mutation of a parent from `parents()` (trial numbers of the
    study), else `RandomSampler`. Seeded: the same parents and seed give the same candidates."""

    def __init__(self, parents: Callable[[], list[int]], rate: float = MUTATION_RATE, seed: int | None = None):
        self._parents = parents
        self._rate = rate
        self._rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, tuple[int, dict[str, Any], list[str]] | None] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def lineage(self, number: int) -> tuple[int, list[str]] | None:
        """(parent trial, mutated fields) of trial `number` if this sampler made it a mutation."""
        plan = self._plans.get(number)
        return None if plan is None else (plan[0], plan[2])

    def trial_attrs(self, number: int) -> dict[str, Any]:
        """What trial `number` records about how it was proposed: `parent` and `mutated` of a mutation."""
        lineage = self.lineage(number)
        return {} if lineage is None else {"parent": lineage[0], "mutated": " ".join(lineage[1])}

    def _plan(self, study: optuna.Study, trial: FrozenTrial) -> tuple[int, dict[str, Any], list[str]] | None:
        """The trial's mutation, decided at its first sampled parameter (a trial whose parameters are all fixed,
        a zoo slot or a retried trial, never asks, so it is never planned): with probability `rate` a parent and
        1 to `MAX_MUTATIONS` of its choices to change."""
        if trial.number not in self._plans:
            self._plans[trial.number] = None
            parents = self._parents() if self._rng.random() < self._rate else []
            if parents:
                number = self._rng.choice(parents)
                params = next((t.params for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                               if t.number == number), None)
                if params:
                    mutated = self._rng.sample(sorted(params), k=min(len(params), self._rng.randint(1, MAX_MUTATIONS)))
                    self._plans[trial.number] = (number, params, mutated)
        return self._plans[trial.number]

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        plan = self._plan(study, trial)
        if plan is not None and param_name in plan[1] and allowed(param_distribution, plan[1][param_name]):
            value = plan[1][param_name]
            if param_name not in plan[2]:
                return value
            others = _alternatives(param_distribution, value)
            if others:
                return self._rng.choice(others)
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial.number, None)
