"""Trainings, exactly once: every training of an architecture at a rung is a trial (a *ticket*) of that rung's
study, `<name>.rung<r>`, beside the search's own study `<name>`.

Optuna has no compare-and-set, but it numbers the trials of a study one after another. A worker that wants
(architecture, rung) trained opens a ticket and then looks: the lowest-numbered ticket of that architecture
that has not failed owns the training, later ones are pruned at once and their workers wait for the owner's
result. Of two workers opening tickets at the same moment, the later one always sees the earlier ticket, so
exactly one trains. A ticket is queued (WAITING, created with its spec in one write) and then taken from the
queue, which Optuna hands out atomically; it runs under `Study.optimize`, with heartbeats: when the owner's worker
dies its ticket is failed and queued again (Optuna's retry callback), and the next worker that looks takes it.
A worker that takes a ticket from the queue may get another architecture's (a retry, or in a multi-fidelity
search a promotion): it trains that first, then looks again.

A ticket's values are (accuracy at its rung, cost) and its attributes those of the candidate (`spec`,
`spec_hash`, `flops`, `params`, `zoo`, `trial`: the search trial it was made for) plus the training's
(`status`, `reason`, `train_seconds`, `seed`, `threads`, `torch`, `worker`), so every rung study is readable on
its own with `optuna.load_study` and `optuna-dashboard`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.spec import ArchSpec
from bsnas.arch.validate import spec_from_dict
from bsnas.search.evaluator import TRAINING_FAILURES, Evaluation

__all__ = ["CANDIDATE_ATTRS", "TrialFailed", "candidate_attrs", "rung_study_name", "open_rung_study", "queue_ticket",
           "run_queued_ticket", "ticket_owner", "train_once"]


class TrialFailed(Exception):
    """The candidate could not be scored (its training diverged or ran out of memory); the trial fails with the
    reason in its attributes and the search goes on."""


def rung_study_name(name: str, rung: int, label: str | None = None) -> str:
    return f"{name}.{label or f'rung{rung}'}"


def open_rung_study(storage, name: str, rung: int, label: str | None = None) -> optuna.Study:
    """The study of the trainings at `rung` (created on first use), named `<name>.rung<r>` (or `<name>.<label>`)."""
    study = optuna.create_study(study_name=rung_study_name(name, rung, label), storage=storage,
                                directions=["maximize", "minimize"], load_if_exists=True)
    if not study.user_attrs.get("rung_of"):
        with warnings.catch_warnings():  # metric names are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"val_accuracy_rung{rung}", "cost"])
        study.set_user_attr("rung", rung)
        study.set_user_attr("rung_of", name)  # last: marks a whole rung study
    return study


def ticket_owner(study: optuna.Study, digest: str, before: int | None = None) -> FrozenTrial | None:
    """The ticket that owns the training of `digest`: the lowest-numbered one that has not failed or been pruned
    (a failed training counts: it is a result); with `before`, only tickets numbered below it."""
    for ticket in study.get_trials(deepcopy=False):
        if before is not None and ticket.number >= before:
            break
        if ticket.user_attrs.get("spec_hash") != digest:
            continue
        failed_training = ticket.state == TrialState.FAIL and ticket.user_attrs.get("status") in TRAINING_FAILURES
        if ticket.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) or failed_training:
            return ticket
    return None


def _train_ticket(ticket: optuna.Trial, evaluate: Callable[[ArchSpec, int], Evaluation], seed: int,
                  rung: int) -> tuple[float, float]:
    """The objective of a ticket: train the spec it holds unless a lower-numbered ticket owns that training."""
    import torch

    held = ticket.user_attrs
    if held.get("spec") is None:  # the queue was empty after all: Optuna made a new, empty ticket
        ticket.set_user_attr("status", "surplus")
        raise optuna.TrialPruned("no queued training was left")
    owner = ticket_owner(ticket.study, held["spec_hash"], before=ticket.number)
    if owner is not None:
        ticket.set_user_attr("status", "surplus")
        raise optuna.TrialPruned(f"ticket {owner.number} trains it")
    for key, value in {"status": "training", "worker": f"{socket.gethostname()}:{os.getpid()}", "seed": seed,
                       "threads": torch.get_num_threads(), "torch": torch.__version__}.items():
        ticket.set_user_attr(key, value)
    result = evaluate(spec_from_dict(json.loads(held["spec"]), source=f"ticket {ticket.number}"), rung)
    ticket.set_user_attr("train_seconds", result.seconds)
    if result.status != "completed":
        ticket.set_user_attr("status", result.status)
        ticket.set_user_attr("reason", result.reason)
        raise TrialFailed(result.reason)
    ticket.set_user_attr("status", "trained")
    return result.accuracy, held["cost"]


CANDIDATE_ATTRS = ("spec", "spec_hash", "flops", "params", "latency_ms", "width_fit", "zoo", "trial", "cost")


def candidate_attrs(ticket: FrozenTrial) -> dict:
    """What a ticket says about its candidate (not about its training), to queue it at another rung."""
    return {key: ticket.user_attrs[key] for key in CANDIDATE_ATTRS if key in ticket.user_attrs}


def queue_ticket(study: optuna.Study, attrs: dict) -> None:
    """Queue a training of `attrs["spec"]` (attributes of a candidate, with `cost`), in one write."""
    study.enqueue_trial({}, user_attrs=attrs, skip_if_exists=False)


def run_queued_ticket(study: optuna.Study, evaluate: Callable[[ArchSpec, int], Evaluation], seed: int) -> None:
    """Take the lowest queued ticket of the study and train it at the study's rung (or prune it, when another
    ticket owns that training)."""
    rung = study.user_attrs["rung"]
    study.optimize(lambda ticket: _train_ticket(ticket, evaluate, seed, rung), n_trials=1, catch=(TrialFailed,),
                   gc_after_trial=False)


def train_once(study: optuna.Study, attrs: dict, evaluate: Callable[[ArchSpec, int], Evaluation], seed: int,
               poll_s: float = 1.0) -> FrozenTrial:
    """The finished ticket holding the result of training `attrs["spec"]` at this study's rung: trained here if no
    other worker owns it, else awaited (training other queued tickets meanwhile). Every wait is bounded: an owner
    whose worker dies stops beating, is failed, queued again and taken here."""
    digest = attrs["spec_hash"]
    while True:
        owner = ticket_owner(study, digest)
        if owner is None:
            queue_ticket(study, attrs)
            continue
        if owner.state == TrialState.WAITING:
            run_queued_ticket(study, evaluate, seed)
            continue
        if owner.state != TrialState.RUNNING:
            return owner
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll_s)
