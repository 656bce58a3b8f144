"""The predictor-guided sampler (`--sampler predictor`): many proposals costed for free, the predictor's best one
trained.

A training costs seconds to minutes; the exact cost of a point costs a fraction of a millisecond. So for every new
candidate the sampler makes `PROPOSALS` proposals (BANANAS, White et al. 2021: mutations of the best found so far):
mutations of the best training of every cost bin at the highest rung holding one (`best_per_bin`, the parents of
`bsnas.search.evolution`), mutations of the zoo models of the study, and random points, in equal shares. Each is
costed exactly (`measure_candidate`, not shrunk: a point the objective would shrink is not the point proposed);
those over the budget and those whose network was trained or sampled already (`spec_hash`) are dropped. The
predictor (`bsnas.search.predictor`, refitted on the first trainings to finish, every `REFIT_EVERY` new ones) scores
the rest at the top rung, and the acquisition, an upper confidence bound (mean + `KAPPA` x spread), picks the best
proposal within one cost bin, the bins taken in turn (trial number modulo `COST_BINS`; the nearest bin with a
proposal when that one has none), so the whole budget keeps being searched.

A mutation changes 1 to `MAX_MUTATIONS` of the choices that the parent's network reads (a field that its repeats or
its block type leave out is no mutation); fields that appear with the change are drawn at random.

Until rung 0 holds `MIN_RESULTS` trainings the predictor has too little to learn from, and the evolution sampler
proposes instead (its trials say so in their `sampler` attribute), seeded per worker like `--sampler evolution`, so
that workers do not draw the same networks. Every choice of the predictor is a function of the storage, the search
seed and the trial number, so any worker, and a resumed search, proposes the same for the same trial.
Proposals are costed in FLOPs and parameters; a latency budget is checked by the objective for the one chosen.
"""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.spec import ArchSpec, spec_hash
from bsnas.search.budget import Budget
from bsnas.search.candidate import Candidate, measure_candidate
from bsnas.search.config import budget_on, cost_value
from bsnas.search.evolution import MAX_MUTATIONS, EvolutionSampler, PlanningSampler, allowed, best_per_bin
from bsnas.search.front import trial_number
from bsnas.search.predictor import Predictor, rung_trainings
from bsnas.search.promotion import bin_edges, cost_bin, finished, results
from bsnas.space.choices import Choice
from bsnas.space.decode import SearchSpace

__all__ = ["KAPPA", "MIN_RESULTS", "PROPOSALS", "REFIT_EVERY", "PredictorSampler", "fields_read", "mutate",
           "pick_in_bin"]

PROPOSALS = 48  # proposals scored per sampled candidate
REFIT_EVERY = 8  # the predictor is refitted on the first multiple of this many trainings to finish
MIN_RESULTS = 16  # trainings at rung 0 before the predictor proposes
KAPPA = 1.0  # the acquisition: predicted mean + KAPPA x spread


def _other(choice: Choice, value: Any, rng: random.Random) -> Any:
    """Another allowed value of `choice` than `value` (a new draw for a continuous range)."""
    if choice.count() == float("inf"):
        return choice.random(rng)
    others = [v for v in choice.enumerate() if v != value]
    return rng.choice(others) if others else value


def fields_read(space: SearchSpace, params: dict[str, Any], rng: random.Random) -> list[tuple[str, Choice]]:
    """The fields (name, choice) that the network of the point `params` reads, in decoding order (a field it lacks
    is drawn with `rng`)."""
    read: list[tuple[str, Choice]] = []

    def record(name: str, choice: Choice, hint: Any) -> Any:
        read.append((name, choice))
        return params[name] if name in params and choice.contains(params[name]) else choice.random(rng)

    space.decode(record)
    return read


