"""The live view of a search: trainings in progress at every rung, and a time left from the rung ladder's work."""

from __future__ import annotations

import types

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from bsnas.report import live
from bsnas.report.live import SearchProgress, ladder_seconds_left, running_trainings
from bsnas.search.front import SearchRecord
from bsnas.search.rungs import open_rung_study


def test_the_ladder_left_holds_the_promotions_still_to_come():
    # 27 candidates at eta 3: 9 reach rung 1, 3 rung 2, 1 rung 3; each rung costs 3x the one below
    assert ladder_seconds_left(27, 3, [27, 9, 3, 1], [2.0, 6.0, 18.0, 54.0]) == 0.0
    assert ladder_seconds_left(27, 3, [10, 2, 0, 0], [2.0, 6.0, None, None]) == 17 * 2 + 7 * 6 + 3 * 18 + 1 * 54
    assert ladder_seconds_left(27, 3, [0, 0], [None, None]) is None  # no pace yet


@pytest.fixture()
def record(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("config", {"eta": 3, "objective": "flops"})
    return SearchRecord(study, [open_rung_study(storage, "s", rung) for rung in range(2)])


def _finish_slot(record: SearchRecord, slot: int, seconds: float) -> None:
    attrs = {"slot": slot, "status": "trained", "spec_hash": f"h{slot}", "trial": slot}
    record.study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.5, 1.0 + slot], user_attrs=attrs))
    record.rungs[0].add_trial(create_trial(state=TrialState.COMPLETE, values=[0.5, 1.0 + slot],
                                           user_attrs={**attrs, "train_seconds": seconds}))


def test_a_promotion_in_training_is_running_work_and_the_time_left_is_the_ladders(record, capsys, monkeypatch):
    """Issue 25: `running 0` while both workers trained promotions; 4-5 minutes left for over 6 minutes."""
    clock = [100.0]
    monkeypatch.setattr(live, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    for slot in range(3):
        _finish_slot(record, slot, seconds=2.0)
    promotion = record.rungs[1].ask()
    promotion.set_user_attr("status", "training")
    record.rungs[1].ask().set_user_attr("status", "surplus")  # a ticket pruned at once: not a training
    assert running_trainings(record) == [0, 1]

    progress = SearchProgress(record, total=9, timeout=None)
    progress()
    _finish_slot(record, 3, seconds=2.0)  # 2 s of training in 10 s of this search: 5 s per second of training
    clock[0] += 10.0
    progress()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "trial 4/9  training 1 (per rung 0/1)" in line
    # 9 candidates in all at rung 0 (5 to go, 2 s each) and 3 at rung 1 (3 to go, 6 s each): 28 s x 5
    assert line.endswith("2m20s left")


def test_the_timeout_bounds_the_time_left(record, capsys):
    _finish_slot(record, 0, seconds=2.0)
    progress = SearchProgress(record, total=None, timeout=60.0)
    progress()
    assert capsys.readouterr().err.strip().endswith(("1m00s left", "0m59s left"))
