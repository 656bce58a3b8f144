"""The study of a search: create or join it in its storage, queue its trials, recover the trials of dead workers.

A search of N trials is N *slots*, queued as WAITING trials: slot k holds the k-th zoo model of the warm start
(cheapest first) or nothing (the sampler fills it in). Workers only take WAITING trials, which Optuna hands out
atomically, so however many processes or machines work on a study, it ends with one complete trial per slot:
nothing lost, nothing twice. A slot with no trial that is waiting, running or complete is queued again by the
next worker that looks (`queue_slots`): a sampled architecture whose training failed is replaced by a new
sample, an interrupted trial runs again. Two workers that queue the same slot at once are resolved by trial
number (the lower one owns the slot, the other is pruned without training). A worker that dies leaves a
RUNNING trial whose heartbeats stop: it is failed and re-queued with its parameters (Optuna's retry callback),
so the same architecture runs again before the study can finish.

The study's user attributes hold the search settings (`config`, without secrets) and the space (`space`):
`bsnas report/export/retrain` and `bsnas worker` need only the storage.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models, zoo_family
from bsnas.errors import BsnasError
from bsnas.search.budget import Budget
from bsnas.search.candidate import over_budget
from bsnas.search.config import (
    COST_UNITS,
    SETTINGS_BEFORE,
    SearchConfig,
    config_from_dict,
    setting_flag,
    show_setting,
)
from bsnas.search.evaluator import TRAINING_FAILURES
from bsnas.search.evolution import EvolutionSampler, best_per_bin
from bsnas.search.front import SearchRecord, trial_number
from bsnas.search.rungs import open_rung_study
from bsnas.search.storage import open_storage, redact_url
from bsnas.space.decode import SearchSpace
from bsnas.space.invert import params_of
from bsnas.space.load import space_from_dict
from bsnas.text import setting_changes

__all__ = ["STARTED", "WARM_START_SHARE", "create_study", "join_study", "load_record", "load_study", "zoo_slots",
           "warm_start", "set_zoo_slots",
           "queue_slots",
           "slot_owner",
           "count_trials", "slots_done", "recover_dead_trials", "quiet_optuna"]

STARTED = "started"  # user attribute the objective sets first (the trial's own number): it got past Optuna's start
WARM_START_SHARE = 0.5  # the warm start takes at most this share of --trials: a short search samples too


class _AfterAStop(logging.Filter):
    """Drops Optuna's log from the first record of a trial ended by Ctrl-C or SIGTERM on (its traceback, then
    'failed with value None'): the process is stopping, and a stop is not an error."""

    stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.stopping = True
        return not self.stopping


_AFTER_A_STOP = _AfterAStop()


def quiet_optuna() -> None:
    """Optuna's log at warnings only, without its traceback for a trial that was stopped, and without warnings
    about experimental features."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_AFTER_A_STOP)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _sampler(config: SearchConfig, worker: int = 0, rungs: list[optuna.Study] = ()) -> optuna.samplers.BaseSampler:
    """The sampler of `config` for worker `worker`; evolution takes its parents from the `rungs` studies."""
    seed = config.seed + 1000 * worker
    if config.sampler_name == "evolution":
        budget = config.objective_budget
        return EvolutionSampler(lambda: [trial_number(t) for t in best_per_bin(rungs, budget)] if rungs else [],
                                seed=seed)
    if config.sampler_name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler_name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)


def create_study(config: SearchConfig, space: SearchSpace, worker: int = 0, storage=None,
                 rungs: list[optuna.Study] = ()) -> optuna.Study:
    """Create the study `config.name` in its storage (opened here unless given), or open it; a resumed study must
    keep its settings. `rungs` are the rung studies its sampler learns from (evolution)."""
    quiet_optuna()
    if config.storage is None:
        config.run_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(config.storage_url, config.heartbeat_s)
    sampler = _sampler(config, worker, rungs)
    try:
        study = optuna.create_study(study_name=config.name, storage=storage, sampler=sampler,
                                    directions=["maximize", "minimize"])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
        _await_settings(study, config)
    else:  # made here (only one of several searches started together is): "settings" last marks it whole
        study.set_metric_names(["val_accuracy", COST_UNITS[config.objective][0]])
        study.set_user_attr("space", space.raw)
        study.set_user_attr("config", config.to_dict())
        study.set_user_attr("settings", config.study_settings())
    held = study.user_attrs  # one read of the storage, after this search or another wrote them
    saved = {**SETTINGS_BEFORE, **held["settings"]}
    if saved != config.study_settings():
        changed = setting_changes(saved, config.study_settings(), label=setting_flag, show=show_setting)
        raise BsnasError(f"study {config.name!r} in {redact_url(config.storage_url)} was made with other settings "
                         f"({changed}); resume it with the same ones or give a new --name.")
    if held.get("space") != space.raw:
        raise BsnasError(f"study {config.name!r} was created with another search space than {config.space_file}; "
                         "resume it with the same --space or give a new --name.")
    return study


