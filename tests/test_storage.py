"""BatchedRDBStorage writes the same study as Optuna's RDBStorage, only in fewer transactions."""

from __future__ import annotations

import pickle

import optuna
import pytest

from bsnas.errors import BsnasError
from bsnas.storage import BatchedRDBStorage, commit_trial, open_storage


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    op = trial.suggest_categorical("op", ["dsc", "bsconv_u", "bsconv_s"])
    p = trial.suggest_float("p", 0.1, 0.5, step=0.05) if op == "bsconv_s" else None  # a conditional parameter
    depth = trial.suggest_int("depth", 1, 4)
    widths = [trial.suggest_int(f"width_{i}", 8, 64, step=8) for i in range(depth)]
    trial.set_user_attr("status", "sampled")
    trial.set_user_attr("spec", {"op": op, "widths": widths})
    trial.set_constraint("flops", sum(widths) - 100.0)
    trial.set_user_attr("status", "trained")  # a key written twice: the last value wins
    return float(sum(widths) + (p or 0)), float(depth)


def _study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=4, seed=3))
    study.enqueue_trial({"op": "bsconv_s", "p": 0.25, "depth": 2})
    study.optimize(_objective, n_trials=12)
    return study


def _content(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.values, trial.params, trial.distributions, trial.user_attrs,
            trial.system_attrs)


def test_a_study_written_in_batches_equals_one_written_by_optuna(tmp_path):
    plain = _study(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}"))
    _study(BatchedRDBStorage(f"sqlite:///{tmp_path / 'batched.db'}"))
    reread = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'batched.db'}")  # plain reader
    assert [_content(t) for t in reread.trials] == [_content(t) for t in plain.trials]
    assert any("p" in t.params for t in plain.trials) and any("p" not in t.params for t in plain.trials)


def test_writes_wait_for_a_read_or_commit_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=BatchedRDBStorage(url))
    other = optuna.storages.RDBStorage(url)  # another worker
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("status", "training")
    assert other.get_trial(trial._trial_id).params == {}  # not yet committed
    commit_trial(trial)
    seen = other.get_trial(trial._trial_id)
    assert seen.params == trial.params and seen.user_attrs == {"status": "training"}
    trial.set_user_attr("status", "trained")
    assert study.trials[0].user_attrs == {"status": "trained"}  # this process reads its own writes


def test_an_incompatible_distribution_is_still_refused(tmp_path):
    study = optuna.create_study(storage=BatchedRDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=1)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        study.optimize(lambda t: t.suggest_categorical("x", ["a", "b"]) and 0.0, n_trials=1)


def test_the_storage_pickles_with_its_pending_writes_committed(tmp_path):
    storage = BatchedRDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.set_user_attr("a", 1)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.get_trial(trial._trial_id).user_attrs == {"a": 1}


def test_open_storage_rejects_a_bad_url_in_one_sentence():
    with pytest.raises(BsnasError, match="cannot open this Optuna storage"):
        open_storage("nosuchdb://x")
