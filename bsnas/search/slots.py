"""The trials of a search with --trials N: N *slots*, jobs of the search's study (`bsnas.search.scheduler`, key
`slot`).

Slot k holds the k-th zoo model of the warm start (`set_zoo_slots`) or nothing (the sampler fills it in). Every
worker that looks queues the slots that are not settled (`queue_slots`), and the scheduler's one rule of ownership
keeps one trial per slot, so however many processes or machines work on a study it ends with exactly N done: a
slot whose trial died is queued again with that trial's parameters (the same architecture runs again), a sampled
architecture whose training failed is replaced by a new sample, a zoo model that failed in training is done.
(Optuna's `MaxTrialsCallback` stops a worker once N trials are complete, but workers that start trials at once
overshoot it; slots give exactly N.)
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.search.scheduler import JobQueue, attempts, owner, standing

__all__ = ["SLOT_KEY", "count_trials", "queue_slots", "set_zoo_slots", "slots_done"]

SLOT_KEY = "slot"


def set_zoo_slots(study: optuna.Study, zoo: list[tuple[str, dict]]) -> None:
    """Record which zoo model fills which first slot, so that every worker queues the same."""
    study.set_user_attr("zoo_slots", [[name, params] for name, params in zoo])


def queue_slots(queue: JobQueue, target: int) -> int:
    """Queue every slot 0..target-1 that no trial owns; returns how many were queued."""
    zoo = queue.study.user_attrs.get("zoo_slots", [])
    jobs = queue.jobs()
    queued = 0
    for slot in range(target):
        if owner(jobs, SLOT_KEY, slot) is not None:
            continue
        tried = attempts(jobs, SLOT_KEY, slot)
        attrs = {SLOT_KEY: slot}
        if slot < len(zoo):
            attrs["zoo"], params = zoo[slot]
        else:
            params = _unfinished_params(tried)
        if tried:
            attrs["retry_of"] = tried[-1].number
        queue.put(attrs, params)
        queued += 1
    return queued


def _unfinished_params(tried: list[FrozenTrial]) -> dict:
    """The architecture a slot's trials that died or were stopped had sampled (the latest that got so far): it runs
    again as it was. After a failed training, or when none had sampled yet: a new sample ({})."""
    for job in reversed(tried):
        if standing(job) not in ("died", "stopped"):
            break
        if job.params:
            return job.params
    return {}


def slots_done(jobs: Sequence[FrozenTrial]) -> int:
    """Slots that are done: a complete trial, or one that failed for good (a zoo model whose training failed)."""
    return len({job.user_attrs[SLOT_KEY] for job in jobs if SLOT_KEY in job.user_attrs and standing(job) == "done"})


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state, plus `feasible`, `trained` and `duplicate` counts of the complete ones and `slots` done."""
    counts = {"complete": 0, "running": 0, "waiting": 0, "fail": 0, "pruned": 0, "feasible": 0, "trained": 0,
              "duplicate": 0}
    jobs = study.get_trials(deepcopy=False)
    for job in jobs:
        counts[job.state.name.lower()] = counts.get(job.state.name.lower(), 0) + 1
        if job.state == TrialState.COMPLETE:
            status = job.user_attrs.get("status")
            counts["feasible"] += status != "infeasible"
            counts["trained"] += status == "trained"
            counts["duplicate"] += status == "duplicate"
    counts["slots"] = slots_done(jobs)
    return counts
