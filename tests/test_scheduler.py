"""The scheduler of search work: a job whose worker died after taking it and before its first heartbeat is
recovered (by a re-run and by a live worker), every wait is bounded, ownership is one rule."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_search import SYNTHETIC, FakeTrainer, _config

from bsnas.arch.cost import cost
from bsnas.arch.spec import spec_hash, spec_to_dict
from bsnas.arch.zoo import get_spec
from bsnas.search.rungs import open_rung_study
from bsnas.search.slots import count_trials
from bsnas.search.storage import open_storage
from bsnas.search.study import create_study
from bsnas.search.workers import run_search

ZOO = ("cifar_mobilenetv3_small_w7d20", "cifar_mobilenetv3_small_w7d20_pfd")  # the two cheapest of the warm start


def _within(seconds: float, function, *args, **kwargs):
    """`function(*args, **kwargs)` in a thread; its result, or an AssertionError when it has not returned in time
    (a hang must fail the test, not stop the suite)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f"{getattr(function, '__name__', function)} still waits after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _ticket_attrs(name: str) -> dict:
    spec = get_spec(name, 10, *SYNTHETIC[:2])
    flops, params = cost(spec)
    return {"spec": json.dumps(spec_to_dict(spec)), "spec_hash": spec_hash(spec), "flops": flops, "params": params,
            "cost": flops / 1e6, "trial": 99}


def _take_without_beating(study: optuna.Study, attrs: dict) -> optuna.trial.FrozenTrial:
    """What a worker killed between taking a queued job and its first heartbeat leaves: RUNNING, never beaten."""
    study.enqueue_trial({}, user_attrs=attrs)
    trial = study.ask()
    assert trial.user_attrs["spec_hash"] == attrs["spec_hash"]
    return study.trials[trial.number]


def _search_config(tmp_path, **changes):
    return _config(tmp_path, budget="2MFLOPs", trials=3, heartbeat_s=1, warm_start=True,
                   zoo_pattern="v3_small_w7d20(_pfd)?$", **changes)


def test_a_rung_ticket_taken_and_never_beaten_is_recovered_by_a_re_run(tmp_path, space):
    config = _search_config(tmp_path)
    study = create_study(config, space.for_data(*SYNTHETIC))
    trainings = open_rung_study(open_storage(config.storage_url), config.name, 0)
    stuck = _take_without_beating(trainings, _ticket_attrs(ZOO[0]))
    trainer = FakeTrainer()
    result = _within(90, run_search, config, space, evaluate=trainer)
    assert result.ok and count_trials(result.study)["slots"] == 3
    assert trainings.trials[stuck.number].state == TrialState.FAIL
    hashes = [spec_hash(spec) for spec in trainer.specs]
    assert len(hashes) == len(set(hashes)) and stuck.user_attrs["spec_hash"] in hashes  # trained once, here
    assert study.study_name == result.study.study_name


def test_a_rung_ticket_left_without_a_heartbeat_during_a_search_is_recovered_by_a_live_worker(tmp_path, space):
    config = _search_config(tmp_path)
    injected = []

    class KillsOneWorker(FakeTrainer):
        """While the first zoo model trains, another worker takes the second one's training and dies at once."""

        def __call__(self, spec, rung=0):
            if not injected:
                trainings = open_rung_study(open_storage(config.storage_url), config.name, 0)
                injected.append(_take_without_beating(trainings, _ticket_attrs(ZOO[1])))
            return super().__call__(spec, rung)

    trainer = KillsOneWorker()
    start = time.perf_counter()
    result = _within(90, run_search, config, space, evaluate=trainer)
    assert result.ok and count_trials(result.study)["slots"] == 3
    assert time.perf_counter() - start < 60
    trainings = open_rung_study(open_storage(config.storage_url), config.name, 0)
    assert trainings.trials[injected[0].number].state == TrialState.FAIL
    hashes = [spec_hash(spec) for spec in trainer.specs]
    assert len(hashes) == len(set(hashes)) and injected[0].user_attrs["spec_hash"] in hashes


def test_a_calibration_ticket_taken_and_never_beaten_is_recovered(tmp_path, space):
    from bsnas.search import calibrate
    from bsnas.search.evaluator import ProxyEvaluator

    proxy = ProxyEvaluator(dataset="synthetic", images=64)
    specs = tuple(dataclasses.replace(get_spec(name, 10, *SYNTHETIC[:2]), name=name) for name in ZOO)
    setup = calibrate.Calibration("c", f"sqlite:///{tmp_path / 'c.db'}", 1, calibrate.CalibrationEvaluator(proxy, 1),
                                  specs, workers=1, threads=1, heartbeat_s=1)
    calibrate.prepare(setup)
    studies = setup.studies(open_storage(setup.storage_url))
    stuck = studies[0].ask()  # a worker took the first queued rung-0 training and was killed before beating
    failed = _within(120, calibrate.run, setup)
    assert failed == 0
    assert studies[0].trials[stuck.number].state == TrialState.FAIL
    assert len(calibrate.collect(setup)) == len(specs)
    for study in studies:  # each candidate trained once per study
        trained = [t.user_attrs["spec_hash"] for t in study.trials if t.state == TrialState.COMPLETE]
        assert sorted(trained) == sorted({spec_hash(spec) for spec in specs})


def test_a_search_name_cannot_take_another_searchs_rung_study(tmp_path, space, capsys):
    """`--name col.rung0` and then `--name col` on one storage: the second took the first search's study as its
    rung 0, promoted its trials and crashed (KeyError: 'cost')."""
    from bsnas.cli import main
    from bsnas.errors import BsnasError

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = ["search", "--budget", "2MFLOPs", "--trials", "2", "--dataset", "synthetic", "--storage", url,
            "--runs-dir", str(tmp_path), "--quiet", "--no-warm-start", "--rungs", "2"]
    assert main([*argv, "--name", "col.rung0"]) == 2
    assert capsys.readouterr().err.strip().endswith("are the studies of a search's rungs; give another --name.")
    made_before = optuna.create_study(study_name="col.rung0", storage=url)  # e.g. by an earlier version of bsnas
    made_before.set_user_attr("settings", {})
    with pytest.raises(BsnasError, match="study 'col.rung0' belongs to another search; give this search another"):
        run_search(_config(tmp_path, name="col", storage=url, rungs=2), space, evaluate=FakeTrainer())
