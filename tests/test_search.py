"""The search library on synthetic shapes with an injected trainer: budgets, de-duplication, warm start, resume."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import optuna
import pytest

from bsnas.arch.cost import cost
from bsnas.arch.files import load_spec
from bsnas.arch.spec import spec_hash, spec_to_dict
from bsnas.arch.zoo import get_spec
from bsnas.errors import BsnasError
from bsnas.report.trials import export_front, write_trials_csv
from bsnas.search.budget import parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.evaluator import Evaluation
from bsnas.search.front import knee_index, pick, trial_number, trial_spec
from bsnas.search.objective import make_objective
from bsnas.search.rungs import open_rung_study, ticket_queue
from bsnas.search.scheduler import JobQueue
from bsnas.search.slots import count_trials
from bsnas.search.storage import open_storage
from bsnas.search.study import create_study, load_record
from bsnas.search.warm_start import zoo_slots
from bsnas.search.workers import run_search
from bsnas.space.invert import params_of

SYNTHETIC = (3, 16, 10)  # make_synthetic's default data: channels, image size, classes


class FakeTrainer:
    """Records every architecture it is asked to train; accuracy grows with the parameter count."""

    def __init__(self):
        self.specs = []

    def __call__(self, spec, rung=0):
        self.specs.append(spec)
        flops, params = cost(spec)
        return Evaluation(accuracy=min(0.99, 0.5 + params / 2e6), seconds=0.0)


def _config(tmp_path, budget="3MFLOPs", **changes):
    values = dict(name="t", space_file="search_spaces/mobilenet.yaml", budgets=(parse_budget(budget),), trials=6,
                  runs_dir=str(tmp_path), dataset="synthetic", warm_start=False, threads=1, sampler="random", rungs=1,
                  workers=1)
    values.update(changes)
    return SearchConfig(**values)


def test_infeasible_candidates_are_never_trained(tmp_path, space):
    trainer = FakeTrainer()
    config = _config(tmp_path, budget="300kFLOPs", trials=12, sampler="random")
    result = run_search(config, space, evaluate=trainer)
    trials = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    infeasible = [t for t in trials if t.user_attrs["status"] == "infeasible"]
    trained = [t for t in trials if t.user_attrs["status"] == "trained"]
    assert len(trials) == 12 and infeasible, "the tiny budget must reject some candidates"
    assert len(trainer.specs) == len(trained)
    trained_hashes = {spec_hash(spec) for spec in trainer.specs}
    for trial in infeasible:
        assert trial.user_attrs["spec_hash"] not in trained_hashes
        assert trial.user_attrs["flops"] > 300e3 and "flops" in trial.user_attrs["reason"]
        assert trial.constraints["flops"] > 0 and trial.values[0] == 0.0
    for spec in trainer.specs:
        assert cost(spec).flops <= 300e3

    assert all(t.constraints["flops"] <= 0 for t in trained)
    front = load_record("t", config.storage_url).front()
    assert all(t.user_attrs["spec_hash"] not in {i.user_attrs["spec_hash"] for i in infeasible} for t in front)


def test_candidates_are_shrunk_into_the_budget(tmp_path, space):
    local = space.for_data(*SYNTHETIC)
    study = create_study(_config(tmp_path, budget="8MFLOPs"), local)
    objective = make_objective(local, (parse_budget("8MFLOPs"),), "flops", FakeTrainer(),
                               _trainings(_config(tmp_path, budget="8MFLOPs")))
    params = params_of(local, get_spec("cifar_mobilenetv2_w1", 10, 3, 16))  # 23 MFLOPs at 3x16x16
    assert params["width_multiplier"] == 1.0
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    trial = study.trials[-1]
    assert trial.user_attrs["status"] == "trained"
    assert trial.user_attrs["width_fit"] == 0.5 and trial.user_attrs["flops"] <= 8e6  # w1d2: 6.8 MFLOPs
    assert spec_hash(trial_spec(trial)) == spec_hash(get_spec("cifar_mobilenetv2_w1d2", 10, 3, 16))


def test_duplicates_are_not_trained_twice(tmp_path, space):
    trainer = FakeTrainer()
    local = space.for_data(*SYNTHETIC)
    study = create_study(_config(tmp_path, budget="50MFLOPs"), local)
    trainings = _trainings(_config(tmp_path, budget="50MFLOPs"))
    params = params_of(local, get_spec("cifar_mobilenetv3_small_w7d20", 10, 3, 16))
    for _ in range(3):
        study.enqueue_trial(params)
    study.optimize(make_objective(local, (parse_budget("50MFLOPs"),), "flops", trainer, trainings), n_trials=3)
    statuses = [t.user_attrs["status"] for t in study.trials]
    assert statuses == ["trained", "duplicate", "duplicate"]
    assert len(trainer.specs) == 1
    assert study.trials[2].values == study.trials[0].values
    assert study.trials[1].user_attrs["duplicate_of"] == 0
    assert len(trainings.study.trials) == 1  # one architecture, trained once


def test_warm_start_enqueues_fitting_zoo_models_first(tmp_path, space):
    trainer = FakeTrainer()
    config = _config(tmp_path, budget="1MFLOPs", trials=3, warm_start=True, zoo_pattern=r"v3_small_w(7d20|1d2)")
    result = run_search(config, space, evaluate=trainer)
    assert result.enqueued and all(("w7d20" in n or "w1d2" in n) for n in result.enqueued)
    local = space.for_data(*SYNTHETIC)
    for name in result.enqueued:
        assert cost(get_spec(name, 10, 3, 16)).flops <= 1e6
        assert params_of(local, get_spec(name, 10, 3, 16)) is not None
    first = result.study.trials[0]
    assert first.user_attrs["zoo"] == result.enqueued[0] and trial_spec(first).name == result.enqueued[0]
    assert [name for name, _ in zoo_slots(local, config.budgets, config.zoo_pattern)] == result.enqueued
    again = run_search(config, space, evaluate=trainer)  # resuming queues nothing new: every slot is done
    assert len(again.study.trials) == len(result.study.trials) and again.ok


def test_resume_continues_up_to_the_trial_count(tmp_path, space):
    trainer = FakeTrainer()
    run_search(_config(tmp_path, budget="3MFLOPs", trials=3), space, evaluate=trainer)
    first = len(trainer.specs)
    result = run_search(_config(tmp_path, budget="3MFLOPs", trials=5), space, evaluate=trainer)
    counts = count_trials(result.study)
    assert counts["complete"] == 5
    assert len(trainer.specs) - first <= 2
    again = run_search(_config(tmp_path, budget="3MFLOPs", trials=5), space, evaluate=trainer)
    assert count_trials(again.study)["complete"] == 5
    with pytest.raises(BsnasError, match=r"other settings \(--budget \[\['flops', 3000000.0\]\], now"):
        run_search(_config(tmp_path, budget="4MFLOPs", trials=6), space, evaluate=trainer)


@pytest.mark.parametrize("second_budget", ["3MFLOPs", "4MFLOPs"])
def test_searches_that_start_together_see_a_whole_study_or_make_it(tmp_path, space, monkeypatch, second_budget):
    """A search that opens the study while another is still writing its settings (three searches started at once
    on one PostgreSQL study) takes it when its settings are the same (it refused it as made with other
    settings), and whichever of two with other settings does not match what the study holds in the end is
    refused."""
    local = space.for_data(*SYNTHETIC)
    first, second = _config(tmp_path), _config(tmp_path, budget=second_budget)
    write = optuna.Study.set_user_attr
    outcome = {}

    def create(name, config):
        try:
            create_study(config, local)
            outcome[name] = "took it"
        except BsnasError as error:
            outcome[name] = str(error)

    def first_write_then_the_second_search(study, key, value):
        write(study, key, value)
        if not threads:  # the second search opens the study now, halfway through its making, and waits there
            threads.append(threading.Thread(target=create, args=("second", second)))
            threads[0].start()
            threads[0].join(timeout=1.0)

    threads = []
    monkeypatch.setattr(optuna.Study, "set_user_attr", first_write_then_the_second_search)
    create("first", first)
    threads[0].join(timeout=60)
    monkeypatch.undo()
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}")
    held = study.user_attrs["settings"]
    assert study.user_attrs["space"] == local.raw
    for name, config in [("first", first), ("second", second)]:
        same = config.study_settings() == held
        assert (outcome[name] == "took it") == same, (name, outcome)
    if second_budget == "3MFLOPs":
        assert outcome == {"first": "took it", "second": "took it"}


def test_a_study_not_made_by_bsnas_search_is_not_taken_over(tmp_path, space, monkeypatch):
    monkeypatch.setattr("bsnas.search.study.SETTINGS_WAIT_S", 0.3)
    (tmp_path / "t").mkdir()
    url = f"sqlite:///{tmp_path / 't' / 'study.db'}"
    optuna.create_study(study_name="t", storage=url)
    with pytest.raises(BsnasError, match="study 't' in .* holds no bsnas search settings .* give another --name"):
        create_study(_config(tmp_path), space.for_data(*SYNTHETIC))
    assert optuna.load_study(study_name="t", storage=url).user_attrs == {}


def test_space_that_cannot_meet_the_budget_says_so_early(tmp_path, space):
    trainer = FakeTrainer()
    with pytest.raises(BsnasError, match="cheapest point of the space has .* over the budget 1 kFLOPs"):
        run_search(_config(tmp_path, budget="1kFLOPs"), space, evaluate=trainer)
    assert trainer.specs == []


def test_front_export_picks_and_csv(tmp_path, space):
    result = run_search(_config(tmp_path, budget="3MFLOPs", trials=8), space, evaluate=FakeTrainer())
    study = result.study
    import torch

    scored = [t for t in study.trials if t.user_attrs.get("status") in ("trained", "duplicate")]
    assert scored and {(t.user_attrs["seed"], t.user_attrs["threads"], t.user_attrs["torch"]) for t in scored} == {
        (0, 1, torch.__version__)}  # what a trial's score depends on is recorded
    record = load_record("t", result.study.user_attrs["config"]["storage"] or f"sqlite:///{tmp_path / 't/study.db'}")
    front = record.front()
    assert front
    paths = export_front(record, tmp_path / "pareto")
    assert len(paths) == len(front)
    for path, trial in zip(paths, front, strict=True):
        assert spec_hash(load_spec(path)) == trial.user_attrs["spec_hash"]
    best = pick(record, "max-acc")
    assert best.values[0] == max(t.values[0] for t in front)
    assert pick(record, "min-cost").values[1] == min(t.values[1] for t in front)
    assert pick(record, "knee") in front
    assert trial_number(pick(record, f"trial:{trial_number(front[0])}")) == trial_number(front[0])
    with pytest.raises(BsnasError, match="no trial 999"):
        pick(record, "trial:999")
    with pytest.raises(BsnasError, match="is not one of"):
        pick(record, "best")
    lines = write_trials_csv(record, tmp_path / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 + 8 and lines[0].startswith("number,state,status")


def test_knee_is_the_bend():
    points = [(1.0, 0.50), (2.0, 0.80), (4.0, 0.84), (8.0, 0.85)]
    assert knee_index(points) == 1


def test_two_worker_processes_share_one_study(tmp_path, space):
    config = _config(tmp_path, budget="2MFLOPs", trials=4, workers=2, proxy_images=64, proxy_epochs=1)
    result = run_search(config, space)
    counts = count_trials(result.study)
    assert result.failed_workers == 0 and result.ok
    assert counts["complete"] == counts["slots"] == 4 and counts["running"] == counts["waiting"] == 0
    trained = [t.user_attrs["spec_hash"] for t in _trainings(config).study.trials
               if t.user_attrs.get("status") == "trained"]
    assert trained and len(trained) == len(set(trained))  # one study, two processes: nothing trained twice


def _queue(config, key: str | None = "slot") -> JobQueue:
    """The search's study of `config` as the scheduler's queue."""
    storage = open_storage(config.storage_url, config.heartbeat_s)
    return JobQueue(optuna.load_study(study_name=config.name, storage=storage), storage, key)


def _trainings(config) -> JobQueue:
    """The queue of the rung-0 trainings beside the search of `config`."""
    storage = open_storage(config.storage_url, config.heartbeat_s)
    return ticket_queue(open_rung_study(storage, config.name, 0), storage)


def _dead_trial(queue: JobQueue, space=None):
    """A job some worker took, beat once for (and sampled its architecture with, given `space`) and died with."""
    trial = queue.study.ask()
    if space is not None:
        space.sample(trial)
    storage = queue.storage
    study_id = storage.get_study_id_from_name(queue.study.study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    return trial


def test_a_dead_workers_trial_is_failed_and_retried(tmp_path, space):
    config = _config(tmp_path, budget="3MFLOPs", trials=2, heartbeat_s=1)
    run_search(_config(tmp_path, budget="3MFLOPs", trials=1, heartbeat_s=1), space, evaluate=FakeTrainer())
    create_study(config, space.for_data(*SYNTHETIC))
    params = params_of(space.for_data(*SYNTHETIC), get_spec("cifar_mobilenetv3_small_w7d20", 10, 3, 16))
    search = _queue(config)
    search.put({"slot": 1}, params)
    dead = _dead_trial(search, space.for_data(*SYNTHETIC))  # takes the queued slot 1, samples it, dies
    assert dead.user_attrs["slot"] == 1
    trainer = FakeTrainer()
    result = run_search(config, space, evaluate=trainer)
    states = {t.number: t.state for t in result.study.trials}
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    assert result.ok and count_trials(result.study)["slots"] == 2
    retried = [t for t in result.study.trials if t.user_attrs.get("retry_of") == dead.number]
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE and retried[0].params == params


def test_a_run_killed_with_trials_running_resumes_to_its_target(tmp_path, space):
    """Issue 11: the stop check counted RUNNING trials of dead workers, so a re-run exited at once, short."""
    config = _config(tmp_path, budget="3MFLOPs", trials=4, heartbeat_s=1)
    run_search(dataclasses.replace(config, trials=2), space, evaluate=FakeTrainer())
    study = create_study(config, space.for_data(*SYNTHETIC))
    search = _queue(config)
    for slot in (2, 3):
        search.put({"slot": slot})
        _dead_trial(search)
    before = {t.number: t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    start = time.perf_counter()
    result = run_search(config, space, evaluate=FakeTrainer())
    assert result.ok and count_trials(result.study)["slots"] == 4 and time.perf_counter() - start < 60
    assert {t.number: t.values for t in result.study.trials if t.number in before} == before  # not trained again


def test_a_trial_waiting_for_a_dead_twin_trains_it_itself(tmp_path, space):
    """Issue 11: the wait for a twin in training had no bound; a dead twin's worker stops beating."""
    local = space.for_data(*SYNTHETIC)
    config = _config(tmp_path, budget="50MFLOPs", heartbeat_s=1)
    study = create_study(config, local)
    trainings = _trainings(config)
    spec = get_spec("cifar_mobilenetv3_small_w7d20", 10, 3, 16)
    trainings.put({"spec": json.dumps(spec_to_dict(spec)), "cost": 1.0, "trial": 99,
                   "spec_hash": spec_hash(dataclasses.replace(spec, name="x"))})
    twin = _dead_trial(trainings)  # another worker took the training of this architecture and died
    study.enqueue_trial(params_of(local, spec))  # the next trial: the same architecture
    trainer = FakeTrainer()
    start = time.perf_counter()
    study.optimize(make_objective(local, config.budgets, "flops", trainer, trainings, poll_s=0.2), n_trials=1)
    assert time.perf_counter() - start < 30 and len(trainer.specs) == 1
    assert trainings.study.trials[twin.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[-1].user_attrs["status"] == "trained"  # the waiter queued the training again and took it


class FailingTrainer(FakeTrainer):
    """Diverges on the first architecture it sees."""

    def __call__(self, spec, rung=0):
        if not self.specs:
            self.specs.append(spec)
            return Evaluation(0.0, 1.0, "diverged", "the training loss became NaN or inf in epoch 1")
        return super().__call__(spec)


def test_a_diverging_candidate_fails_with_its_reason_and_the_search_goes_on(tmp_path, space):
    result = run_search(_config(tmp_path, budget="3MFLOPs", trials=3), space, evaluate=FailingTrainer())
    failed = [t for t in result.study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["status"] == "diverged"
    assert "NaN" in failed[0].user_attrs["reason"]
    assert result.ok and count_trials(result.study)["slots"] == 3  # the slot was sampled again


def test_out_of_memory_is_a_failed_evaluation_with_its_reason(monkeypatch):
    import torch

    from bsnas.search import evaluator

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("bsnas.search.evaluator.train", out_of_memory)
    result = evaluator.ProxyEvaluator(dataset="synthetic")(get_spec("cifar_mobilenetv3_small_w7d20", 10, 3, 16))
    assert result.status == "out_of_memory" and "Tried to allocate 20.00 GiB" in result.reason


def test_a_proxy_score_depends_on_the_spec_and_seed_only(tmp_path):
    """Issue 11: weights were drawn before the trainer seeded, so one spec scored 0.68, 0.98, 0.98 in a process."""
    import torch

    from bsnas.search.evaluator import ProxyEvaluator

    spec = get_spec("cifar_mobilenetv3_small_w7d20", 10, 3, 16)
    evaluate = ProxyEvaluator(dataset="synthetic", images=128, seed=3)
    scores = []
    for noise in range(3):
        torch.manual_seed(noise)  # whatever the global random state before
        torch.rand(noise + 1)
        scores.append(evaluate(spec).accuracy)
    assert scores[0] == scores[1] == scores[2]


def test_latency_budget_and_objective(tmp_path, space):
    trainer = FakeTrainer()
    budgets = (parse_budget("3MFLOPs"), parse_budget("10000ms"))  # every candidate that fits 3 MFLOPs fits 10 s
    config = _config(tmp_path, trials=3, objective="latency", budgets=budgets)
    result = run_search(config, space, evaluate=trainer)
    for trial in result.study.trials:
        if trial.user_attrs["status"] == "infeasible":
            assert trial.user_attrs["latency_ms"] is None  # over the FLOPs budget: latency is never measured
            continue
        assert 0 < trial.user_attrs["latency_ms"] < 10000
        assert trial.values[1] == pytest.approx(trial.user_attrs["latency_ms"])
        assert set(trial.constraints) == {"flops", "latency"} and trial.constraints["latency"] < 0
    tight = _config(tmp_path, name="tight", trials=2, objective="flops",
                    budgets=(parse_budget("3MFLOPs"), parse_budget("1us")))
    result = run_search(tight, space, evaluate=trainer)
    assert {t.user_attrs["status"] for t in result.study.trials} == {"infeasible"}
    assert any("latency" in t.user_attrs["reason"] for t in result.study.trials)