SETTINGS_WAIT_S = 30.0  # how long a search waits for the search that is making its study to write the settings


def _await_settings(study: optuna.Study, config: SearchConfig) -> None:
    """Wait until the search that made the study has written its settings (it does at once)."""
    deadline = time.monotonic() + SETTINGS_WAIT_S
    while "settings" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise BsnasError(f"study {config.name!r} in {redact_url(config.storage_url)} holds no bsnas search "
                             "settings (not made by bsnas search, or its search stopped while making it); give "
                             "another --name.")
        time.sleep(0.1)


def join_study(name: str, storage: str, **changes) -> tuple[SearchConfig, SearchSpace]:
    """The config and space a study holds, for a worker that joins it (`bsnas worker`); `changes` are this
    machine's own settings (storage URL, workers, threads, device, data root)."""
    study = load_study(name, storage)
    if "config" not in study.user_attrs or "space" not in study.user_attrs:
        raise BsnasError(f"study {name!r} holds no bsnas search settings; it was not made by bsnas search.")
    config = config_from_dict(study.user_attrs["config"], storage=storage, **changes)
    space = space_from_dict(study.user_attrs["space"], source=f"the space of study {name}")
    return config, space


def load_study(name: str, storage: str | None = None, runs_dir: str = "runs") -> optuna.Study:
    """Open an existing study (`runs/<name>/study.db` unless `storage` is given)."""
    return load_record(name, storage, runs_dir, rungs=False).study


def load_record(name: str, storage: str | None = None, runs_dir: str = "runs", rungs: bool = True) -> SearchRecord:
    """Open an existing search: its study and its rung studies (`runs/<name>/study.db` unless `storage`)."""
    from bsnas.train.rundir import run_path

    quiet_optuna()
    path = run_path(runs_dir, name) / "study.db"
    if storage is None and not path.exists():
        raise BsnasError(f"no search {name!r} in {runs_dir}/ ({_searches_in(runs_dir)}): start one, e.g. `bsnas "
                         f"search --budget 20MFLOPs --name {name}`, or pass --storage for one stored elsewhere.")
    url = storage or f"sqlite:///{path}"
    opened = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        raise BsnasError(f"no study named {name!r} in {redact_url(url)}.") from None
    count = study.user_attrs.get("config", {}).get("rungs", 1) if rungs else 0
    return SearchRecord(study, [open_rung_study(opened, name, rung) for rung in range(count)])


def _searches_in(runs_dir: str, shown: int = 5) -> str:
    """`searches there: a, b` (the names of the folders holding a study.db), or `it holds no search`."""
    names = sorted(path.parent.name for path in Path(runs_dir).glob("*/study.db"))
    if not names:
        return "it holds no search"
    return "searches there: " + ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown
                                                            else "")


def zoo_slots(space: SearchSpace, budgets: tuple[Budget, ...], pattern: str | None = None) -> list[tuple[str, dict]]:
    """(name, parameters) of the zoo models of the space's family that are points of the space and fit the
    FLOPs/parameter budgets, cheapest first: the first slots of the search."""
    if space.family is None:
        return []
    static = tuple(b for b in budgets if b.kind != "latency")
    found = []
    for name in list_models("^cifar_"):
        if zoo_family(name) != space.family or (pattern and not re.search(pattern, name)):
            continue
        spec = get_spec(name, space.num_classes, space.in_channels, space.image_size)
        flops, n_params = cost(spec)
        if over_budget({"flops": flops, "params": n_params}, static):
            continue
        params = params_of(space, spec)
        if params is not None:
            found.append((flops, name, params))
    return [(name, params) for _, name, params in sorted(found, key=lambda item: item[:2])]


def warm_start(zoo: list[tuple[str, dict]], trials: int | None) -> list[tuple[str, dict]]:
    """The zoo slots (`zoo_slots`, cheapest first) that a search of `trials` trials starts with: all of them, or at
    most `WARM_START_SHARE` of the trials (a 40-trial search under 20 MFLOPs replayed 34 zoo models and sampled 6).
    The ones kept spread over the cost range: the cheapest, the costliest, the middle one, the quarter points, and
    so on, so that a longer search keeps those of a shorter one; still cheapest first."""
    if trials is None or len(zoo) <= trials * WARM_START_SHARE:
        return zoo
    return [zoo[index] for index in sorted(_spread(len(zoo))[:int(trials * WARM_START_SHARE)])]


