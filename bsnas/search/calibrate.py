"""How well each rung ranks: train candidates at every rung of a ladder and with a longer reference schedule, and
compare the rankings (`bsnas calibrate`).

Candidates are K feasible random points of a space (shrunk into the budget as the search does) plus the zoo
models that are points of it. Every (candidate, rung) and every reference training is a ticket of a study in
`runs/<RUN>/calibrate.db` (`<RUN>.rung<r>`, `<RUN>.reference`), queued up front and run by the workers through
the search's scheduler (`bsnas.search.scheduler`: one owner per candidate and study, dead workers' tickets
recovered and queued again), so a run can be killed and resumed without training anything twice. The report
ranks the rungs against the reference by Kendall's tau and Spearman's rho, beside FLOPs and parameters as the
trivial predictors (strong baselines in the literature) and the search's performance predictor (cross-validated
over the candidates), over all candidates and per cost range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState

from bsnas.arch.cost import cost
from bsnas.arch.spec import ArchSpec, spec_hash, spec_to_dict
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import get_spec
from bsnas.errors import BsnasError
from bsnas.search.budget import Budget
from bsnas.search.candidate import measure_candidate
from bsnas.search.evaluator import Evaluation, ProxyEvaluator
from bsnas.search.logs import quiet_optuna
from bsnas.search.predictor import Predictor, Training
from bsnas.search.processes import STORAGE_LOST, run_processes
from bsnas.search.promotion import results
from bsnas.search.ranking import kendall_tau, spearman_rho
from bsnas.search.rungs import TICKET_KEY, open_rung_study, ticket_queue, training_job
from bsnas.search.scheduler import NO_DEADLINE, JobQueue, work
from bsnas.search.storage import guard_storage, open_storage, storage_lost
from bsnas.search.warm_start import zoo_slots
from bsnas.space.decode import SearchSpace
from bsnas.text import setting_changes
from bsnas.train.config import preset

__all__ = ["PREDICTOR_FOLDS", "REFERENCE", "CalibrationEvaluator", "Calibration", "candidates", "collect",
           "correlations", "predicted_reference", "prepare", "progress", "run"]

REFERENCE = -1  # the rung number of the reference trainings
PREDICTOR_FOLDS = 5  # cross-validation of the predictor's ranking (`predicted_reference`)


@dataclass(frozen=True)
class CalibrationEvaluator:
    """Trains at a rung of the proxy ladder, or (rung `REFERENCE`) with the paper's schedule for `epochs` epochs on
    the whole training split (crop and flip, as `bsnas retrain --epochs E`), scored on the validation split."""

    proxy: ProxyEvaluator
    reference_epochs: int = 3

    def training(self, rung: int):
        """The `TrainConfig` of a rung, or of the reference (rung `REFERENCE`)."""
        if rung != REFERENCE:
            return self.proxy.train_config(rung)
        return preset("paper", epochs=self.reference_epochs, final_test=False, device=self.proxy.device,
                      seed=self.proxy.seed)

    def __call__(self, spec: ArchSpec, rung: int = 0) -> Evaluation:
        return self.proxy.train_with(spec, self.training(rung))


def candidates(space: SearchSpace, budgets: tuple[Budget, ...], count: int, seed: int = 0,
               zoo: str | None = None) -> list[ArchSpec]:
    """`count` distinct feasible random points of the space (shrunk into the budgets as the search does), then the
    zoo models that are points of it, fit the budgets and match `zoo`."""
    rng, found, seen = random.Random(seed), [], set()
    for _ in range(count * 200):
        if len(found) == count:
            break
        spec, params = space.random_spec(rng)
        candidate = measure_candidate(space, spec, params, budgets)
        digest = spec_hash(candidate.spec)
        if candidate.feasible and digest not in seen:
            seen.add(digest)
            found.append(dataclasses.replace(candidate.spec, name=f"{space.name}_c{len(found)}"))
    for name, _ in zoo_slots(space, budgets, zoo) if zoo is not None else []:
        spec = get_spec(name, space.num_classes, space.in_channels, space.image_size)
        if spec_hash(spec) not in seen:
            seen.add(spec_hash(spec))
            found.append(spec)
    return found


@dataclass(frozen=True)
class Calibration:
    """Where a calibration lives, what it trains (`specs`, each at every rung and with the reference) and how."""

    name: str
    storage_url: str
    rungs: int
    evaluator: CalibrationEvaluator
    specs: tuple[ArchSpec, ...] = ()
    workers: int = 1
    threads: int = 1
    heartbeat_s: int = 10

    @property
    def levels(self) -> list[int]:
        """The rung of every study of `studies()`: 0, 1, ..., then `REFERENCE`."""
        return [*range(self.rungs), REFERENCE]

    def studies(self, storage) -> list[optuna.Study]:
        """The rung studies, then the reference study (last)."""
        return [*(open_rung_study(storage, self.name, rung) for rung in range(self.rungs)),
                open_rung_study(storage, self.name, REFERENCE, label="reference")]

    def tickets(self) -> list[dict]:
        """The attributes of every candidate's ticket (the same in every study)."""
        found = []
        for spec in self.specs:
            flops, params = cost(spec)
            found.append({"spec": json.dumps(spec_to_dict(spec)), TICKET_KEY: spec_hash(spec), "flops": flops,
                          "params": params, "cost": flops / 1e6})
        return found


