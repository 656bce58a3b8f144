"""The study's Optuna storage: an RDB storage that commits a running trial's writes in batches.

Optuna writes every suggested parameter and every trial attribute in its own transaction: ~1.5 ms each on
SQLite, so a candidate of the MobileNet space (~64 parameters, ~12 attributes) spent ~90 ms in the database
before it could be rejected. `BatchedRDBStorage` holds those writes in memory and commits them in one
transaction before anything reads a trial or changes a trial's state, and when `commit_trial` is called (before a
long training, so that other workers see the running trial). Reads in this process therefore always see its
own writes; other processes see a running trial's parameters at the next commit.

It writes the rows of Optuna's own schema (`optuna.storages._rdb.models`, private to Optuna 5) as
`RDBStorage` does, with one trial lookup per commit instead of one per row: tests/test_storage.py checks that a
study written through this class is identical to one written through `RDBStorage`, so a change in Optuna fails
CI instead of corrupting studies.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session

from bsnas.errors import BsnasError

HEARTBEAT_S = 10  # a worker's running trial is failed (and retried once) 60 s after its last heartbeat
GRACE_S = 60


class BatchedRDBStorage(RDBStorage):
    """`RDBStorage` whose trial parameter and attribute writes are committed together (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[int, _TrialWrites] = {}
        self._pending_lock = threading.Lock()

    def __getstate__(self) -> dict[Any, Any]:
        self.commit()
        state = super().__getstate__()
        del state["_pending_lock"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._pending_lock = threading.Lock()

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution, previous_distribution: BaseDistribution | None) -> None:
        if previous_distribution is None:  # Optuna's cache knows it after the first trial of this process
            with _create_scoped_session(self.scoped_session) as session:
                study_id = models.TrialModel.find_or_raise_by_id(trial_id, session).study_id
                previous_distribution = _stored_distribution(session, study_id, param_name)
        if previous_distribution is not None:  # refused here, inside `suggest_*`, as RDBStorage does
            distributions.check_distribution_compatibility(previous_distribution, distribution)
        with self._pending_lock:
            self._pending.setdefault(trial_id, _TrialWrites()).params[param_name] = (param_value_internal,
                                                                                     distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._pending_lock:
            self._pending.setdefault(trial_id, _TrialWrites()).user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._pending_lock:
            self._pending.setdefault(trial_id, _TrialWrites()).system_attrs[key] = value

    def commit(self) -> None:
        """Write every pending parameter and attribute in one transaction."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return
            with _create_scoped_session(self.scoped_session) as session, session.no_autoflush:
                for trial_id, writes in pending.items():
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                    self.check_trial_is_updatable(trial_id, trial.state)
                    for name, (value, distribution) in writes.params.items():
                        session.add(models.TrialParamModel(trial_id=trial_id, param_name=name, param_value=value,
                                                           distribution_json=distributions.distribution_to_json(distribution)))
                    _upsert_attrs(session, models.TrialUserAttributeModel, trial_id, writes.user_attrs)
                    _upsert_attrs(session, models.TrialSystemAttributeModel, trial_id, writes.system_attrs)


@dataclass
class _TrialWrites:
    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)  # internal value, distribution
    user_attrs: dict[str, Any] = field(default_factory=dict)  # the last write of a key wins, as in an upsert
    system_attrs: dict[str, Any] = field(default_factory=dict)


def _stored_distribution(session, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution that the study's earlier trials used for parameter `name` (they must all agree)."""
    row = (session.query(models.TrialParamModel).join(models.TrialModel)
           .filter(models.TrialModel.study_id == study_id, models.TrialParamModel.param_name == name).first())
    return None if row is None else distributions.json_to_distribution(row.distribution_json)


def _upsert_attrs(session, model, trial_id: int, attrs: dict[str, Any]) -> None:
    if not attrs:
        return
    stored = {row.key: row for row in session.query(model).filter(model.trial_id == trial_id,
                                                                   model.key.in_(list(attrs)))}
    for key, value in attrs.items():
        if key in stored:
            stored[key].value_json = json.dumps(value)
        else:
            session.add(model(trial_id=trial_id, key=key, value_json=json.dumps(value)))


# every other way of reading a trial or changing its state sees the pending writes first
_COMMIT_FIRST = ("get_trial", "get_trial_param", "get_trial_params", "get_trial_user_attrs",
                 "get_trial_system_attrs", "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id",
                 "set_trial_state_values", "set_trial_intermediate_value", "_create_new_trial", "create_new_trial")


def _committing(name: str):
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def wrapper(self: BatchedRDBStorage, *args: Any, **kwargs: Any) -> Any:
        self.commit()
        return method(self, *args, **kwargs)

    return wrapper


for _name in _COMMIT_FIRST:
    setattr(BatchedRDBStorage, _name, _committing(_name))


def commit_trial(trial: optuna.trial.BaseTrial) -> None:
    """Make a running trial's writes visible to other workers now (a no-op for other storages)."""
    storage = getattr(trial, "storage", None)
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, BatchedRDBStorage):
        backend.commit()


def open_storage(url: str, batched: bool = True) -> RDBStorage:
    """The storage at an Optuna RDB URL, with heartbeats (a dead worker's trial is retried once).

    `batched=False` gives Optuna's own `RDBStorage` with the same settings (the baseline of bench_search.py).
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        with warnings.catch_warnings():  # heartbeats and their retry callback are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = (BatchedRDBStorage if batched else RDBStorage)(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                **kwargs)
        if url.startswith("sqlite"):
            _fast_sqlite(storage.engine)
        return storage
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as error:
        raise BsnasError(f"--storage {url!r}: cannot open this Optuna storage ({error}).") from None
    except Exception as error:  # sqlalchemy raises its own types for bad URLs and unreachable servers
        raise BsnasError(f"--storage {url!r}: cannot open this Optuna storage ({type(error).__name__}: "
                         f"{str(error).splitlines()[0]}).") from None


def _fast_sqlite(engine) -> None:
    """WAL journal and synchronous=NORMAL: commits no longer wait for the disk (~20x faster).

    Safe for many processes on one machine; a power cut may lose the last commits, never corrupt the file.
    """
    import sqlalchemy

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while creating the tables do not have the pragmas
