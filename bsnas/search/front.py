"""A search as stored, its Pareto front at the highest rung reached, and the picks from it.

`SearchRecord` opens a search's study (one trial per sampled candidate) with its rung studies (one ticket per
training, `bsnas.search.rungs`). The front is the set of trainings at the highest rung that holds any, that no
other training there dominates in validation accuracy and cost, one per architecture, cheapest first: with one
rung that is the front of the proxy scores, with several it is what the longest trainings say. Picks:
max-acc, knee, min-cost (from the front) and trial:N (any trial of the search, by its number).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.spec import ArchSpec
from bsnas.arch.validate import spec_from_dict
from bsnas.errors import BsnasError
from bsnas.search.budget import Budget
from bsnas.search.config import budget_on, sampler_name
from bsnas.search.hypervolume import hypervolume
from bsnas.search.promotion import best_first, results, top_rung
from bsnas.search.ranking import spearman_rho

__all__ = ["PICKS", "SearchRecord", "best_zoo", "knee", "knee_index", "pick", "trial_number", "trial_spec"]

PICKS = ("max-acc", "knee", "min-cost", "trial:N")
UNITS = {"flops": "MFLOPs", "params": "Mparams", "latency": "ms"}


def trial_spec(trial: FrozenTrial) -> ArchSpec:
    """The ArchSpec a trial or training evaluated, from its user attributes (no re-sampling)."""
    text = trial.user_attrs.get("spec")
    if text is None:
        raise BsnasError(f"trial {trial.number} holds no architecture (it did not finish).")
    return spec_from_dict(json.loads(text), source=f"trial {trial.number}")


def trial_number(trial: FrozenTrial) -> int:
    """The search trial a training (or trial) belongs to: the number users see and pick with trial:N."""
    return trial.user_attrs.get("trial", trial.number)


@dataclass
class SearchRecord:
    """A search as stored: its study and its rung studies (trainings at rung 0, 1, ...)."""

    study: optuna.Study
    rungs: list[optuna.Study]

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def objective(self) -> str:
        return self.study.user_attrs.get("config", {}).get("objective", "flops")

    @property
    def unit(self) -> str:
        return UNITS[self.objective]

    @property
    def budget(self) -> float | None:
        """The budget on the objective's cost, in the objective's unit; None without one."""
        budgets = self.study.user_attrs.get("config", {}).get("budgets", [])
        return budget_on(tuple(Budget(kind, limit) for kind, limit in budgets), self.objective)

    @property
    def sampler(self) -> str:
        """The sampler the search runs (`bsnas.search.config.sampler_name`)."""
        config = self.study.user_attrs.get("config", {})
        return sampler_name(config.get("sampler", "auto"), config.get("rungs", 1))

    def prediction_quality(self) -> list[tuple[int, int, float]]:
        """(rung, candidates, Spearman's rho) of the accuracy the predictor's sampler predicted for the candidates it
        chose, before they were trained, against the accuracy they reached at that rung; rungs with 3 or more."""
        trainings = self.trainings()
        pairs: dict[int, list[tuple[float, float]]] = {}
        for trial in self.study.get_trials(deepcopy=False):
            predicted = trial.user_attrs.get("predicted_rungs")
            for rung, ticket in trainings.get(trial.user_attrs.get("spec_hash"), {}).items() if predicted else ():
                pairs.setdefault(rung, []).append((predicted[rung], ticket.values[0]))
        return [(rung, len(found), spearman_rho([p for p, _ in found], [a for _, a in found]))
                for rung, found in sorted(pairs.items()) if len(found) >= 3]

    def hypervolume(self) -> float | None:
        """Hypervolume of the front (validation accuracy at the top rung, cost as a share of the objective's
        budget; reference: the budget, accuracy 0; `bsnas.search.hypervolume`); None without such a budget."""
        if self.budget is None:
            return None
        return hypervolume([tuple(point.values) for point in self.front()], self.budget)

    @property
    def top(self) -> int:
        """The highest rung with a finished training."""
        return top_rung(self.rungs)

    def front(self, rung: int | None = None) -> list[FrozenTrial]:
        """Non-dominated trainings at `rung` (default the top one), cheapest first: Optuna's `best_trials` of the
        rung study (its complete tickets are its trainings, one per architecture)."""
        return sorted(self.rungs[self.top if rung is None else rung].best_trials,
                      key=lambda t: (t.values[1], -t.values[0], t.number))

    def trainings(self) -> dict[str, dict[int, FrozenTrial]]:
        """spec hash -> rung -> the finished training there."""
        found: dict[str, dict[int, FrozenTrial]] = {}
        for rung, study in enumerate(self.rungs):
            for ticket in results(study):
                found.setdefault(ticket.user_attrs["spec_hash"], {})[rung] = ticket
        return found

    def highest_training(self, trial: FrozenTrial) -> tuple[int, FrozenTrial] | None:
        """(rung, training) of the trial's architecture at the highest rung it reached; None if it was never
        trained."""
        by_rung = self.trainings().get(trial.user_attrs.get("spec_hash"), {})
        return max(by_rung.items(), default=None)

    def trial(self, number: int) -> FrozenTrial:
        trials = self.study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise BsnasError(f"the study {self.name!r} has no trial {number}.")
        return trials[number]

    def best_zoo(self) -> tuple[int, FrozenTrial] | None:
        """(rung, training) of the most accurate zoo model at the highest rung a zoo model reached: the front's
        rung when one got there (the comparison at equal fidelity), a lower one when the search ended first."""
        return best_zoo(self.rungs)


def best_zoo(rungs: list[optuna.Study]) -> tuple[int, FrozenTrial] | None:
    """(rung, training) of the most accurate zoo model at the highest rung of `rungs` that holds one."""
    for rung in range(top_rung(rungs), -1, -1):
        zoo = [t for t in results(rungs[rung]) if t.user_attrs.get("zoo")]
        if zoo:
            return rung, min(zoo, key=best_first)
    return None


def pick(record: SearchRecord, choice: str = "knee") -> FrozenTrial:
    """One architecture: `max-acc`, `min-cost`, `knee` of the front (the point farthest above the line between
    its ends, on log cost) or `trial:N`, any trial of the search."""
    if choice.startswith("trial:"):
        try:
            number = int(choice.partition(":")[2])
        except ValueError:
            raise BsnasError(f"--pick {choice!r}: trial:N needs a trial number, e.g. trial:12.") from None
        trial = record.trial(number)
        if trial.user_attrs.get("status") == "infeasible":
            raise BsnasError(f"--pick {choice!r}: trial {number} is over the budget "
                             f"({trial.user_attrs.get('reason')}).")
        if trial.user_attrs.get("spec") is None or trial.state != TrialState.COMPLETE:
            raise BsnasError(f"--pick {choice!r}: trial {number} did not finish.")
        return trial
    if choice not in PICKS:
        raise BsnasError(f"--pick {choice!r} is not one of {', '.join(PICKS)}.")
    front = record.front()
    if not front:
        raise BsnasError(f"study {record.name!r} has no finished training yet.")
    if choice == "min-cost":
        return front[0]
    if choice == "max-acc":
        return max(front, key=lambda t: (t.values[0], -t.values[1]))
    return front[knee(front)]


def knee(front: list[FrozenTrial]) -> int:
    """Index of the knee of a front (the most accurate point when it has fewer than three)."""
    if len(front) < 3:
        return max(range(len(front)), key=lambda i: (front[i].values[0], -front[i].values[1]))
    return knee_index([(t.values[1], t.values[0]) for t in front])


def knee_index(points: list[tuple[float, float]]) -> int:
    """Index of the point farthest above the chord between the first and last (cost, accuracy) points."""
    costs = [math.log(max(c, 1e-12)) for c, _ in points]
    accs = [a for _, a in points]
    c0, c1, a0, a1 = min(costs), max(costs), min(accs), max(accs)
    span_c, span_a = (c1 - c0) or 1.0, (a1 - a0) or 1.0
    xs = [(c - c0) / span_c for c in costs]
    ys = [(a - a0) / span_a for a in accs]
    (x0, y0), (x1, y1) = (xs[0], ys[0]), (xs[-1], ys[-1])
    norm = math.hypot(x1 - x0, y1 - y0) or 1.0
    above = [((x1 - x0) * (y - y0) - (x - x0) * (y1 - y0)) / norm for x, y in zip(xs, ys, strict=True)]
    return max(range(len(points)), key=lambda i: above[i])
