"""One training of a search, set up again exactly: `bsnas train RUN:trial:N [--rung R]`.

A search trial's score is a function of its architecture, the seed, the data, the rung's training, the torch
threads and the torch version (`bsnas.search.evaluator`); the study records all of them. `trial_training`
rebuilds that training from the record, so that `bsnas train` gives the same validation accuracy on a machine
with the same torch version (float results may differ on other CPUs or torch builds).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.search.config import config_from_dict
from bsnas.search.evaluator import ProxyEvaluator
from bsnas.search.front import SearchRecord, trial_spec
from bsnas.train.config import TrainConfig
from bsnas.train.data import DataConfig

__all__ = ["TRIAL_SOURCE", "TrialTraining", "parse_trial_source", "trial_training"]

TRIAL_SOURCE = re.compile(r"(?P<run>[^:]+):trial:(?P<number>\d+)")


def parse_trial_source(text: str) -> tuple[str, int] | None:
    """(run name, trial number) of `RUN:trial:N`, else None."""
    match = TRIAL_SOURCE.fullmatch(text)
    return (match["run"], int(match["number"])) if match else None


@dataclass(frozen=True)
class TrialTraining:
    """What a search trial's training at `rung` was, ready for `bsnas.train`, and what the search recorded."""

    number: int
    rung: int
    spec: ArchSpec
    config: TrainConfig
    data_config: DataConfig
    data: Any
    recorded_accuracy: float
    recorded_torch: str | None


def trial_training(record: SearchRecord, number: int, rung: int | None = None) -> TrialTraining:
    """The training of trial `number` at `rung` (default: the highest rung it reached), with the seed and threads
    the search used; a trial that was not trained there is a BsnasError that says where it was."""
    trial = record.trial(number)
    trainings = record.trainings().get(trial.user_attrs.get("spec_hash"), {})
    if not trainings:
        status = trial.user_attrs.get("status") or trial.state.name.lower()
        raise BsnasError(f"trial {number} of {record.name!r} was not trained ({status}); nothing to reproduce.")
    rung = max(trainings) if rung is None else rung
    if rung not in trainings:
        raise BsnasError(f"--rung {rung}: trial {number} was trained at rung(s) "
                         f"{', '.join(map(str, sorted(trainings)))} only.")
    ticket = trainings[rung]
    settings = config_from_dict(record.study.user_attrs.get("config", {}), storage=None,
                                latency_table=None)  # a training needs no latency (nor this machine's table)
    evaluator = ProxyEvaluator.for_search(settings, ticket.user_attrs.get("seed"))
    config = dataclasses.replace(evaluator.train_config(rung), threads=ticket.user_attrs.get("threads"))
    return TrialTraining(number, rung, trial_spec(ticket), config,
                         DataConfig(dataset=settings.dataset, data_root=settings.data_root), evaluator.data(),
                         ticket.values[0], ticket.user_attrs.get("torch"))
