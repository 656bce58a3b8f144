"""The study of a search: create it in its storage with the search's settings and space, or open it (a resumed
search, a joining worker, a report); a resumed study must keep its settings.

The study's user attributes hold the search settings (`config`, without secrets; `settings`, what a trial's result
depends on) and the space (`space`): `bsnas report/export/retrain` and `bsnas worker` need only the storage. What
runs in it is the scheduler's (`bsnas.search.scheduler`, `bsnas.search.slots`).
"""

from __future__ import annotations

import time

import optuna

from bsnas.errors import BsnasError, StorageFault
from bsnas.search.config import COST_UNITS, SETTINGS_BEFORE, SearchConfig, config_from_dict
from bsnas.search.front import SearchRecord
from bsnas.search.logs import quiet_optuna
from bsnas.search.rungs import open_rung_study
from bsnas.search.storage import empty_sqlite_file, open_storage, redact_url
from bsnas.space.decode import SearchSpace
from bsnas.space.load import space_from_dict
from bsnas.text import setting_changes
from bsnas.train.rundir import make_run_dir, run_path

__all__ = ["create_study", "join_study", "load_record", "load_study", "open_search"]


def create_study(config: SearchConfig, space: SearchSpace) -> optuna.Study:
    """Create the study `config.name` in its storage, or open it; a resumed study must keep its settings and space,
    and a name that another search's rung studies use is refused."""
    quiet_optuna()
    if config.storage is None:
        make_run_dir(config.run_dir)
    storage = open_storage(config.storage_url, config.heartbeat_s)
    try:
        study = optuna.create_study(study_name=config.name, storage=storage, directions=["maximize", "minimize"])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.name, storage=storage)
        if "rung_of" in study.user_attrs:
            raise BsnasError(f"study {config.name!r} in {redact_url(config.storage_url)} is a rung study of search "
                             f"{study.user_attrs['rung_of']!r}; give another --name.") from None
        _await_settings(study, config)
    else:  # made here (only one of several searches started together is): "settings" last marks it whole
        study.set_metric_names(["val_accuracy", COST_UNITS[config.objective][0]])
        study.set_user_attr("space", space.raw)
        study.set_user_attr("config", config.to_dict())
        study.set_user_attr("settings", config.study_settings())
    held = study.user_attrs  # one read of the storage, after this search or another wrote them
    saved = {**SETTINGS_BEFORE, **held["settings"]}
    if saved != config.study_settings():
        changed = setting_changes(saved, config.study_settings(), label=lambda key: "--" + (
            key.replace("_", "-").rstrip("s") if key == "budgets" else key.replace("_", "-")))
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


def open_search(config: SearchConfig, storage, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The study of a search that `create_study` made, with this worker's sampler."""
    return optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)


def load_record(name: str, storage: str | None = None, runs_dir: str = "runs", rungs: bool = True) -> SearchRecord:
    """Open an existing search: its study and its rung studies (`runs/<name>/study.db` unless `storage`)."""
    quiet_optuna()
    path = run_path(runs_dir, name) / "study.db"
    if storage is None and not path.exists():
        raise BsnasError(f"{path} does not exist; run `bsnas search --name {name}` first or pass --storage.")
    url = storage or f"sqlite:///{path}"
    if file := empty_sqlite_file(url):
        raise StorageFault(f"{file} is empty (0 bytes): the study it held is gone; restore it from a backup, or run "
                           "the search again (delete the empty file first).")
    opened = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        raise BsnasError(f"no study named {name!r} in {redact_url(url)}.") from None
    count = study.user_attrs.get("config", {}).get("rungs", 1) if rungs else 0
    return SearchRecord(study, [open_rung_study(opened, name, rung) for rung in range(count)])
