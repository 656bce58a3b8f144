"""The Pareto front of a search study and the picks from it (max-acc, knee, min-cost, trial:N).

The front is Optuna's (`study.best_trials`: feasible trials no other feasible trial dominates in
validation accuracy and cost), with repeated architectures (same spec hash) kept once.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from bsnas.arch.spec import ArchSpec
from bsnas.arch.validate import spec_from_dict
from bsnas.errors import BsnasError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["PICKS", "objective_unit", "pareto_trials", "pick_trial", "trial_spec", "knee_index"]

PICKS = ("max-acc", "knee", "min-cost", "trial:N")


def objective_unit(study: optuna.Study) -> tuple[str, str]:
    """(cost kind, unit) of the study's second objective."""
    kind = study.user_attrs.get("config", {}).get("objective", "flops")
    return kind, {"flops": "MFLOPs", "params": "Mparams", "latency": "ms"}[kind]


def trial_spec(trial: FrozenTrial) -> ArchSpec:
    """The ArchSpec a trial evaluated, from its user attributes (no re-sampling)."""
    text = trial.user_attrs.get("spec")
    if text is None:
        raise BsnasError(f"trial {trial.number} holds no architecture (it did not finish).")
    return spec_from_dict(json.loads(text), source=f"trial {trial.number}")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated trials by increasing cost, one per architecture."""
    seen: set[str] = set()
    front = []
    for trial in sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number)):
        if trial.user_attrs.get("status") == "infeasible":
            continue
        digest = trial.user_attrs.get("spec_hash")
        if digest in seen:
            continue
        seen.add(digest)
        front.append(trial)
    return front


def pick_trial(study: optuna.Study, pick: str = "knee") -> FrozenTrial:
    """One trial: `max-acc`, `min-cost`, `knee` (front point farthest from the line between its ends) or `trial:N`."""
    if pick.startswith("trial:"):
        try:
            number = int(pick.partition(":")[2])
        except ValueError:
            raise BsnasError(f"--pick {pick!r}: trial:N needs a trial number, e.g. trial:12.") from None
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials:
            raise BsnasError(f"--pick {pick!r}: the study has no trial {number}.")
        trial = trials[0]
        if trial.user_attrs.get("status") == "infeasible":
            raise BsnasError(f"--pick {pick!r}: trial {number} is over the budget ({trial.user_attrs.get('reason')}).")
        if trial.user_attrs.get("spec") is None:
            raise BsnasError(f"--pick {pick!r}: trial {number} did not finish.")
        return trial
    if pick not in PICKS:
        raise BsnasError(f"--pick {pick!r} is not one of {', '.join(PICKS)}.")
    front = pareto_trials(study)
    if not front:
        raise BsnasError(f"study {study.study_name!r} has no feasible complete trial yet.")
    if pick == "min-cost":
        return front[0]
    if pick == "max-acc" or len(front) < 3:
        return max(front, key=lambda t: (t.values[0], -t.values[1]))
    return front[knee_index([(t.values[1], t.values[0]) for t in front])]


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