def _spread(count: int) -> list[int]:
    """0..count-1 ordered so that every prefix spreads over the range: both ends, then midpoints of the gaps."""
    if count <= 2:
        return list(range(count))
    order, gaps = [0, count - 1], [(0, count - 1)]
    while gaps:
        wider = []
        for low, high in gaps:
            if high - low > 1:
                middle = (low + high) // 2
                order.append(middle)
                wider += [(low, middle), (middle, high)]
        gaps = wider
    return order


def set_zoo_slots(study: optuna.Study, zoo: list[tuple[str, dict]]) -> None:
    """Record which zoo model fills which first slot, so that every worker queues the same."""
    study.set_user_attr("zoo_slots", [[name, params] for name, params in zoo])


def _settled(slot: int, holders: list[FrozenTrial], zoo: list) -> bool:
    """A slot needs no new trial: one is waiting, running or complete, or its zoo model failed in training."""
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) for t in holders):
        return True
    return slot < len(zoo) and any(t.state == TrialState.FAIL and t.user_attrs.get("status") in TRAINING_FAILURES
                                   for t in holders)


def queue_slots(study: optuna.Study, target: int) -> int:
    """Queue every slot 0..target-1 that is not settled (see the module doc); returns how many were queued."""
    zoo = study.user_attrs.get("zoo_slots", [])
    holders: dict[int, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        holders.setdefault(trial.user_attrs.get("slot"), []).append(trial)
    queued = 0
    for slot in range(target):
        if _settled(slot, holders.get(slot, []), zoo):
            continue
        if slot < len(zoo):
            name, params = zoo[slot]
            study.enqueue_trial(params, user_attrs={"slot": slot, "zoo": name}, skip_if_exists=False)
        else:
            study.enqueue_trial({}, user_attrs={"slot": slot}, skip_if_exists=False)
        queued += 1
    return queued


def slot_owner(study: optuna.Study, trial_number: int, slot: int) -> FrozenTrial | None:
    """The trial that owns `slot` if it is not `trial_number`: a lower-numbered one that has not failed."""
    for other in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)):
        if other.number < trial_number and other.user_attrs.get("slot") == slot:
            return other
    return None


def slots_done(trials: Iterable[FrozenTrial], zoo: list) -> int:
    """Slots that are done: a complete trial, or a zoo model that failed in training."""
    holders: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.user_attrs.get("slot") is not None and trial.state in (TrialState.COMPLETE, TrialState.FAIL):
            holders.setdefault(trial.user_attrs["slot"], []).append(trial)
    return sum(_settled(slot, group, zoo) for slot, group in holders.items())


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state, plus `feasible`, `trained` and `duplicate` counts of the complete ones and `slots` done."""
    counts = {"complete": 0, "running": 0, "waiting": 0, "fail": 0, "pruned": 0, "feasible": 0, "trained": 0,
              "duplicate": 0}
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        if trial.state == TrialState.COMPLETE:
            status = trial.user_attrs.get("status")
            counts["feasible"] += status != "infeasible"
            counts["trained"] += status == "trained"
            counts["duplicate"] += status == "duplicate"
    counts["slots"] = slots_done(trials, study.user_attrs.get("zoo_slots", []))
    return counts


def recover_dead_trials(study: optuna.Study, grace_s: float) -> None:
    """Fail the RUNNING trials of workers that died, and queue them again.

    Optuna fails a trial whose heartbeats stopped and its retry callback queues a copy (`fail_stale_trials`). A
    worker killed in the moment between taking a trial and its first heartbeat leaves a trial without any: it
    is recognised after twice `grace_s` by its `started` attribute missing (or copied from the trial it
    retries), failed and queued here (`retry_of` names the trial it replaces).
    """
    optuna.storages.fail_stale_trials(study)
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.datetime_start is None or (now - trial.datetime_start).total_seconds() < 2 * grace_s:
            continue
        if trial.user_attrs.get(STARTED) == trial.number:
            continue  # its objective runs, so its heartbeats run too
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker failed it first
            continue
        attrs = {key: value for key, value in trial.user_attrs.items() if key in ("slot", "zoo")}
        attrs["retry_of"] = trial.number
        study.enqueue_trial(trial.system_attrs.get("fixed_params", {}), user_attrs=attrs, skip_if_exists=False)