def _check_training(study: optuna.Study, training: dict) -> None:
    """Record the training settings of a study's tickets, or refuse other settings than those it holds."""
    held = study.user_attrs.get("training")
    if held is None:
        study.set_user_attr("training", training)
    elif held != training:
        raise BsnasError(f"the trainings of {study.study_name} were made with other settings "
                         f"({setting_changes(held, training)}); run the calibration with the same ones or give "
                         "another --name.")


def _queue_missing(queues: list[JobQueue], tickets: list[dict]) -> bool:
    """Queue every candidate's training in every study that no ticket owns (or that was given up); returns whether
    anything was queued."""
    queued = False
    for queue in queues:
        jobs = queue.jobs()
        for ticket in tickets:
            if not queue.settled(ticket[TICKET_KEY], jobs):
                queue.put(ticket)
                queued = True
    return queued


def prepare(calibration: Calibration) -> None:
    """Queue one training of every candidate in every study (those already there are kept); a resumed calibration
    must keep the training settings of every study."""
    quiet_optuna()
    storage = open_storage(calibration.storage_url, calibration.heartbeat_s)
    studies = calibration.studies(storage)
    for rung, study in zip(calibration.levels, studies, strict=True):
        _check_training(study, json.loads(json.dumps(dataclasses.asdict(calibration.evaluator.training(rung)))))
    _queue_missing([ticket_queue(study, storage) for study in studies], calibration.tickets())


def _worker(calibration: Calibration) -> None:
    """Train queued tickets, the reference (longest) first, then the rungs from the top, so the work ends together;
    a ticket a dead worker left is queued again."""
    torch.set_num_threads(calibration.threads)
    quiet_optuna()
    with guard_storage(calibration.storage_url):
        _work(calibration)


def _work(calibration: Calibration) -> None:
    storage = open_storage(calibration.storage_url, calibration.heartbeat_s)
    queues = [ticket_queue(study, storage) for study in calibration.studies(storage)]
    trainings = [training_job(calibration.evaluator, calibration.evaluator.proxy.seed, rung)
                 for rung in calibration.levels]
    tickets = calibration.tickets()

    def queued() -> bool:
        waiting = next((i for i in reversed(range(len(queues))) if queues[i].has(TrialState.WAITING)), None)
        if waiting is not None:
            queues[waiting].run_next(trainings[waiting])
        return waiting is not None

    work(queues, [queued, lambda: _queue_missing(queues, tickets)], NO_DEADLINE, calibration.heartbeat_s)


def progress(calibration: Calibration, studies: list[optuna.Study]) -> str:
    """Finished trainings per study of `calibration.studies()`, e.g. `rung 0 18/18, rung 1 5/18, reference 12/18`."""
    labels = [f"rung {rung}" for rung in range(calibration.rungs)] + ["reference"]
    return ", ".join(f"{label} {len(results(study))}/{len(calibration.specs)}"
                     for label, study in zip(labels, studies, strict=True))