def mutate(space: SearchSpace, params: dict[str, Any], rng: random.Random,
           read: list[tuple[str, Choice]] | None = None) -> tuple[ArchSpec, dict[str, Any], list[str]]:
    """A child of the point `params`: 1 to `MAX_MUTATIONS` of the fields its network reads (`fields_read`, computed
    when not given) take another value, and fields that appear with the change are drawn at random. Returns the
    child's spec, its parameters (exactly those its network reads) and the mutated fields."""
    read = fields_read(space, params, rng) if read is None else read
    chosen = rng.sample(read, k=min(len(read), rng.randint(1, MAX_MUTATIONS)))
    changed = {name: _other(choice, params.get(name), rng) for name, choice in chosen}
    child: dict[str, Any] = {}

    def pick(name: str, choice: Choice, hint: Any) -> Any:
        known = name in changed or name in params
        value = changed[name] if name in changed else params.get(name)
        child[name] = value if known and choice.contains(value) else choice.random(rng)
        return child[name]

    spec = space.decode(pick)
    return spec, child, sorted(changed)


def _trained_params(trial: FrozenTrial) -> dict[str, Any]:
    """The point a trial trained: its parameters, with the width multiplier the objective shrank it to."""
    fit = trial.user_attrs.get("width_fit")
    return trial.params if fit is None else {**trial.params, "width_multiplier": fit}


def pick_in_bin(scored: list[dict], edges: list[float], turn: int) -> tuple[dict, int]:
    """(the proposal of highest `acquisition`, its bin) within cost bin `turn` of `edges`, or the nearest bin that
    holds a proposal (the cheaper of two as near); ties go to the earlier proposal."""
    by_bin: dict[int, list[dict]] = {}
    for proposal in scored:
        by_bin.setdefault(cost_bin(proposal["cost"], edges), []).append(proposal)
    nearest = min(by_bin, key=lambda index: (abs(index - turn), index))
    return max(by_bin[nearest], key=lambda p: (p["acquisition"], -p["order"])), nearest


