"""Trainings, exactly once: every training of an architecture at a rung is a job (a *ticket*) of that rung's study,
`<name>.rung<r>`, beside the search's own study `<name>`.

The scheduler (`bsnas.search.scheduler`) queues, hands out, owns and recovers tickets; their key is the spec hash,
so however many workers or machines, an architecture is trained at most once per rung: a worker that wants
(architecture, rung) trained and finds a ticket that owns it waits for that ticket's result (training the queued
tickets meanwhile), and a ticket whose worker died is failed and queued again by whoever still wants it.

A ticket's values are (accuracy at its rung, cost) and its attributes those of the candidate (`CANDIDATE_ATTRS`:
`spec`, `spec_hash`, `flops`, `params`, `zoo`, `trial`: the search trial it was made for, ...) plus the training's
(`status`, `reason`, `train_seconds`, `seed`, `threads`, `torch`, `worker`), so every rung study is readable on its
own with `optuna.load_study` and `optuna-dashboard`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings
from collections.abc import Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.spec import ArchSpec
from bsnas.arch.validate import spec_from_dict
from bsnas.errors import BsnasError
from bsnas.search.evaluator import Evaluation
from bsnas.search.scheduler import MAX_DEATHS, NO_DEADLINE, Deadline, JobFailed, JobQueue, Stopped

__all__ = ["CANDIDATE_ATTRS", "RUNG_STUDY", "TICKET_KEY", "candidate_attrs", "open_rung_study", "rung_study_name",
           "ticket_queue", "train_once", "training_job"]

TICKET_KEY = "spec_hash"  # what a ticket is for: one architecture (at its study's rung)
CANDIDATE_ATTRS = ("spec", "spec_hash", "flops", "params", "latency_ms", "width_fit", "zoo", "trial", "cost")


RUNG_STUDY = re.compile(r"\.(rung\d+|reference)$")  # the ends of study names that rung and reference studies take


def rung_study_name(name: str, rung: int, label: str | None = None) -> str:
    return f"{name}.{label or f'rung{rung}'}"


def open_rung_study(storage, name: str, rung: int, label: str | None = None) -> optuna.Study:
    """The study of the trainings at `rung` (created on first use), named `<name>.rung<r>` (or `<name>.<label>`);
    a study of that name that is not this search's is refused (another search's rung, or a search of that name)."""
    study_name = rung_study_name(name, rung, label)
    study = optuna.create_study(study_name=study_name, storage=storage, directions=["maximize", "minimize"],
                                load_if_exists=True)
    held = study.user_attrs
    if held.get("rung_of", name) != name or "settings" in held:
        owner = f"search {held['rung_of']!r}" if "rung_of" in held else "another search"
        raise BsnasError(f"study {study_name!r} belongs to {owner}; give this search another --name.")
    if not held.get("rung_of"):
        with warnings.catch_warnings():  # metric names are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"val_accuracy_rung{rung}", "cost"])
        study.set_user_attr("rung", rung)
        study.set_user_attr("rung_of", name)  # last: marks a whole rung study
    return study


def ticket_queue(study: optuna.Study, storage) -> JobQueue:
    """A rung study as the scheduler's queue of trainings."""
    return JobQueue(study, storage, TICKET_KEY)


def candidate_attrs(ticket: FrozenTrial) -> dict:
    """What a ticket says about its candidate (not about its training), to queue it at another rung."""
    return {key: ticket.user_attrs[key] for key in CANDIDATE_ATTRS if key in ticket.user_attrs}


def training_job(evaluate: Callable[[ArchSpec, int], Evaluation], seed: int,
                 rung: int) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The job of a ticket: train the spec it holds at `rung`, recording what the score depends on; a training that
    diverged or ran out of memory is the ticket's result (it fails for good, with the reason)."""

    def train(ticket: optuna.Trial) -> tuple[float, float]:
        held = ticket.user_attrs
        for key, value in {"status": "training", "worker": f"{socket.gethostname()}:{os.getpid()}", "seed": seed,
                           "threads": torch.get_num_threads(), "torch": torch.__version__}.items():
            ticket.set_user_attr(key, value)
        result = evaluate(spec_from_dict(json.loads(held["spec"]), source=f"ticket {ticket.number}"), rung)
        ticket.set_user_attr("train_seconds", result.seconds)
        if result.status != "completed":
            raise JobFailed(result.status, result.reason)
        ticket.set_user_attr("status", "trained")
        return result.accuracy, held["cost"]

    return train


def train_once(queue: JobQueue, attrs: dict, job: Callable[[optuna.Trial], tuple[float, float]],
               deadline: Deadline = NO_DEADLINE, poll_s: float = 1.0) -> FrozenTrial:
    """The finished ticket holding the result of training `attrs["spec"]` at this queue's rung: trained here when
    no other worker owns it, else awaited, training the queued tickets meanwhile. Every wait is bounded: an owner
    whose worker died is failed by recovery within the grace period and queued again here (given up after
    `MAX_DEATHS`: `JobFailed`), and after the deadline a training that has not started is not started (`Stopped`)."""
    digest = attrs[TICKET_KEY]
    while True:
        jobs = queue.jobs()
        owner = queue.owner(digest, jobs)
        if owner is None:
            if queue.settled(digest, jobs):
                raise JobFailed("given_up", f"its training was killed {MAX_DEATHS} times (its workers died)")
            queue.put(attrs)
        elif owner.state == TrialState.WAITING:
            if deadline.passed():
                raise Stopped("the --timeout came before its training started")
            queue.run_next(job)
        elif owner.state == TrialState.RUNNING:
            time.sleep(poll_s)
            queue.recover()
        else:
            return owner