def run(calibration: Calibration, report=None, every_s: float = 30.0) -> int:
    """Train everything queued, in `calibration.workers` processes; returns how many workers failed. `report`, if
    given, receives `progress()` whenever it changed (checked every `every_s` seconds)."""
    studies = calibration.studies(open_storage(calibration.storage_url, calibration.heartbeat_s))
    shown = None

    def show() -> None:
        nonlocal shown
        if report is not None and (line := progress(calibration, studies)) != shown:
            report(shown := line)

    with guard_storage(calibration.storage_url):
        codes = run_processes(_worker, [(calibration,)] * calibration.workers, "bsnas-calibrate", every_s, show)
    if STORAGE_LOST in codes:
        raise storage_lost(calibration.storage_url)
    return sum(code != 0 for code in codes)


def collect(calibration: Calibration) -> list[dict]:
    """One row per candidate with a reference result: name, FLOPs, params, accuracy at every rung and reference."""
    storage = open_storage(calibration.storage_url, calibration.heartbeat_s)
    studies = calibration.studies(storage)
    by_hash: dict[str, dict] = {}
    for index, study in enumerate(studies):
        key = "reference" if index == len(studies) - 1 else f"rung{index}"
        for ticket in results(study):
            row = by_hash.setdefault(ticket.user_attrs["spec_hash"], {
                "name": json.loads(ticket.user_attrs["spec"])["name"], "flops": ticket.user_attrs["flops"],
                "params": ticket.user_attrs["params"], "spec_hash": ticket.user_attrs["spec_hash"],
                "spec": ticket.user_attrs["spec"]})
            row[key] = ticket.values[0]
            row[f"{key}_seconds"] = ticket.user_attrs.get("train_seconds")
    rows = [row for row in by_hash.values() if "reference" in row]
    return sorted(rows, key=lambda row: row["flops"])


def predicted_reference(rows: list[dict], rungs: int, folds: int = PREDICTOR_FOLDS, seed: int = 0) -> list[float]:
    """The reference accuracy of every row as the search's predictor (`bsnas.search.predictor`) predicts it from the
    architecture alone, fitted on the other folds' trainings (every rung, and the reference as the rung above the top):
    how well it ranks candidates it has not seen. Rows are dealt to the `folds` folds in turn."""
    specs = {row["spec_hash"]: spec_from_dict(json.loads(row["spec"]), source=row["name"]) for row in rows}
    levels = [*((f"rung{r}", r) for r in range(rungs)), ("reference", rungs)]
    found = [math.nan] * len(rows)
    for fold in range(folds):
        held = [index for index in range(len(rows)) if index % folds == fold]
        trainings = [Training(row["spec_hash"], rung, row[key]) for index, row in enumerate(rows)
                     if index % folds != fold for key, rung in levels if key in row]
        predictor = Predictor(seed).fit(trainings, specs)
        mean, _ = predictor.predict([predictor.encode(rows[i]["spec_hash"], specs[rows[i]["spec_hash"]])
                                     for i in held], [rungs])
        for index, value in zip(held, mean[0], strict=True):
            found[index] = float(value)
    return found


def correlations(rows: list[dict], rungs: int) -> list[dict]:
    """Per predictor (FLOPs, params, each rung, and from `PREDICTOR_FOLDS` candidates on the search's predictor,
    cross-validated: `predicted_reference`): Kendall's tau and Spearman's rho against the reference, over all
    candidates and per third of the cost range."""
    thirds = [rows[len(rows) * i // 3:len(rows) * (i + 1) // 3] for i in range(3)] if len(rows) >= 9 else []
    table = []
    predictors = ["flops", "params", *(f"rung{r}" for r in range(rungs))]
    if len(rows) >= PREDICTOR_FOLDS:
        for row, value in zip(rows, predicted_reference(rows, rungs), strict=True):
            row["predictor"] = value
        predictors.append("predictor")
    for predictor in predictors:
        complete = [row for row in rows if predictor in row]
        entry = {"predictor": predictor, "n": len(complete),
                 "kendall": kendall_tau([r[predictor] for r in complete], [r["reference"] for r in complete]),
                 "spearman": spearman_rho([r[predictor] for r in complete], [r["reference"] for r in complete])}
        for index, part in enumerate(thirds):
            part = [row for row in part if predictor in row]
            entry[f"spearman_third{index + 1}"] = spearman_rho([r[predictor] for r in part],
                                                               [r["reference"] for r in part])
        table.append(entry)
    return table