class PredictorSampler(PlanningSampler):
    """An Optuna sampler: the proposal the predictor rates best within the cost bin in turn (see the module's
    docstring); the evolution sampler, seeded with `worker_seed` (default `seed`) so that workers sharing a storage
    draw apart, before rung 0 holds `min_results` trainings."""

    def __init__(self, space: SearchSpace, budgets: tuple[Budget, ...], objective: str, rungs: list[optuna.Study],
                 seed: int = 0, worker_seed: int | None = None, proposals: int = PROPOSALS,
                 min_results: int = MIN_RESULTS):
        self._space, self._budgets, self._rungs, self._seed = space, budgets, rungs, seed
        self._kind = objective if objective in ("flops", "params") else "flops"  # the cost the bins are over
        self._limit = budget_on(budgets, self._kind)
        self._objective_budget = budget_on(budgets, objective)
        self._proposals, self._min_results = proposals, min_results
        worker_seed = seed if worker_seed is None else worker_seed
        self._fallback = EvolutionSampler(lambda: self._parents([results(rung) for rung in rungs]), seed=worker_seed)
        self._random = optuna.samplers.RandomSampler(seed=worker_seed)
        self._predictor = Predictor(seed)
        self._specs: dict = {}
        self._plans: dict[int, dict[str, Any] | None] = {}
        self._notes: dict[int, dict[str, Any]] = {}
        self._reads: dict[int, list[tuple[str, Choice]]] = {}  # trial number -> the fields its network reads

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()
        self._random.reseed_rng()

    def trial_attrs(self, number: int) -> dict[str, Any]:
        """What trial `number` records about how it was proposed (`sampler`, `predicted_accuracy`,
        `predicted_spread`, `predicted_rungs`, `parent`, `mutated`, `proposals`)."""
        notes = dict(self._notes.get(number, {}))
        if self._plans.get(number) is None:
            notes.update(self._fallback.trial_attrs(number))
        return notes

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if trial.number not in self._plans:
            self._plans[trial.number] = self._choose(study, trial.number)
        plan = self._plans[trial.number]
        if plan is None:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        if param_name in plan and allowed(param_distribution, plan[param_name]):
            return plan[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial.number, None)
        self._notes.pop(trial.number, None)
        self._fallback.after_trial(study, trial, state, values)

    # ------------------------------------------------------------------------------------------- choosing

    def _choose(self, study: optuna.Study, number: int) -> dict[str, Any] | None:
        """The parameters of trial `number`, or None for the evolution sampler's turn."""
        tickets = [rung.get_trials(deepcopy=False) for rung in self._rungs]  # the storage, read once
        by_rung = [finished(found) for found in tickets]
        if len(by_rung[0]) < self._min_results:
            self._notes[number] = {"sampler": f"evolution (the predictor waits for {self._min_results} trainings "
                                              f"at rung 0, has {len(by_rung[0])})"}
            return None
        trainings = rung_trainings(by_rung, self._specs)
        usable = len(trainings) - len(trainings) % REFIT_EVERY
        if usable != self._predictor.trained_on:
            self._predictor.fit(trainings[:usable], self._specs)
        trials = study.get_trials(deepcopy=False)
        taken = {t.user_attrs["spec_hash"] for found in (*tickets, trials) for t in found
                 if "spec_hash" in t.user_attrs}
        rng = random.Random(f"{self._seed}:{number}")
        found = self._scored(self._propose(trials, self._parents(by_rung), rng), taken)
        if not found:
            self._notes[number] = {"sampler": "evolution (no new proposal within the budget)"}
            return None
        base = [self._bin_cost_of(t.user_attrs) for t in by_rung[0]]
        edges = bin_edges(min(base), self._limit if self._limit is not None else max(base))
        best, chosen_bin = pick_in_bin(found, edges, number % (len(edges) - 1))
        self._notes[number] = {"sampler": "predictor", "predicted_accuracy": best["mean"],
                               "predicted_spread": best["spread"], "predicted_rungs": best["rungs"],
                               "proposals": len(found), "cost_bin": chosen_bin, **best["origin"]}
        return best["params"]

    def _parents(self, by_rung: list[list[FrozenTrial]]) -> list[int]:
        """Trial numbers of the best training of every cost bin at the highest rung holding one (`by_rung`: the
        rungs' finished trainings)."""
        return [trial_number(t) for t in best_per_bin(by_rung, self._objective_budget)]

    def _bin_cost_of(self, attrs: dict) -> float:
        return cost_value(self._kind, attrs[self._kind])

    def _propose(self, trials: list[FrozenTrial], parents: list[int],
                 rng: random.Random) -> list[tuple[ArchSpec, dict[str, Any], dict[str, Any]]]:
        """(spec, params, origin) of `PROPOSALS` points: mutations of the bins' bests (`parents`) and of the zoo, random
        points."""
        params = {t.number: _trained_params(t) for t in trials if t.state == TrialState.COMPLETE}
        sources = [[p for p in parents if p in params], [n for n in params if trials[n].user_attrs.get("zoo")]]
        proposals = []
        for index in range(self._proposals):
            pool = sources[index % 3] if index % 3 < 2 else []
            if pool:
                parent = rng.choice(pool)
                if parent not in self._reads:  # a finished trial's parameters never change
                    self._reads[parent] = fields_read(self._space, params[parent], rng)
                spec, child, mutated = mutate(self._space, params[parent], rng, self._reads[parent])
                proposals.append((spec, child, {"parent": parent, "mutated": " ".join(mutated)}))
            else:
                proposals.append((*self._space.random_spec(rng), {}))
        return proposals

    def _scored(self, proposals: list[tuple[ArchSpec, dict, dict]], taken: set[str]) -> list[dict]:
        """The proposals within the budget whose network is new, with their cost, prediction and acquisition."""
        kept: list[tuple[int, dict, dict, Candidate, str]] = []
        for order, (spec, params, origin) in enumerate(proposals):
            candidate = measure_candidate(self._space, spec, params, self._budgets, fit=False)
            key = spec_hash(candidate.spec) if candidate.feasible else None
            if key is None or key in taken:
                continue
            taken.add(key)
            kept.append((order, params, origin, candidate, key))
        if not kept:
            return []
        rungs = range(len(self._rungs))
        mean, spread = self._predictor.predict([self._predictor.encode(key, c.spec) for *_, c, key in kept], rungs)
        top = len(self._rungs) - 1
        return [{"order": order, "params": params, "origin": origin,
                 "cost": cost_value(self._kind, candidate.cost(self._kind)),
                 "mean": float(mean[top, i]), "spread": float(spread[top, i]),
                 "acquisition": float(mean[top, i] + KAPPA * spread[top, i]), "rungs": [float(m) for m in mean[:, i]]}
                for i, (order, params, origin, candidate, _) in enumerate(kept)]
